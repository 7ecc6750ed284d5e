//! Periodic jobs: `SCHED.CREATE`, `SCHED.UPDATE`, `SCHED.DEL`, `SCHED.GET`, `SCHED.LIST`, `SCHED.HISTORY`,
//! `SCHED.ENABLE`, `SCHED.DISABLE`, `SCHED.TRIGGER`. Times and durations on the wire are integers in ms.

use spool_core::{
    CatchUp, FiringKind, Overlap, Priority, QueueName, ScheduleDef, ScheduleOrigin, ScheduledJob, SpoolError, Trigger,
    DEFAULT_CATCH_UP_LIMIT,
};
use spool_engine::{FiringInfo, PutMode, RunOutcome, ScheduleInfo};

use super::queue::count;
use super::Ctx;
use crate::frame::Frame;
use crate::parse::{CommandError, Parse};

#[derive(Debug)]
pub(crate) enum ScheduleCmd {
    Put(Box<ScheduleDef>, PutMode),
    Delete(String),
    Get(String),
    List,
    History(String),
    Enable(String, bool),
    Trigger(String),
}

fn invalid(field: &str, e: SpoolError) -> CommandError {
    CommandError::Engine(SpoolError::new(e.code, format!("{field}: {}", e.message)))
}

fn u32_arg(p: &mut Parse) -> Result<u32, CommandError> {
    u32::try_from(p.next_u64()?).map_err(|_| CommandError::NotInteger)
}

/// `name queue payload (CRON expr [TZ zone] | EVERY ms | AT ms) [options…]`.
fn parse_def(p: &mut Parse) -> Result<ScheduleDef, CommandError> {
    let name = p.next_string()?;
    let queue = QueueName::new(&p.next_string()?).map_err(|e| invalid("queue", e))?;
    let payload = p.next_bytes()?.to_vec();
    // The trigger is set once the options are read; `Every` stands in until then.
    let mut def = ScheduleDef::new(name, ScheduledJob::new(queue, payload), Trigger::Every { every_ms: 0 });
    let (mut trigger, mut tz, mut catch_up) = (None, None, None);
    while p.remaining() > 0 {
        let keyword = p.next_keyword()?;
        match keyword.as_str() {
            "CRON" | "EVERY" | "AT" if trigger.is_some() => {
                return Err(CommandError::syntax("give only one of CRON, EVERY and AT"))
            }
            "CRON" => {
                trigger = Some(Trigger::Cron {
                    expr: p.next_string()?,
                    tz: String::new(),
                })
            }
            "EVERY" => {
                trigger = Some(Trigger::Every {
                    every_ms: p.next_u64()?,
                })
            }
            "AT" => trigger = Some(Trigger::Once { at: p.next_u64()? }),
            "TZ" => tz = Some(p.next_string()?),
            "PRIORITY" => def.job.priority = Some(Priority::new(p.next_i64()?).map_err(|e| invalid("priority", e))?),
            "MAXATTEMPTS" => def.job.max_attempts = Some(u32_arg(p)?),
            "LEASE" => def.job.lease_ms = Some(p.next_u64()?),
            "TTL" => def.job.ttl_ms = Some(p.next_u64()?),
            "HEADER" => {
                let key = p.next_string()?;
                def.job.headers.insert(key, p.next_string()?);
            }
            "CATCHUP" => {
                catch_up = Some(match p.next_keyword()?.as_str() {
                    "SKIP" => CatchUp::Skip,
                    "ONE" => CatchUp::One,
                    "ALL" => CatchUp::All {
                        limit: DEFAULT_CATCH_UP_LIMIT,
                    },
                    other => {
                        return Err(CommandError::syntax(format!(
                            "CATCHUP takes SKIP, ONE or ALL, not '{other}'"
                        )))
                    }
                })
            }
            "LIMIT" => match &mut catch_up {
                Some(CatchUp::All { limit }) => *limit = u32_arg(p)?,
                _ => return Err(CommandError::syntax("LIMIT follows CATCHUP ALL")),
            },
            "OVERLAP" => {
                def.overlap = match p.next_keyword()?.as_str() {
                    "ALLOW" => Overlap::Allow,
                    "SKIP" => Overlap::Skip,
                    other => {
                        return Err(CommandError::syntax(format!(
                            "OVERLAP takes ALLOW or SKIP, not '{other}'"
                        )))
                    }
                }
            }
            "JITTER" => def.jitter_ms = p.next_u64()?,
            "START" => def.start_at = Some(p.next_u64()?),
            "END" => def.end_at = Some(p.next_u64()?),
            "DISABLED" => def.enabled = false,
            other => return Err(CommandError::syntax(format!("unknown option '{other}'"))),
        }
    }
    def.trigger = match (trigger, tz) {
        (Some(Trigger::Cron { expr, .. }), tz) => Trigger::Cron {
            expr,
            tz: tz.unwrap_or_else(|| "UTC".into()),
        },
        (Some(_), Some(_)) => return Err(CommandError::syntax("TZ applies only to CRON")),
        (Some(trigger), None) => trigger,
        (None, _) => return Err(CommandError::syntax("one of CRON, EVERY or AT is required")),
    };
    def.catch_up = catch_up.unwrap_or_else(|| CatchUp::default_for(&def.trigger));
    Ok(def)
}

impl ScheduleCmd {
    pub fn parse(p: &mut Parse) -> Result<Self, CommandError> {
        let cmd = match p.name() {
            "SCHED.CREATE" => ScheduleCmd::Put(Box::new(parse_def(p)?), PutMode::Create),
            "SCHED.UPDATE" => ScheduleCmd::Put(Box::new(parse_def(p)?), PutMode::Update),
            "SCHED.DEL" => ScheduleCmd::Delete(p.next_string()?),
            "SCHED.GET" => ScheduleCmd::Get(p.next_string()?),
            "SCHED.LIST" => ScheduleCmd::List,
            "SCHED.HISTORY" => ScheduleCmd::History(p.next_string()?),
            "SCHED.ENABLE" => ScheduleCmd::Enable(p.next_string()?, true),
            "SCHED.DISABLE" => ScheduleCmd::Enable(p.next_string()?, false),
            _ => ScheduleCmd::Trigger(p.next_string()?),
        };
        p.finish()?;
        Ok(cmd)
    }

    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        let broker = &ctx.shared.broker;
        Ok(match self {
            ScheduleCmd::Put(def, mode) => {
                broker.schedule_put(*def, mode).await?;
                Frame::ok()
            }
            ScheduleCmd::Delete(name) => {
                broker.schedule_delete(&name, ScheduleOrigin::Api).await?;
                Frame::Integer(1)
            }
            ScheduleCmd::Get(name) => schedule_map(&broker.schedule_get(&name)?, true),
            ScheduleCmd::List => Frame::Array(broker.schedule_list().iter().map(|s| schedule_map(s, false)).collect()),
            ScheduleCmd::History(name) => history(&broker.schedule_get(&name)?.history),
            ScheduleCmd::Enable(name, enabled) => {
                Frame::Integer(i64::from(broker.schedule_set_enabled(&name, enabled).await?))
            }
            ScheduleCmd::Trigger(name) => Frame::text(broker.schedule_trigger(&name).await?.to_string()),
        })
    }
}

fn ms(v: u64) -> Frame {
    Frame::Integer(count(v))
}

fn opt_ms(v: Option<u64>) -> Frame {
    v.map_or(Frame::Null, ms)
}

fn schedule_map(info: &ScheduleInfo, with_history: bool) -> Frame {
    let (def, progress) = (&info.schedule.def, &info.schedule.progress);
    let text = Frame::text;
    let mut fields = vec![
        (text("name"), text(def.name.as_str())),
        (text("queue"), text(def.job.queue.as_str())),
        (text("payload"), Frame::Bulk(def.job.payload.clone().into())),
    ];
    match &def.trigger {
        Trigger::Cron { expr, tz } => {
            fields.push((text("cron"), text(expr.as_str())));
            fields.push((text("tz"), text(tz.as_str())));
        }
        Trigger::Every { every_ms } => fields.push((text("every_ms"), ms(*every_ms))),
        Trigger::Once { at } => fields.push((text("at_ms"), ms(*at))),
    }
    let (catch_up, limit) = match def.catch_up {
        CatchUp::Skip => ("skip", None),
        CatchUp::One => ("one", None),
        CatchUp::All { limit } => ("all", Some(u64::from(limit))),
    };
    fields.extend([
        (text("catch_up"), text(catch_up)),
        (text("catch_up_limit"), opt_ms(limit)),
        (
            text("overlap"),
            text(match def.overlap {
                Overlap::Allow => "allow",
                Overlap::Skip => "skip",
            }),
        ),
        (text("jitter_ms"), ms(def.jitter_ms)),
        (text("start_ms"), opt_ms(def.start_at)),
        (text("end_ms"), opt_ms(def.end_at)),
        (text("enabled"), Frame::Boolean(def.enabled)),
        (
            text("origin"),
            text(match def.origin {
                ScheduleOrigin::Config => "config",
                ScheduleOrigin::Api => "api",
            }),
        ),
        (text("last_tick_ms"), opt_ms(progress.last_tick)),
        (text("next_tick_ms"), opt_ms(info.next_tick)),
    ]);
    if with_history {
        fields.push((text("history"), history(&info.history)));
    }
    Frame::Map(fields)
}

/// History entries, newest first: `tick_ms`, `at_ms`, `kind` (`enqueued`, `manual`, `skipped_overlap`, `missed`),
/// `job` (the job id, or the still-running job a skipped tick waited for), `outcome` (the job's state, or `done`
/// once it is gone), `missed` (ticks the catch-up policy dropped).
fn history(entries: &[FiringInfo]) -> Frame {
    Frame::Array(
        entries
            .iter()
            .map(|e| {
                let f = &e.firing;
                let (kind, job, missed) = match f.kind {
                    FiringKind::Enqueued(id) => ("enqueued", Some(id), f.missed_before),
                    FiringKind::Manual(id) => ("manual", Some(id), 0),
                    FiringKind::SkippedOverlap(id) => ("skipped_overlap", Some(id), f.missed_before),
                    FiringKind::Missed(n) => ("missed", None, n),
                };
                let outcome = match e.outcome {
                    Some(RunOutcome::Live(state)) => Frame::text(state.as_str()),
                    Some(RunOutcome::Done) => Frame::text("done"),
                    None => Frame::Null,
                };
                Frame::Map(vec![
                    (Frame::text("tick_ms"), ms(f.tick)),
                    (Frame::text("at_ms"), ms(f.at)),
                    (Frame::text("kind"), Frame::text(kind)),
                    (
                        Frame::text("job"),
                        job.map_or(Frame::Null, |id| Frame::text(id.to_string())),
                    ),
                    (Frame::text("outcome"), outcome),
                    (Frame::text("missed"), ms(missed)),
                ])
            })
            .collect(),
    )
}
