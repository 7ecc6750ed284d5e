//! Spool's scheduler: the loop that turns schedules into jobs, inside the daemon, exactly once per tick. It decides
//! *which* ticks are due (the catch-up policy, see [`plan`]) and asks the engine to fire each one; the engine does
//! the firing itself as one store batch that holds both the job and the schedule's advanced progress
//! ([`Broker::schedule_fire`]), so a crash, a restart, a clock step or even a second scheduler cannot double or lose
//! a tick. This crate also parses `[[schedules]]` tables of the config file ([`ScheduleSpec`], [`validate_specs`]).
//!
//! It depends on the engine and never on a door or the store. Time comes only from the injected [`Clock`]: tests
//! move a [`spool_core::ManualClock`] and call [`Scheduler::run_due`] instead of waiting.

mod spec;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spool_core::{
    CatchUp, Clock, ErrorCode, Schedule, ScheduleDef, ScheduleOrigin, SpoolError, TimestampMs, MISFIRE_GRACE_MS,
};
use spool_engine::{Broker, FireOutcome, PutMode, PutOutcome};

pub use spec::{check_queues, validate_specs, CatchUpSpec, OverlapSpec, ScheduleSpec};

/// Ticks scanned one by one before the scan jumps ahead (a seconds-level cron after a long outage).
const MAX_SCAN: u64 = 100_000;

/// What the catch-up policy makes of the ticks due at some instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Ticks to fire, oldest first.
    pub fire: Vec<TimestampMs>,
    /// Ticks dropped before the first one fired.
    pub missed_before: u64,
    /// When nothing fires but ticks were dropped: the latest dropped tick and how many.
    pub miss: Option<(TimestampMs, u64)>,
}

/// Which of a schedule's ticks fire at `now`: those after its stored progress and not after `now`, filtered by the
/// catch-up policy. A disabled schedule plans nothing.
pub fn plan(schedule: &Schedule, now: TimestampMs) -> Result<Plan, SpoolError> {
    let def = &schedule.def;
    if !def.enabled {
        return Ok(Plan::default());
    }
    let trigger = def.compile()?;
    let keep = match def.catch_up {
        CatchUp::All { limit } => limit.max(1) as usize,
        CatchUp::Skip | CatchUp::One => 1,
    };
    let start = schedule.progress.cursor();
    let (mut cursor, mut count, mut scanned) = (start, 0u64, 0u64);
    let mut due = VecDeque::with_capacity(keep.min(1_024));
    while let Some(tick) = def.next_tick(&trigger, cursor).filter(|&t| t <= now) {
        count += 1;
        scanned += 1;
        due.push_back(tick);
        if due.len() > keep {
            due.pop_front();
        }
        cursor = tick;
        if scanned == MAX_SCAN {
            // Only the latest `keep` ticks can fire: jump to a little before them at the average spacing seen so far,
            // counting (approximately) the ticks jumped over as missed. Spacing varies (a cron busy in office hours
            // only), so a jump that lands past the last tick is not taken: the distance doubles until one lands
            // before a tick, or behind the cursor, where the scan just goes on.
            let gap = ((cursor - start) / scanned).max(1);
            let last = def.end_at.map_or(now, |end| end.min(now));
            let mut back = gap.saturating_mul(keep as u64 + 1);
            loop {
                let jump = last.saturating_sub(back);
                if jump <= cursor {
                    break;
                }
                if def.next_tick(&trigger, jump).is_some_and(|t| t <= now) {
                    count += (jump - cursor) / gap;
                    cursor = jump;
                    due.clear();
                    break;
                }
                back = back.saturating_mul(2);
            }
        }
    }
    let Some(&latest) = due.back() else {
        return Ok(Plan::default());
    };
    Ok(match def.catch_up {
        CatchUp::Skip if now - latest > MISFIRE_GRACE_MS => Plan {
            miss: Some((latest, count)),
            ..Plan::default()
        },
        CatchUp::Skip | CatchUp::One => Plan {
            fire: vec![latest],
            missed_before: count - 1,
            miss: None,
        },
        CatchUp::All { .. } => Plan {
            missed_before: count - due.len() as u64,
            fire: due.into(),
            miss: None,
        },
    })
}

/// What one [`Scheduler::run_due`] did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// (schedule, tick, outcome) of every tick asked to fire.
    pub fired: Vec<(String, TimestampMs, FireOutcome)>,
    /// (schedule, ticks) dropped by the catch-up policy.
    pub missed: Vec<(String, u64)>,
    /// Schedules that could not fire, with why (they are retried on the next run).
    pub errors: Vec<(String, SpoolError)>,
}

/// What applying the config file's schedules changed, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigReport {
    /// New schedules.
    pub created: Vec<String>,
    /// Schedules whose definition changed.
    pub changed: Vec<String>,
    /// Schedules stored as the file says.
    pub unchanged: Vec<String>,
    /// Config schedules no longer in the file, deleted.
    pub removed: Vec<String>,
}

/// The scheduler: cheap to clone, drives the broker's schedules.
#[derive(Debug, Clone)]
pub struct Scheduler {
    broker: Broker,
    clock: Arc<dyn Clock>,
}

impl Scheduler {
    /// A scheduler over `broker`, reading time from `clock` (the broker's clock).
    pub fn new(broker: Broker, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }

    /// Makes the stored config schedules match `defs` (from [`validate_specs`]): creates and changes what differs,
    /// deletes config schedules the file no longer has, and logs each change. A runtime schedule of the same name
    /// is taken over by the file, with a warning. Fails on the first schedule the broker refuses (an unknown queue
    /// with auto-creation off), naming it.
    pub async fn apply_config(&self, defs: Vec<ScheduleDef>) -> Result<ConfigReport, SpoolError> {
        let mut report = ConfigReport::default();
        let stored = self.broker.schedules();
        for def in defs {
            let name = def.name.clone();
            if stored
                .iter()
                .any(|s| s.def.name == name && s.def.origin == ScheduleOrigin::Api)
            {
                tracing::warn!(schedule = %name, "the config file defines a schedule created through the API; the file's definition replaces it");
            }
            let outcome = self
                .broker
                .schedule_put(def, PutMode::Upsert)
                .await
                .map_err(|e| SpoolError::new(e.code, format!("schedules.{name}: {}", e.message)))?;
            match outcome {
                PutOutcome::Created => {
                    tracing::info!(schedule = %name, "schedule added from the config file");
                    report.created.push(name);
                }
                PutOutcome::Changed => {
                    tracing::info!(schedule = %name, "schedule changed in the config file");
                    report.changed.push(name);
                }
                PutOutcome::Unchanged => report.unchanged.push(name),
            }
        }
        for old in stored.iter().filter(|s| s.def.origin == ScheduleOrigin::Config) {
            let name = &old.def.name;
            if report.created.contains(name) || report.changed.contains(name) || report.unchanged.contains(name) {
                continue;
            }
            self.broker.schedule_delete(name, ScheduleOrigin::Config).await?;
            tracing::info!(schedule = %name, "schedule removed: no longer in the config file");
            report.removed.push(name.clone());
        }
        Ok(report)
    }

    /// Fires every tick that is due now, per the catch-up policies. One schedule's failure does not stop the
    /// others; a shutting-down broker ends the run with `SHUTDOWN`.
    pub async fn run_due(&self) -> Result<RunReport, SpoolError> {
        let now = self.clock.now_ms();
        let mut report = RunReport::default();
        for schedule in self.broker.schedules() {
            let name = schedule.def.name.clone();
            let result = self.fire_planned(&schedule, now, &mut report).await;
            match result {
                Err(e) if e.code == ErrorCode::ShuttingDown => return Err(e),
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "schedule could not fire; retrying");
                    report.errors.push((name, e));
                }
                Ok(()) => {}
            }
        }
        Ok(report)
    }

    async fn fire_planned(
        &self,
        schedule: &Schedule,
        now: TimestampMs,
        report: &mut RunReport,
    ) -> Result<(), SpoolError> {
        let name = &schedule.def.name;
        let plan = plan(schedule, now)?;
        if let Some((through, count)) = plan.miss {
            if self.broker.schedule_miss(name, through, count).await? {
                tracing::warn!(schedule = %name, missed = count, "ticks missed (catch_up = skip)");
                report.missed.push((name.clone(), count));
            }
        }
        if plan.missed_before > 0 {
            tracing::warn!(schedule = %name, missed = plan.missed_before, "ticks missed beyond the catch-up policy");
            report.missed.push((name.clone(), plan.missed_before));
        }
        for (i, tick) in plan.fire.into_iter().enumerate() {
            let missed_before = if i == 0 { plan.missed_before } else { 0 };
            let outcome = self.broker.schedule_fire(name, tick, missed_before).await?;
            match outcome {
                FireOutcome::Enqueued(id) => tracing::debug!(schedule = %name, tick, job = %id, "schedule fired"),
                FireOutcome::SkippedOverlap(id) => {
                    tracing::info!(schedule = %name, tick, running = %id, "tick skipped: previous run unfinished")
                }
                FireOutcome::AlreadyFired | FireOutcome::Disabled => {}
            }
            report.fired.push((name.clone(), tick, outcome));
        }
        Ok(())
    }

    /// The earliest tick any enabled schedule still has to handle (possibly already due).
    pub fn next_wake(&self) -> Option<TimestampMs> {
        self.broker
            .schedules()
            .iter()
            .filter(|s| s.def.enabled)
            .filter_map(|s| {
                let trigger = s.def.compile().ok()?;
                s.def.next_tick(&trigger, s.progress.cursor())
            })
            .min()
    }

    /// Fires schedules as their ticks fall due until `stop` resolves or the broker shuts down. Sleeps until the
    /// next tick, waking early when a schedule changes; the sleep is capped at a second so that a wall-clock step
    /// (which a monotonic sleep does not see) is noticed promptly, and so that a schedule that failed is retried.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let failed = match self.run_due().await {
                Ok(report) => !report.errors.is_empty(),
                Err(_) => return,
            };
            let now = self.clock.now_ms();
            let wait = match self.next_wake() {
                Some(next) if !failed => next.saturating_sub(now).clamp(1, 1_000),
                _ => 1_000,
            };
            tokio::select! {
                // Shutdown: the caller's stop signal; the broker refuses writes from then on anyway.
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                // A schedule was added or changed: its first tick may be sooner than the one we sleep for.
                _ = self.broker.schedules_changed() => {}
            }
            if self.broker.is_shutting_down() {
                return;
            }
        }
    }
}
