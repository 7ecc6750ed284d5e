//! Schedule transitions on the broker state. The one that matters is [`State::schedule_fire`]: it enqueues the tick's
//! job *and* advances the schedule's stored progress in the same [`Effects`], which the broker submits as one store
//! batch. A crash therefore leaves either both (the tick fired and is known to have fired) or neither (the tick is
//! still due and fires after restart): no window exists in which a tick can fire twice or be lost. The job's unique
//! key, derived from (schedule, tick), is a second guard should two firings of one tick ever race.

use rand::Rng;
use spool_core::{
    tick_unique_key, ErrorCode, Firing, FiringKind, JobId, JobOptions, JobState, Overlap, Schedule, ScheduleDef,
    ScheduleOrigin, ScheduleProgress, SpoolError, TimestampMs, Trigger,
};
use spool_store::Mutation;

use crate::state::{Effects, NewJob, State};
use crate::End;

/// How [`crate::Broker::schedule_put`] treats an existing schedule of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Only create: a schedule of that name must not exist.
    Create,
    /// Only replace: a schedule of that name must exist (and not come from the config file).
    Update,
    /// Create or replace (the config file at start-up). An unchanged definition keeps its stored `enabled` flag, so
    /// a runtime disable of a config schedule survives restarts until the file's definition changes.
    Upsert,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new schedule.
    Created,
    /// An existing schedule got a new definition.
    Changed,
    /// The definition was already stored as given.
    Unchanged,
}

/// What a firing request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// The tick enqueued this job (or, should the unique key already be held, found it).
    Enqueued(JobId),
    /// The tick was skipped: the previous tick's job is still pending or leased (overlap = skip).
    SkippedOverlap(JobId),
    /// The tick was handled before (a restart, a clock step, or a second scheduler): nothing happened.
    AlreadyFired,
    /// The schedule is disabled: nothing happened.
    Disabled,
}

/// Where the job of a firing is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The job still exists in this state (`dead` means it is in the dead-letter queue).
    Live(JobState),
    /// The job no longer exists: acked (or cancelled, purged or expired).
    Done,
}

/// One history entry with its job's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringInfo {
    /// The stored entry.
    pub firing: Firing,
    /// The job's outcome, for entries that enqueued one.
    pub outcome: Option<RunOutcome>,
}

/// A schedule as the doors show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    /// Definition and progress.
    pub schedule: Schedule,
    /// The next tick to handle (may be in the past if it is due right now); `None` if disabled or finished.
    pub next_tick: Option<TimestampMs>,
    /// The history, newest first, with outcomes.
    pub history: Vec<FiringInfo>,
}

/// What a definition says of `Schedule::file_enabled`: its own flag if it comes from the config file.
fn file_enabled(def: &ScheduleDef) -> Option<bool> {
    (def.origin == ScheduleOrigin::Config).then_some(def.enabled)
}

fn no_schedule(name: &str) -> SpoolError {
    SpoolError::not_found(format!("no schedule {name}"))
}

fn config_owned(name: &str) -> SpoolError {
    SpoolError::new(
        ErrorCode::WrongState,
        format!("schedule {name} is defined in the config file; change it there (the API may only enable, disable or trigger it)"),
    )
}

impl State {
    fn schedule_job(
        &self,
        now: TimestampMs,
        def: &ScheduleDef,
        key: Option<String>,
        run_at: Option<TimestampMs>,
    ) -> NewJob {
        let job = &def.job;
        let mut headers = job.headers.clone();
        headers.insert("schedule".into(), def.name.clone());
        if let Some(key) = &key {
            // The tick is the last segment of the unique key; a manual run has no key and no tick header.
            if let Some(tick) = key.rsplit(':').next() {
                headers.insert("schedule_tick".into(), tick.into());
            }
        }
        NewJob {
            queue: job.queue.to_string(),
            payload: job.payload.clone(),
            options: JobOptions {
                priority: job.priority,
                run_at,
                expires_at: job.ttl_ms.map(|ttl| run_at.unwrap_or(now).max(now).saturating_add(ttl)),
                max_attempts: job.max_attempts,
                lease_ms: job.lease_ms,
                unique_key: key,
                headers,
                ..JobOptions::default()
            },
            position: End::Last,
        }
    }

    /// Checks a definition against the broker's limits and queues; errors name the field.
    fn check_schedule(&self, now: TimestampMs, def: &ScheduleDef) -> Result<(), SpoolError> {
        def.validate()?;
        self.lookup_queue(def.job.queue.as_str())
            .map_err(|e| SpoolError::new(e.code, format!("queue: {}", e.message)))?;
        self.prepare(now, self.schedule_job(now, def, None, None))
            .map_err(|e| SpoolError::new(e.code, format!("job: {}", e.message)))?;
        Ok(())
    }

    fn put_schedule_write(&self, name: &str, fx: &mut Effects) {
        let schedule = self.schedules.get(name).expect("schedule just written").clone();
        fx.writes.push(Mutation::PutSchedule(Box::new(schedule)));
    }

    pub fn schedule_put(
        &mut self,
        now: TimestampMs,
        mut def: ScheduleDef,
        mode: PutMode,
        fx: &mut Effects,
    ) -> Result<PutOutcome, SpoolError> {
        self.check_schedule(now, &def)?;
        let name = def.name.clone();
        let outcome = match (self.schedules.get_mut(&name), mode) {
            (Some(_), PutMode::Create) => {
                return Err(SpoolError::invalid(format!(
                    "name: a schedule named {name} already exists"
                )))
            }
            (None, PutMode::Update) => return Err(no_schedule(&name)),
            (Some(s), PutMode::Update) if s.def.origin == ScheduleOrigin::Config => return Err(config_owned(&name)),
            (Some(s), _) => {
                let file_enabled = file_enabled(&def);
                if file_enabled.is_some() && s.def.origin == ScheduleOrigin::Config {
                    // A runtime enable or disable stands while the file's own flag is the one it last applied. A record
                    // from before that flag was kept cannot tell a runtime disable from the file's: it stays disabled
                    // if either says so, rather than start firing again on an upgrade.
                    match s.file_enabled {
                        Some(applied) if applied == def.enabled => def.enabled = s.def.enabled,
                        Some(_) => {}
                        None => def.enabled &= s.def.enabled,
                    }
                    // (An older record is written once, to keep the file's flag from now on.)
                    if def == s.def && s.file_enabled == file_enabled {
                        return Ok(PutOutcome::Unchanged);
                    }
                }
                if matches!(def.trigger, Trigger::Once { .. }) && def.trigger != s.def.trigger {
                    // A one-off moved to another time is owed that time, even one before the tick it already fired
                    // (its count restarts; the history stays).
                    s.progress.since = def.owed_from(now);
                    s.progress.last_tick = None;
                } else if s.def.ticks_differ(&def) {
                    // Ticks of the old trigger or window are not owed to anyone; ticks already handled stay handled.
                    s.progress.since = now;
                } else if def.enabled && !s.def.enabled {
                    // Nor are ticks that fell while it was disabled.
                    s.progress.since = now;
                }
                std::mem::swap(&mut s.def, &mut def);
                s.file_enabled = file_enabled;
                PutOutcome::Changed
            }
            (None, _) => {
                self.schedules.insert(
                    name.clone(),
                    Schedule {
                        progress: ScheduleProgress {
                            since: def.owed_from(now),
                            ..ScheduleProgress::default()
                        },
                        file_enabled: file_enabled(&def),
                        def,
                    },
                );
                PutOutcome::Created
            }
        };
        self.put_schedule_write(&name, fx);
        Ok(outcome)
    }

    pub fn schedule_delete(&mut self, name: &str, by: ScheduleOrigin, fx: &mut Effects) -> Result<(), SpoolError> {
        let schedule = self.schedules.get(name).ok_or_else(|| no_schedule(name))?;
        if schedule.def.origin == ScheduleOrigin::Config && by == ScheduleOrigin::Api {
            return Err(config_owned(name));
        }
        self.schedules.remove(name);
        fx.writes.push(Mutation::DeleteSchedule(name.to_string()));
        Ok(())
    }

    pub fn schedule_set_enabled(
        &mut self,
        now: TimestampMs,
        name: &str,
        enabled: bool,
        fx: &mut Effects,
    ) -> Result<bool, SpoolError> {
        let schedule = self.schedules.get_mut(name).ok_or_else(|| no_schedule(name))?;
        if schedule.def.enabled == enabled {
            return Ok(false);
        }
        schedule.def.enabled = enabled;
        if enabled {
            schedule.progress.since = now;
        }
        self.put_schedule_write(name, fx);
        Ok(true)
    }

    /// Whether a job is still pending or leased (not acked, not dead): what the overlap policy waits for.
    fn unfinished(&self, id: &JobId) -> bool {
        self.get(id).is_some_and(|j| j.state != JobState::Dead)
    }

    /// Fires `tick` of schedule `name`: enqueues its job and advances the progress, in one batch.
    pub fn schedule_fire(
        &mut self,
        now: TimestampMs,
        name: &str,
        tick: TimestampMs,
        missed_before: u64,
        fx: &mut Effects,
    ) -> Result<FireOutcome, SpoolError> {
        let schedule = self.schedules.get(name).ok_or_else(|| no_schedule(name))?.clone();
        if !schedule.def.enabled {
            return Ok(FireOutcome::Disabled);
        }
        if tick <= schedule.progress.cursor() {
            return Ok(FireOutcome::AlreadyFired);
        }
        let running = schedule
            .progress
            .last_job
            .filter(|id| schedule.def.overlap == Overlap::Skip && self.unfinished(id));
        let kind = match running {
            Some(id) => FiringKind::SkippedOverlap(id),
            None => {
                let jitter = schedule.def.jitter_ms;
                let run_at = (jitter > 0)
                    .then(|| tick.saturating_add(rand::thread_rng().gen_range(0..=jitter)))
                    .filter(|&t| t > now);
                let job = self.schedule_job(now, &schedule.def, Some(tick_unique_key(name, tick)), run_at);
                let enqueued = self.enqueue(now, vec![job], fx)?;
                FiringKind::Enqueued(enqueued[0].id)
            }
        };
        let progress = &mut self.schedules.get_mut(name).expect("schedule seen above").progress;
        progress.last_tick = Some(tick);
        if let FiringKind::Enqueued(id) = kind {
            progress.last_job = Some(id);
        }
        progress.record(Firing {
            tick,
            at: now,
            missed_before,
            kind,
        });
        self.put_schedule_write(name, fx);
        Ok(match kind {
            FiringKind::SkippedOverlap(id) => FireOutcome::SkippedOverlap(id),
            FiringKind::Enqueued(id) => FireOutcome::Enqueued(id),
            _ => unreachable!("a tick either enqueues or skips"),
        })
    }

    /// Records that ticks up to `through` were missed (`count` of them) and will not fire. Returns false if they
    /// were already handled.
    pub fn schedule_miss(
        &mut self,
        now: TimestampMs,
        name: &str,
        through: TimestampMs,
        count: u64,
        fx: &mut Effects,
    ) -> Result<bool, SpoolError> {
        let schedule = self.schedules.get_mut(name).ok_or_else(|| no_schedule(name))?;
        if through <= schedule.progress.cursor() {
            return Ok(false);
        }
        schedule.progress.last_tick = Some(through);
        schedule.progress.record(Firing {
            tick: through,
            at: now,
            missed_before: 0,
            kind: FiringKind::Missed(count),
        });
        self.put_schedule_write(name, fx);
        Ok(true)
    }

    /// Enqueues the schedule's job now, outside the tick sequence (its progress does not move).
    pub fn schedule_trigger(&mut self, now: TimestampMs, name: &str, fx: &mut Effects) -> Result<JobId, SpoolError> {
        let def = &self.schedules.get(name).ok_or_else(|| no_schedule(name))?.def;
        let job = self.schedule_job(now, def, None, None);
        let id = self.enqueue(now, vec![job], fx)?[0].id;
        let progress = &mut self.schedules.get_mut(name).expect("schedule seen above").progress;
        progress.record(Firing {
            tick: now,
            at: now,
            missed_before: 0,
            kind: FiringKind::Manual(id),
        });
        self.put_schedule_write(name, fx);
        Ok(id)
    }

    pub fn schedule_info(&self, schedule: &Schedule) -> ScheduleInfo {
        let next_tick = schedule
            .def
            .enabled
            .then(|| schedule.def.compile().ok())
            .flatten()
            .and_then(|trigger| schedule.def.next_tick(&trigger, schedule.progress.cursor()));
        let history = schedule
            .progress
            .history
            .iter()
            .rev()
            .map(|firing| {
                let job = match firing.kind {
                    FiringKind::Enqueued(id) | FiringKind::Manual(id) => Some(id),
                    FiringKind::SkippedOverlap(_) | FiringKind::Missed(_) => None,
                };
                FiringInfo {
                    firing: *firing,
                    outcome: job.map(|id| self.get(&id).map_or(RunOutcome::Done, |j| RunOutcome::Live(j.state))),
                }
            })
            .collect();
        ScheduleInfo {
            schedule: schedule.clone(),
            next_tick,
            history,
        }
    }
}
