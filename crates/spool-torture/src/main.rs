//! `spool-torture`: a workload to kill -9, and a dump to check what survived.
//!
//! `spool-torture produce DIR` drives a [`Broker`] over a [`SledStore`] (durability `always`) in `DIR` until it is
//! killed: several tasks enqueue (single jobs and batches, some delayed, to two queues) while workers reserve jobs and
//! ack some, dead-letter some and leave the rest leased. Every outcome the broker *acknowledged* is printed on stdout,
//! one flushed line each, only after the call returned `Ok` — so a line on stdout is a promise the store must keep
//! after any crash:
//!
//! - `READY <n>`: the store was recovered with `n` jobs and the workload starts.
//! - `ENQ <id>`: the job is durable and must survive.
//! - `ACKING <id>` then `ACK <id>`: an ack was sent, then acknowledged; an acked job must never come back. Between
//!   the two lines the ack is in flight and the job may or may not survive.
//! - `NACKING <id>` then `DEAD <id>`: the same for a dead-letter nack; a `DEAD` job must survive as dead.
//! - `LEASE <id>`: the job was reserved and is deliberately never acked; after a crash it must be ready again.
//!
//! `spool-torture dump DIR` recovers the store the way the daemon does (a [`Broker`] over the [`SledStore`]) and
//! prints `JOB <id> <state>` for every stored job, with the state the recovered broker gives it, then `END <n>`. The
//! crash test (`tests/crash.rs`) compares the two.
//!
//! `spool-torture schedule DIR` runs the scheduler over the store with one schedule, `tick`, firing every second into
//! queue `sched` with `catch_up = all`, until it is killed; it prints `READY` once the ticks missed while it was down
//! have fired. `spool-torture schedule-dump DIR` prints `TICK <ms>` for every stored job a tick enqueued, then
//! `SINCE <ms>` (ticks after this one are owed) and `LAST <ms>` (the last tick recorded as fired). The schedule crash
//! test (`tests/schedule_crash.rs`) checks that every tick in between produced exactly one job.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spool_core::{
    CatchUp, JobId, JobOptions, QueueName, ScheduleDef, ScheduleOrigin, ScheduledJob, SystemClock, Trigger,
};
use spool_engine::{Broker, EngineConfig, NackAction, NewJob, ReserveRequest};
use spool_scheduler::Scheduler;
use spool_store::{SledConfig, SledStore, Store};

/// The queues the workload uses: most jobs go to the first, some to the second, so recovery rebuilds more than one.
const QUEUES: [&str; 2] = ["default", "torture-b"];
/// Concurrent enqueuing tasks: enough that group commit batches several callers per fsync.
const PRODUCERS: usize = 4;
/// Concurrent reserving tasks.
const WORKERS: usize = 2;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, dir] if mode == "produce" => produce(dir.into()),
        [mode, dir] if mode == "dump" => dump(dir.into()),
        [mode, dir] if mode == "schedule" => schedule(dir.into()),
        [mode, dir] if mode == "schedule-dump" => schedule_dump(dir.into()),
        _ => bail!("usage: spool-torture (produce | dump | schedule | schedule-dump) DIR"),
    }
}

/// Opens the store with the daemon's defaults (durability `always`), except for the write-ahead log's segment size
/// when `SPOOL_TORTURE_SEGMENT_BYTES` is set: the crash test makes it small so that kills land while segments are
/// being sealed and checkpointed into sled, not only while the log is appended to.
fn open_store(dir: PathBuf) -> Result<Arc<SledStore>> {
    let mut config = SledConfig::new(&dir);
    if let Ok(bytes) = std::env::var("SPOOL_TORTURE_SEGMENT_BYTES") {
        config.segment_bytes = bytes.parse().context("SPOOL_TORTURE_SEGMENT_BYTES")?;
    }
    let store = SledStore::open(config).with_context(|| format!("opening {}", dir.display()))?;
    Ok(Arc::new(store))
}

fn open_broker(store: Arc<SledStore>) -> Result<Broker> {
    Ok(Broker::open(store, Arc::new(SystemClock), EngineConfig::default())?)
}

/// Prints one protocol line and flushes it at once: the test kills us at an arbitrary moment, and a line still in a
/// buffer would be a promise the test never hears about.
fn emit(tag: &str, id: JobId) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{tag} {id}").and_then(|()| out.flush()).is_err() {
        // The reader is gone, so nobody is checking any more; stop quietly rather than panic on every task.
        std::process::exit(0);
    }
}

fn produce(dir: PathBuf) -> Result<()> {
    // One thread is plenty: the store's writer thread does the I/O, and group commit batches whatever the tasks
    // submit meanwhile.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let broker = open_broker(open_store(dir)?)?;
        println!("READY {}", broker.totals().0);
        // Delayed jobs become ready through the timer task, as in the daemon.
        let timers = broker.clone();
        tokio::spawn(async move { timers.run_timers().await });
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..PRODUCERS {
            tasks.spawn(producer(broker.clone()));
        }
        for _ in 0..WORKERS {
            tasks.spawn(worker(broker.clone()));
        }
        // The tasks loop until the process is killed; the first one to fail ends the run with its error.
        match tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(join.into()),
            None => Ok(()),
        }
    })
}

async fn producer(broker: Broker) -> Result<()> {
    let mut rng = StdRng::from_entropy();
    loop {
        let ids: Vec<JobId> = if rng.gen_bool(0.5) {
            vec![broker.enqueue(new_job(&mut rng)).await?.id]
        } else {
            let jobs = (0..rng.gen_range(2..=20)).map(|_| new_job(&mut rng)).collect();
            broker.enqueue_batch(jobs).await?.into_iter().map(|e| e.id).collect()
        };
        for id in ids {
            emit("ENQ", id);
        }
    }
}

fn new_job(rng: &mut StdRng) -> NewJob {
    let queue = if rng.gen_bool(0.8) { QUEUES[0] } else { QUEUES[1] };
    // Delays of up to a few seconds outlive most runs, so the store always holds scheduled jobs across a crash.
    let delay_ms = rng.gen_bool(0.15).then(|| rng.gen_range(100..3_000));
    let mut payload = vec![0u8; rng.gen_range(16..512)];
    rng.fill(&mut payload[..]);
    NewJob {
        queue: queue.to_string(),
        payload,
        options: JobOptions {
            delay_ms,
            ..JobOptions::default()
        },
        position: Default::default(),
    }
}

async fn worker(broker: Broker) -> Result<()> {
    let mut rng = StdRng::from_entropy();
    let queues: Vec<String> = QUEUES.iter().map(|q| q.to_string()).collect();
    loop {
        let request = ReserveRequest::new(queues.clone(), rng.gen_range(1..=64), Duration::from_millis(200));
        let mut acks = Vec::new();
        for job in broker.reserve(request).await? {
            let token = job.lease.context("a reserved job has a lease")?.token;
            match rng.gen_range(0..100) {
                0..=59 => acks.push((job.id, token)),
                60..=74 => {
                    emit("NACKING", job.id);
                    broker
                        .nack(job.id, token, NackAction::Dead, Some("torture".into()))
                        .await?;
                    emit("DEAD", job.id);
                }
                _ => emit("LEASE", job.id),
            }
        }
        for &(id, _) in &acks {
            emit("ACKING", id);
        }
        // Both ack paths: one commit per job, and one commit for many.
        if rng.gen_bool(0.5) {
            for &(id, token) in &acks {
                broker.ack(id, token).await?;
                emit("ACK", id);
            }
        } else {
            for (&(id, _), result) in acks.iter().zip(broker.ack_many(&acks).await?) {
                result?;
                emit("ACK", id);
            }
        }
    }
}

fn dump(dir: PathBuf) -> Result<()> {
    let store = open_store(dir)?;
    // The listing comes from the store itself (the broker has no "every job" call); the state comes from a broker
    // recovered over it, which is what a restarted daemon would serve: leases void, due delays promoted.
    let snapshot = store.load()?;
    let broker = open_broker(store)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for job in &snapshot.jobs {
        let state = broker.get(job.id)?.state;
        writeln!(out, "JOB {} {}", job.id, state.as_str())?;
    }
    writeln!(out, "END {}", snapshot.jobs.len())?;
    out.flush()?;
    Ok(())
}

/// The schedule the `schedule` mode runs: every second, every missed tick owed.
fn tick_schedule() -> Result<ScheduleDef> {
    Ok(ScheduleDef {
        catch_up: CatchUp::All { limit: 100_000 },
        origin: ScheduleOrigin::Config,
        ..ScheduleDef::new(
            "tick",
            ScheduledJob::new(QueueName::new("sched")?, b"tick".to_vec()),
            Trigger::Every { every_ms: 1_000 },
        )
    })
}

fn schedule(dir: PathBuf) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let broker = open_broker(open_store(dir)?)?;
        let scheduler = Scheduler::new(broker.clone(), Arc::new(SystemClock));
        // Applied the way the daemon applies its config file: unchanged after the first run, so progress is kept.
        scheduler.apply_config(vec![tick_schedule()?]).await?;
        scheduler.run_due().await?;
        println!("READY");
        scheduler.run(std::future::pending()).await;
        Ok(())
    })
}

fn schedule_dump(dir: PathBuf) -> Result<()> {
    let snapshot = open_store(dir)?.load()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for job in &snapshot.jobs {
        if let Some(tick) = job.headers().get("schedule_tick") {
            writeln!(out, "TICK {tick}")?;
        }
    }
    let progress = &snapshot
        .schedules
        .iter()
        .find(|s| s.def.name == "tick")
        .context("the tick schedule is stored")?
        .progress;
    writeln!(out, "SINCE {}", progress.since)?;
    writeln!(out, "LAST {}", progress.last_tick.unwrap_or(0))?;
    out.flush()?;
    Ok(())
}
