//! Schedule messages ↔ `spool-core`'s schedule types. Decoding validates only the wire shape (required fields, known
//! enums, option combinations); the definition's own rules (cron syntax, zone, interval, window) are checked by
//! [`ScheduleDef::validate`] in the engine, so every door refuses the same definitions with the same messages.

use std::collections::BTreeMap;

use spool_core::{
    CatchUp, Firing, FiringKind, Overlap, Priority, QueueName, Schedule, ScheduleDef, ScheduleOrigin, ScheduledJob,
    SpoolError, Trigger, DEFAULT_CATCH_UP_LIMIT,
};

use crate::{known_enum, v1};

fn in_field(field: &str, e: SpoolError) -> SpoolError {
    SpoolError::new(e.code, format!("{field}: {}", e.message))
}

/// Decodes a definition from the wire as `origin` (a door passes [`ScheduleOrigin::Api`]); `field` names the message
/// in errors (`schedule.job.queue: …`).
pub fn schedule_def(field: &str, def: v1::ScheduleDef, origin: ScheduleOrigin) -> Result<ScheduleDef, SpoolError> {
    use v1::schedule_def::Trigger as Wire;
    let job = def
        .job
        .ok_or_else(|| SpoolError::invalid(format!("{field}.job is required")))?;
    let queue = QueueName::new(&job.queue).map_err(|e| in_field(&format!("{field}.job.queue"), e))?;
    let priority = job
        .priority
        .map(|p| Priority::new(p.into()).map_err(|e| in_field(&format!("{field}.job.priority"), e)))
        .transpose()?;
    let trigger = match def.trigger {
        Some(Wire::Cron(cron)) => Trigger::Cron {
            expr: cron.expr,
            tz: if cron.timezone.is_empty() {
                "UTC".into()
            } else {
                cron.timezone
            },
        },
        Some(Wire::EveryMs(every_ms)) => Trigger::Every { every_ms },
        Some(Wire::AtMs(at)) => Trigger::Once { at },
        None => {
            return Err(SpoolError::invalid(format!(
                "{field}.trigger is required: one of cron, every_ms or at_ms"
            )))
        }
    };
    let catch_up_field = format!("{field}.catch_up");
    let catch_up = match (
        known_enum::<v1::CatchUp>(&catch_up_field, def.catch_up)?,
        def.catch_up_limit,
    ) {
        (v1::CatchUp::All, limit) => CatchUp::All {
            limit: limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT),
        },
        (_, Some(_)) => {
            return Err(SpoolError::invalid(format!(
                "{field}.catch_up_limit applies only with catch_up ALL"
            )))
        }
        (v1::CatchUp::Skip, None) => CatchUp::Skip,
        (v1::CatchUp::One, None) => CatchUp::One,
        (v1::CatchUp::Unspecified, None) => CatchUp::default_for(&trigger),
    };
    let overlap = match known_enum::<v1::Overlap>(&format!("{field}.overlap"), def.overlap)? {
        v1::Overlap::Unspecified | v1::Overlap::Allow => Overlap::Allow,
        v1::Overlap::Skip => Overlap::Skip,
    };
    Ok(ScheduleDef {
        name: def.name,
        job: ScheduledJob {
            queue,
            payload: job.payload,
            priority,
            max_attempts: job.max_attempts,
            lease_ms: job.lease_ms,
            ttl_ms: job.ttl_ms,
            headers: job.headers.into_iter().collect::<BTreeMap<_, _>>(),
        },
        trigger,
        catch_up,
        overlap,
        jitter_ms: def.jitter_ms,
        start_at: def.start_at_ms,
        end_at: def.end_at_ms,
        enabled: def.enabled.unwrap_or(true),
        origin,
    })
}

impl From<&ScheduleDef> for v1::ScheduleDef {
    fn from(def: &ScheduleDef) -> Self {
        use v1::schedule_def::Trigger as Wire;
        let (catch_up, catch_up_limit) = match def.catch_up {
            CatchUp::Skip => (v1::CatchUp::Skip, None),
            CatchUp::One => (v1::CatchUp::One, None),
            CatchUp::All { limit } => (v1::CatchUp::All, Some(limit)),
        };
        v1::ScheduleDef {
            name: def.name.clone(),
            job: Some(v1::ScheduledJob {
                queue: def.job.queue.to_string(),
                payload: def.job.payload.clone(),
                priority: def.job.priority.map(|p| p.get().into()),
                max_attempts: def.job.max_attempts,
                lease_ms: def.job.lease_ms,
                ttl_ms: def.job.ttl_ms,
                headers: def.job.headers.clone().into_iter().collect(),
            }),
            trigger: Some(match &def.trigger {
                Trigger::Cron { expr, tz } => Wire::Cron(v1::CronTrigger {
                    expr: expr.clone(),
                    timezone: tz.clone(),
                }),
                Trigger::Every { every_ms } => Wire::EveryMs(*every_ms),
                Trigger::Once { at } => Wire::AtMs(*at),
            }),
            catch_up: catch_up.into(),
            catch_up_limit,
            overlap: match def.overlap {
                Overlap::Allow => v1::Overlap::Allow,
                Overlap::Skip => v1::Overlap::Skip,
            }
            .into(),
            jitter_ms: def.jitter_ms,
            start_at_ms: def.start_at,
            end_at_ms: def.end_at,
            enabled: Some(def.enabled),
        }
    }
}

/// A stored schedule with its next tick, without history (the caller adds it: job outcomes live in the engine).
pub fn schedule(s: &Schedule, next_tick: Option<u64>) -> v1::Schedule {
    v1::Schedule {
        def: Some((&s.def).into()),
        origin: match s.def.origin {
            ScheduleOrigin::Config => v1::ScheduleOrigin::Config,
            ScheduleOrigin::Api => v1::ScheduleOrigin::Api,
        }
        .into(),
        last_tick_at_ms: s.progress.last_tick,
        next_tick_at_ms: next_tick,
        history: Vec::new(),
    }
}

/// A history entry without its job's outcome (`job_state`, `job_done`), which only the engine knows.
impl From<&Firing> for v1::Firing {
    fn from(f: &Firing) -> Self {
        let (kind, job, missed) = match f.kind {
            FiringKind::Enqueued(id) => (v1::FiringKind::Enqueued, Some(id), f.missed_before),
            FiringKind::Manual(id) => (v1::FiringKind::Manual, Some(id), 0),
            FiringKind::SkippedOverlap(id) => (v1::FiringKind::SkippedOverlap, Some(id), f.missed_before),
            FiringKind::Missed(n) => (v1::FiringKind::Missed, None, n),
        };
        v1::Firing {
            tick_at_ms: f.tick,
            recorded_at_ms: f.at,
            kind: kind.into(),
            job_id: job.map(|id| id.to_string()),
            job_state: v1::JobState::Unspecified.into(),
            job_done: false,
            missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(ms: u64) -> v1::ScheduleDef {
        v1::ScheduleDef {
            name: "tick".into(),
            job: Some(v1::ScheduledJob {
                queue: "q".into(),
                ..Default::default()
            }),
            trigger: Some(v1::schedule_def::Trigger::EveryMs(ms)),
            ..Default::default()
        }
    }

    #[test]
    fn a_definition_round_trips_and_defaults_resolve() {
        let def = schedule_def("schedule", every(30_000), ScheduleOrigin::Api).unwrap();
        assert_eq!(
            (def.catch_up, def.overlap, def.enabled),
            (CatchUp::Skip, Overlap::Allow, true)
        );
        let wire = v1::ScheduleDef::from(&def);
        assert_eq!(schedule_def("schedule", wire, ScheduleOrigin::Api).unwrap(), def);
        let once = v1::ScheduleDef {
            trigger: Some(v1::schedule_def::Trigger::AtMs(5)),
            ..every(0)
        };
        assert_eq!(
            schedule_def("schedule", once, ScheduleOrigin::Api).unwrap().catch_up,
            CatchUp::One
        );
    }

    #[test]
    fn wire_shape_errors_name_the_field() {
        let e = schedule_def(
            "schedule",
            v1::ScheduleDef { overlap: 9, ..every(1) },
            ScheduleOrigin::Api,
        )
        .unwrap_err();
        assert!(e.message.contains("schedule.overlap: unknown enum value 9"), "{e}");
        let limit_without_all = v1::ScheduleDef {
            catch_up_limit: Some(3),
            ..every(1)
        };
        let e = schedule_def("schedule", limit_without_all, ScheduleOrigin::Api).unwrap_err();
        assert!(e.message.contains("schedule.catch_up_limit"), "{e}");
        let no_trigger = v1::ScheduleDef {
            trigger: None,
            ..every(1)
        };
        let e = schedule_def("schedule", no_trigger, ScheduleOrigin::Api).unwrap_err();
        assert!(e.message.contains("schedule.trigger is required"), "{e}");
    }
}
