//! The operator's client subcommands (`spool enqueue`, `spool queues`, `spool job`, `spool dead …`, `spool pause`,
//! `spool resume`, `spool schedules`, `spool schedule …`, `spool healthcheck`), built on `spool-client` over gRPC. Each prints a human-readable table by
//! default and JSON with `--json`, for scripts. They hold no business logic: one client call each.

mod output;

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use spool_client::{proto, Client, DeadTarget, DEFAULT_SERVER};

/// Where the broker is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The broker's gRPC address.
    #[arg(long, env = "SPOOL_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The shared token (`[auth] token` of the broker).
    #[arg(long, env = "SPOOL_TOKEN", hide_env_values = true, default_value = "")]
    token: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Enqueue a job.
    Enqueue {
        /// The queue.
        queue: String,
        /// The payload; `-` reads it from standard input.
        payload: String,
        /// Priority, 0 (default) to 9 (reserved first).
        #[arg(long)]
        priority: Option<u32>,
        /// Run no earlier than this from now, e.g. `30s`, `5m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// Drop the job if not reserved within this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Reservations before the job is dead-lettered.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Lease length per reservation, e.g. `2m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        lease: Option<Duration>,
        /// Dedup key: while a live job holds it, the holder's id is returned instead.
        #[arg(long)]
        unique_key: Option<String>,
        /// A header `KEY=VALUE` (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Show every queue with its counts.
    Queues {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one job, with its payload.
    Job {
        /// The job id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Pause a queue: reservations stop, enqueues still land.
    Pause {
        /// The queue.
        queue: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// The dead-letter queue: list, replay or purge.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Show every schedule with its trigger and next run.
    Schedules {
        #[command(flatten)]
        conn: Connection,
    },
    /// Periodic jobs: show, create, delete, enable, disable or trigger one.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Check a broker's health over gRPC (grpc.health.v1); exits 0 when SERVING. For container health checks.
    Healthcheck {
        /// The service to ask about; empty (default) asks about the whole server.
        #[arg(long, default_value = "")]
        service: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `spool dead …`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs, oldest death first.
    List {
        /// Only this queue's.
        #[arg(long)]
        queue: Option<String>,
        /// Start after this job id (the last id of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        conn: Connection,
    },
    /// Put dead jobs back in their queues with fresh attempts.
    Replay {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete dead jobs.
    Purge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `spool schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Show one schedule: definition, next run and recent firings with their jobs.
    Show {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a schedule (see docs/scheduling.md).
    Create(Box<CreateSchedule>),
    /// Replace a schedule's whole definition: the same flags as create, and every one left out takes its default
    /// (a changed trigger counts ticks from now). Schedules from the config file are read-only.
    Update(Box<CreateSchedule>),
    /// Delete a schedule (jobs it already enqueued stay).
    Delete {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Let a schedule fire again.
    Enable {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Stop a schedule firing.
    Disable {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Enqueue a schedule's job now, once; prints the job id.
    Trigger {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `spool schedule create` and `update`: boxed in [`ScheduleCommand`], whose other variants are just a name.
#[derive(Debug, Args)]
pub struct CreateSchedule {
    /// The schedule's name (new, for create): letters, digits and _ - . :
    name: String,
    /// The queue each run enqueues to.
    #[arg(long)]
    queue: String,
    /// The job's payload.
    #[arg(long, default_value = "")]
    payload: String,
    #[command(flatten)]
    when: When,
    /// IANA time zone of --cron, e.g. `Europe/Paris` (default UTC).
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// Missed runs after downtime: skip (default; `one` for --at), one, all.
    #[arg(long, value_enum)]
    catch_up: Option<CatchUpArg>,
    /// With `--catch-up all`: the most missed runs fired after one outage (default 100).
    #[arg(long)]
    catch_up_limit: Option<u32>,
    /// A run while the previous run's job is unfinished: allow (default) or skip.
    #[arg(long, value_enum)]
    overlap: Option<OverlapArg>,
    /// Job priority, 0 (default) to 9.
    #[arg(long)]
    priority: Option<u32>,
    /// Drop a run's job if not reserved within this long of its tick, e.g. `1h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Each job becomes ready a random 0..jitter after its tick, e.g. `5s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<Duration>,
    /// Reservations of a run's job before it is dead-lettered (default: the queue's).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Lease of each reservation of a run's job, e.g. `2m` (default: the queue's).
    #[arg(long, value_parser = humantime::parse_duration)]
    lease: Option<Duration>,
    /// No run before this time: RFC 3339 or ms since the epoch (also where --every counts from).
    #[arg(long, value_parser = parse_time)]
    start: Option<u64>,
    /// No run after this time: RFC 3339 or ms since the epoch.
    #[arg(long, value_parser = parse_time)]
    end: Option<u64>,
    /// A header `KEY=VALUE` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    #[command(flatten)]
    conn: Connection,
}

/// When a schedule fires: exactly one of a cron expression, an interval or a one-off time.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct When {
    /// A cron expression, e.g. `"30 2 * * *"` (5 fields, or 6 with seconds first).
    #[arg(long)]
    cron: Option<String>,
    /// A fixed interval, e.g. `30s`, `1h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// A one-off run: RFC 3339 (`2026-12-31T23:59:00Z`) or ms since the epoch.
    #[arg(long, value_parser = parse_time)]
    at: Option<u64>,
}

/// `--catch-up`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CatchUpArg {
    /// Drop missed runs more than a minute late.
    Skip,
    /// Run once for the latest missed run.
    One,
    /// Run every missed run, up to --catch-up-limit.
    All,
}

/// `--overlap`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverlapArg {
    /// Enqueue every run.
    Allow,
    /// Skip a run while the previous run's job is unfinished.
    Skip,
}

impl When {
    fn trigger(self, tz: Option<String>) -> proto::schedule_def::Trigger {
        use proto::schedule_def::Trigger;
        match (self.cron, self.every, self.at) {
            (Some(expr), _, _) => Trigger::Cron(proto::CronTrigger {
                expr,
                timezone: tz.unwrap_or_default(),
            }),
            (None, Some(every), _) => Trigger::EveryMs(ms(every)),
            // clap's group makes exactly one of the three present.
            (None, None, at) => Trigger::AtMs(at.unwrap_or_default()),
        }
    }
}

/// `--at`: ms since the epoch, or an RFC 3339 time.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is neither ms since the epoch nor an RFC 3339 time: {e}"))?;
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(ms(since))
}

/// Which dead jobs: one id, a queue's, or all.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// One dead job, by id.
    id: Option<String>,
    /// Every dead job of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Every dead job.
    #[arg(long)]
    all: bool,
}

impl From<Target> for DeadTarget {
    fn from(t: Target) -> Self {
        match (t.id, t.queue) {
            (Some(id), _) => DeadTarget::Job(id),
            (None, Some(queue)) => DeadTarget::Queue(queue),
            (None, None) => DeadTarget::All,
        }
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs a client subcommand; errors go to stderr with a non-zero exit.
pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let unauthenticated = matches!(
                e.downcast_ref::<spool_client::ClientError>(),
                Some(spool_client::ClientError::Rpc {
                    status: spool_client::Code::Unauthenticated,
                    ..
                })
            );
            if unauthenticated {
                eprintln!("hint: give the broker's [auth] token with --token or SPOOL_TOKEN");
            }
            ExitCode::FAILURE
        }
    }
}

async fn connect(conn: &Connection) -> anyhow::Result<Client> {
    Ok(Client::connect(conn.server.clone()).await?.with_token(&conn.token)?)
}

async fn execute(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Enqueue {
            queue,
            payload,
            priority,
            delay,
            ttl,
            max_attempts,
            lease,
            unique_key,
            headers,
            conn,
        } => {
            let payload = if payload == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the payload from stdin")?;
                buf
            } else {
                payload.into_bytes()
            };
            let mut job = spool_client::new_job(queue, payload);
            job.options = Some(proto::JobOptions {
                priority,
                delay_ms: delay.map(ms),
                ttl_ms: ttl.map(ms),
                max_attempts,
                lease_ms: lease.map(ms),
                unique_key,
                headers: headers.into_iter().collect::<HashMap<_, _>>(),
                ..Default::default()
            });
            let out = connect(&conn).await?.enqueue(job).await?;
            output::enqueued(&out, conn.json);
        }
        ClientCommand::Queues { conn } => {
            let queues = connect(&conn).await?.list_queues().await?;
            output::queues(&queues, conn.json);
        }
        ClientCommand::Job { id, conn } => {
            let job = connect(&conn).await?.get_job(&id).await?;
            output::job(&job, conn.json);
        }
        ClientCommand::Pause { queue, conn } => {
            let changed = connect(&conn).await?.pause(&queue).await?;
            output::changed("queue", "paused", &queue, changed, conn.json);
        }
        ClientCommand::Resume { queue, conn } => {
            let changed = connect(&conn).await?.resume(&queue).await?;
            output::changed("queue", "resumed", &queue, changed, conn.json);
        }
        ClientCommand::Dead { command } => match command {
            DeadCommand::List {
                queue,
                after,
                limit,
                conn,
            } => {
                let jobs = connect(&conn)
                    .await?
                    .list_dead(queue.as_deref(), after.as_deref(), limit)
                    .await?;
                output::dead(&jobs, conn.json);
            }
            DeadCommand::Replay { target, conn } => {
                let n = connect(&conn).await?.replay_dead(target.into()).await?;
                output::count("replayed", n, conn.json);
            }
            DeadCommand::Purge { target, conn } => {
                let n = connect(&conn).await?.purge_dead(target.into()).await?;
                output::count("purged", n, conn.json);
            }
        },
        ClientCommand::Schedules { conn } => {
            let schedules = connect(&conn).await?.list_schedules().await?;
            output::schedules(&schedules, conn.json);
        }
        ClientCommand::Schedule { command } => return schedule(command).await,
        ClientCommand::Healthcheck { service, conn } => {
            let serving = connect(&conn).await?.is_serving(&service).await?;
            output::health(serving, conn.json);
            return Ok(if serving { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn schedule(command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Show { name, conn } => {
            let schedule = connect(&conn).await?.get_schedule(&name).await?;
            output::schedule(&schedule, conn.json);
        }
        ScheduleCommand::Create(create) => {
            let (def, conn) = schedule_def(*create);
            let name = def.name.clone();
            connect(&conn).await?.create_schedule(def).await?;
            output::done("created", &name, conn.json);
        }
        ScheduleCommand::Update(update) => {
            let (def, conn) = schedule_def(*update);
            let name = def.name.clone();
            connect(&conn).await?.update_schedule(def).await?;
            output::done("updated", &name, conn.json);
        }
        ScheduleCommand::Delete { name, conn } => {
            connect(&conn).await?.delete_schedule(&name).await?;
            output::done("deleted", &name, conn.json);
        }
        ScheduleCommand::Enable { name, conn } => {
            let changed = connect(&conn).await?.enable_schedule(&name).await?;
            output::changed("schedule", "enabled", &name, changed, conn.json);
        }
        ScheduleCommand::Disable { name, conn } => {
            let changed = connect(&conn).await?.disable_schedule(&name).await?;
            output::changed("schedule", "disabled", &name, changed, conn.json);
        }
        ScheduleCommand::Trigger { name, conn } => {
            let id = connect(&conn).await?.trigger_schedule(&name).await?;
            output::triggered(&name, &id, conn.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The definition `spool schedule create` or `update` sends, and where to send it.
fn schedule_def(create: CreateSchedule) -> (proto::ScheduleDef, Connection) {
    let CreateSchedule {
        name,
        queue,
        payload,
        when,
        tz,
        catch_up,
        catch_up_limit,
        overlap,
        priority,
        ttl,
        jitter,
        max_attempts,
        lease,
        start,
        end,
        headers,
        disabled,
        conn,
    } = create;
    let def = proto::ScheduleDef {
        name,
        job: Some(proto::ScheduledJob {
            queue,
            payload: payload.into_bytes(),
            priority,
            ttl_ms: ttl.map(ms),
            max_attempts,
            lease_ms: lease.map(ms),
            headers: headers.into_iter().collect::<HashMap<_, _>>(),
        }),
        trigger: Some(when.trigger(tz)),
        catch_up: match catch_up {
            None => proto::CatchUp::Unspecified,
            Some(CatchUpArg::Skip) => proto::CatchUp::Skip,
            Some(CatchUpArg::One) => proto::CatchUp::One,
            Some(CatchUpArg::All) => proto::CatchUp::All,
        }
        .into(),
        catch_up_limit,
        overlap: match overlap {
            None => proto::Overlap::Unspecified,
            Some(OverlapArg::Allow) => proto::Overlap::Allow,
            Some(OverlapArg::Skip) => proto::Overlap::Skip,
        }
        .into(),
        jitter_ms: jitter.map_or(0, ms),
        start_at_ms: start,
        end_at_ms: end,
        enabled: Some(!disabled),
    };
    (def, conn)
}
