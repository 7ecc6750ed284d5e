//! Periodic jobs: a [`ScheduleDef`] (what to enqueue, when, and the policies for missed and overlapping runs), its
//! durable [`ScheduleProgress`] (the last tick fired and a short history), and the [`Trigger`] arithmetic that turns
//! a cron expression, an interval or a one-off time into tick instants.
//!
//! A *tick* is the instant (ms since the epoch, UTC) a trigger says a run is due. Ticks are pure functions of the
//! definition, never of when the scheduler happened to look, so a restarted scheduler computes the same ticks and the
//! stored `last_tick` tells it exactly which ones already fired.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::{JobId, Priority, QueueName, SpoolError, TimestampMs};

/// The longest schedule name accepted, in bytes.
pub const MAX_SCHEDULE_NAME_LEN: usize = 128;
/// Firings kept in a schedule's history.
pub const HISTORY_LEN: usize = 20;

/// Checks a schedule name: 1–128 bytes of ASCII letters, digits and `_ - . :` (the queue-name alphabet, so names
/// fit unquoted in commands, URLs and unique keys).
pub fn validate_schedule_name(name: &str) -> Result<(), SpoolError> {
    if name.is_empty() || name.len() > MAX_SCHEDULE_NAME_LEN {
        return Err(SpoolError::invalid(format!(
            "name: must be 1 to {MAX_SCHEDULE_NAME_LEN} bytes long, got {} bytes",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(SpoolError::invalid(format!(
            "name: {name:?} contains {bad:?}; allowed are ASCII letters, digits and _ - . :"
        )));
    }
    Ok(())
}

/// When a schedule's ticks fall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// A cron expression (5 fields, or 6 with seconds first; `@hourly`-style aliases; `L` and `#`), evaluated in an
    /// IANA time zone.
    Cron {
        /// The expression as written.
        expr: String,
        /// IANA zone name, e.g. `America/New_York`; `UTC` by default.
        tz: String,
    },
    /// Every `every_ms`, aligned to the schedule's `start_at` (or the Unix epoch), in elapsed time: an interval is
    /// not affected by DST.
    Every {
        /// The period in ms; more than 0.
        every_ms: u64,
    },
    /// Once, at this instant.
    Once {
        /// When, in ms since the epoch.
        at: TimestampMs,
    },
}

/// A trigger ready to compute ticks (the cron expression parsed, the zone resolved).
#[derive(Debug, Clone)]
pub enum CompiledTrigger {
    /// A parsed cron expression in its zone.
    Cron(Box<croner::Cron>, Tz),
    /// Period and alignment origin, in ms.
    Every(u64, TimestampMs),
    /// The one instant.
    Once(TimestampMs),
}

impl Trigger {
    /// Parses and checks the trigger; errors name the field (`cron`, `timezone`, `every`, `at`).
    pub fn compile(&self, origin: TimestampMs) -> Result<CompiledTrigger, SpoolError> {
        match self {
            Trigger::Cron { expr, tz } => {
                let zone = Tz::from_str(tz).map_err(|_| {
                    SpoolError::invalid(format!(
                        "timezone: unknown time zone {tz:?}; use an IANA name such as \"UTC\" or \"Europe/Paris\""
                    ))
                })?;
                let cron = croner::Cron::new(expr)
                    .with_seconds_optional()
                    .with_dom_and_dow()
                    .parse()
                    .map_err(|e| SpoolError::invalid(format!("cron: invalid expression {expr:?}: {e}")))?;
                let compiled = CompiledTrigger::Cron(Box::new(cron), zone);
                // A pattern like "0 0 31 2 *" parses but never matches; refuse it rather than sit silent forever.
                if compiled.next_after(0).is_none() {
                    return Err(SpoolError::invalid(format!("cron: expression {expr:?} never matches")));
                }
                Ok(compiled)
            }
            Trigger::Every { every_ms } => {
                if *every_ms == 0 {
                    return Err(SpoolError::invalid("every: the interval must be more than 0"));
                }
                Ok(CompiledTrigger::Every(*every_ms, origin))
            }
            Trigger::Once { at } => Ok(CompiledTrigger::Once(*at)),
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Cron { expr, tz } => write!(f, "cron {expr:?} in {tz}"),
            Trigger::Every { every_ms } => write!(f, "every {every_ms} ms"),
            Trigger::Once { at } => write!(f, "once at {at} ms"),
        }
    }
}

impl CompiledTrigger {
    /// The first tick strictly after `t`, or `None` when there is none (a past one-off, or a cron beyond year 5000).
    pub fn next_after(&self, t: TimestampMs) -> Option<TimestampMs> {
        match self {
            CompiledTrigger::Every(period, origin) => {
                if t < *origin {
                    return Some(*origin);
                }
                let k = (t - origin) / period + 1;
                origin.checked_add(k.checked_mul(*period)?)
            }
            CompiledTrigger::Once(at) => (*at > t).then_some(*at),
            CompiledTrigger::Cron(cron, zone) => {
                // Cron ticks are whole seconds; searching from the whole second at or before `t` means a `t` with
                // milliseconds cannot produce a tick with milliseconds.
                let mut from = t - t % 1_000;
                loop {
                    let start: DateTime<Tz> = zone.timestamp_millis_opt(i64::try_from(from).ok()?).single()?;
                    let next = cron.find_next_occurrence(&start, false).ok()?;
                    let next = u64::try_from(next.timestamp_millis()).ok()?;
                    // croner searches in local wall time; starting inside the repeated hour of a fall-back day it
                    // can map an ambiguous wall time to its first (earlier) instant. Never go backwards: search on.
                    if next > t {
                        return Some(next);
                    }
                    from = from.max(next) + 1_000;
                }
            }
        }
    }
}

/// What a scheduler does with ticks that fell due while it could not fire them (the daemon was down, or the
/// schedule's tick came and went during a long stall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CatchUp {
    /// Drop missed ticks: fire only a tick that is at most [`MISFIRE_GRACE_MS`] late. The default (cron's habit).
    #[default]
    Skip,
    /// Fire once for the latest missed tick, however late, and drop the rest.
    One,
    /// Fire every missed tick, in order, up to `limit` of the most recent ones.
    All {
        /// Most missed ticks fired after one outage.
        limit: u32,
    },
}

impl CatchUp {
    /// The policy when none is given: a one-off that the daemon missed while down should still run, late; a
    /// recurring schedule skips what it missed, as cron does.
    pub fn default_for(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::Once { .. } => CatchUp::One,
            _ => CatchUp::Skip,
        }
    }
}

/// Most missed ticks fired after one outage under `catch_up = all` when no limit is given.
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 100;

/// How late a tick may fire under [`CatchUp::Skip`] and still count as on time, in ms.
pub const MISFIRE_GRACE_MS: u64 = 60_000;

/// What to do with a tick while the job of the previous tick has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Overlap {
    /// Enqueue anyway (Celery Beat's and cron's behaviour). The default.
    #[default]
    Allow,
    /// Skip the tick while the previous tick's job is still waiting, scheduled, retrying or leased.
    Skip,
}

/// Where a schedule's definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleOrigin {
    /// A `[[schedules]]` table of the config file: re-applied at every start; the API may only enable, disable or
    /// trigger it.
    Config,
    /// Created through a door at run time.
    Api,
}

/// The job each firing enqueues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledJob {
    /// Target queue.
    pub queue: QueueName,
    /// Opaque payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Priority; the default when unset.
    pub priority: Option<Priority>,
    /// Reservations before dead-lettering; the queue's default when unset.
    pub max_attempts: Option<u32>,
    /// Lease per reservation in ms; the queue's default when unset.
    pub lease_ms: Option<u64>,
    /// The job is dropped if not reserved within this many ms of its tick.
    pub ttl_ms: Option<u64>,
    /// Headers; each firing adds `schedule` (the name) and `schedule_tick` (the tick in ms).
    pub headers: BTreeMap<String, String>,
}

/// A schedule's definition: everything a user sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// Unique name.
    pub name: String,
    /// The job to enqueue.
    pub job: ScheduledJob,
    /// When.
    pub trigger: Trigger,
    /// Missed-tick policy.
    pub catch_up: CatchUp,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Each job becomes ready up to this many ms after its tick (uniformly random), spreading load.
    pub jitter_ms: u64,
    /// No tick before this instant (also the alignment origin of an interval).
    pub start_at: Option<TimestampMs>,
    /// No tick after this instant.
    pub end_at: Option<TimestampMs>,
    /// Disabled schedules do not fire (trigger-now still works).
    pub enabled: bool,
    /// Config file or API.
    pub origin: ScheduleOrigin,
}

impl ScheduledJob {
    /// A job of `payload` to `queue` with every other option at the queue's default.
    pub fn new(queue: QueueName, payload: Vec<u8>) -> Self {
        Self {
            queue,
            payload,
            priority: None,
            max_attempts: None,
            lease_ms: None,
            ttl_ms: None,
            headers: BTreeMap::new(),
        }
    }
}

impl ScheduleDef {
    /// An enabled API schedule with every option at its default: catch-up by [`CatchUp::default_for`] the trigger,
    /// overlap allowed, no jitter, no start or end.
    pub fn new(name: impl Into<String>, job: ScheduledJob, trigger: Trigger) -> Self {
        Self {
            name: name.into(),
            job,
            catch_up: CatchUp::default_for(&trigger),
            trigger,
            overlap: Overlap::Allow,
            jitter_ms: 0,
            start_at: None,
            end_at: None,
            enabled: true,
            origin: ScheduleOrigin::Api,
        }
    }

    /// Checks everything that needs no engine state; errors name the field.
    pub fn validate(&self) -> Result<CompiledTrigger, SpoolError> {
        validate_schedule_name(&self.name)?;
        if let CatchUp::All { limit: 0 } = self.catch_up {
            return Err(SpoolError::invalid("catch_up_limit: must be at least 1"));
        }
        if let (Some(start), Some(end)) = (self.start_at, self.end_at) {
            if end <= start {
                return Err(SpoolError::invalid("end: must be after start"));
            }
        }
        if self.jitter_ms > 86_400_000 {
            return Err(SpoolError::invalid("jitter: must be at most 1 day"));
        }
        if self.job.ttl_ms == Some(0) {
            return Err(SpoolError::invalid("ttl: must be more than 0"));
        }
        self.compile()
    }

    /// The compiled trigger (intervals align to `start_at`, or the epoch).
    pub fn compile(&self) -> Result<CompiledTrigger, SpoolError> {
        self.trigger.compile(self.start_at.unwrap_or(0))
    }

    /// Whether `other` ticks differently (trigger or window), which restarts the tick count.
    pub fn ticks_differ(&self, other: &ScheduleDef) -> bool {
        self.trigger != other.trigger || self.start_at != other.start_at || self.end_at != other.end_at
    }

    /// The `since` of a schedule created or re-timed at `now`: ticks before the change are owed to no one, except a
    /// one-off's own tick, which a definition written after it still means to run (by the catch-up policy).
    pub fn owed_from(&self, now: TimestampMs) -> TimestampMs {
        match self.trigger {
            Trigger::Once { at } => now.min(at.saturating_sub(1)),
            _ => now,
        }
    }

    /// The first tick strictly after `t` inside the window.
    pub fn next_tick(&self, trigger: &CompiledTrigger, t: TimestampMs) -> Option<TimestampMs> {
        let from = match self.start_at {
            Some(start) if t < start => start - 1,
            _ => t,
        };
        let next = trigger.next_after(from)?;
        self.end_at.is_none_or(|end| next <= end).then_some(next)
    }
}

/// What one firing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FiringKind {
    /// A tick enqueued this job.
    Enqueued(JobId),
    /// `trigger-now` enqueued this job (outside the tick sequence).
    Manual(JobId),
    /// The tick was skipped because the previous tick's job had not finished.
    SkippedOverlap(JobId),
    /// Ticks were missed (catch-up policy); `tick` is the latest of them.
    Missed(u64),
}

/// One entry of a schedule's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// The tick (for a manual run: when it was asked for).
    pub tick: TimestampMs,
    /// When the broker recorded it.
    pub at: TimestampMs,
    /// Ticks dropped by the catch-up policy just before this one.
    pub missed_before: u64,
    /// What happened.
    pub kind: FiringKind,
}

/// A schedule's durable progress, written in the same batch as the job each firing enqueues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleProgress {
    /// Ticks at or before this instant never fire: when the schedule was created, enabled, or its ticks changed.
    pub since: TimestampMs,
    /// The latest tick handled (fired, skipped or missed); ticks at or before it never fire again.
    pub last_tick: Option<TimestampMs>,
    /// The job of the latest tick that enqueued one (for the overlap policy).
    pub last_job: Option<JobId>,
    /// The latest firings, oldest first, at most [`HISTORY_LEN`].
    pub history: VecDeque<Firing>,
}

impl ScheduleProgress {
    /// Ticks strictly after this instant are still to be handled.
    pub fn cursor(&self) -> TimestampMs {
        self.last_tick.unwrap_or(0).max(self.since)
    }

    /// Appends a firing, dropping the oldest beyond [`HISTORY_LEN`].
    pub fn record(&mut self, firing: Firing) {
        self.history.push_back(firing);
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }
}

/// A stored schedule: definition and progress, one record, so a firing's progress and its job commit together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// What the user set.
    pub def: ScheduleDef,
    /// What has fired.
    pub progress: ScheduleProgress,
    /// For a schedule from the config file, the `enabled` the file last set: a runtime enable or disable lasts until
    /// the file's own flag changes. `None` for API schedules, and for records written before this field was kept
    /// (the definition's flag stands in for it).
    pub file_enabled: Option<bool>,
}

/// The unique key of the job a tick enqueues: a second firing of the same tick (however it came about) finds the
/// first job instead of creating another.
pub fn tick_unique_key(name: &str, tick: TimestampMs) -> String {
    format!("schedule:{name}:{tick}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_one_off_still_runs_and_a_missed_recurring_tick_is_skipped_by_default() {
        let def = |trigger| ScheduleDef::new("s", ScheduledJob::new(QueueName::new("q").unwrap(), vec![]), trigger);
        assert_eq!(def(Trigger::Once { at: 5 }).catch_up, CatchUp::One);
        assert_eq!(def(Trigger::Every { every_ms: 5 }).catch_up, CatchUp::Skip);
        let cron = def(Trigger::Cron {
            expr: "* * * * *".into(),
            tz: "UTC".into(),
        });
        assert_eq!(
            (cron.catch_up, cron.overlap, cron.origin),
            (CatchUp::Skip, Overlap::Allow, ScheduleOrigin::Api)
        );
    }

    fn ms(rfc3339: &str) -> TimestampMs {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis() as u64
    }

    fn cron(expr: &str, tz: &str) -> CompiledTrigger {
        Trigger::Cron {
            expr: expr.into(),
            tz: tz.into(),
        }
        .compile(0)
        .unwrap()
    }

    fn ticks(t: &CompiledTrigger, from: &str, to: &str) -> Vec<TimestampMs> {
        let (mut at, end) = (ms(from), ms(to));
        let mut out = Vec::new();
        while let Some(next) = t.next_after(at).filter(|&n| n <= end) {
            out.push(next);
            at = next;
        }
        out
    }

    #[test]
    fn cron_in_new_york_across_dst() {
        let daily = cron("30 2 * * *", "America/New_York");
        // Spring forward: 02:30 does not exist on 2026-03-08; the run happens once, at 03:00 EDT.
        let spring = ticks(&daily, "2026-03-07T00:00:00-05:00", "2026-03-09T12:00:00-04:00");
        assert_eq!(
            spring,
            [
                ms("2026-03-07T02:30:00-05:00"),
                ms("2026-03-08T03:00:00-04:00"),
                ms("2026-03-09T02:30:00-04:00")
            ]
        );
        // Fall back: 01:30 happens twice on 2026-11-01; the run happens once, at the first.
        let early = cron("30 1 * * *", "America/New_York");
        let fall = ticks(&early, "2026-10-31T12:00:00-04:00", "2026-11-02T12:00:00-05:00");
        assert_eq!(fall, [ms("2026-11-01T01:30:00-04:00"), ms("2026-11-02T01:30:00-05:00")]);
    }

    #[test]
    fn seconds_aliases_and_last_day() {
        let every_second = cron("* * * * * *", "UTC");
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        let hourly = cron("@hourly", "UTC");
        assert_eq!(
            hourly.next_after(ms("2026-01-01T10:15:00Z")),
            Some(ms("2026-01-01T11:00:00Z"))
        );
        let last_day = cron("0 0 L * *", "UTC");
        assert_eq!(
            last_day.next_after(ms("2026-02-01T00:00:00Z")),
            Some(ms("2026-02-28T00:00:00Z"))
        );
        let second_monday = cron("0 9 * * MON#2", "Europe/Paris");
        assert_eq!(
            second_monday.next_after(ms("2026-03-01T00:00:00Z")),
            Some(ms("2026-03-09T09:00:00+01:00"))
        );
    }

    #[test]
    fn intervals_align_and_bad_triggers_name_the_field() {
        let every = Trigger::Every { every_ms: 30_000 }.compile(0).unwrap();
        assert_eq!(every.next_after(45_000), Some(60_000));
        assert_eq!(every.next_after(60_000), Some(90_000));
        let e = Trigger::Every { every_ms: 0 }.compile(0).unwrap_err();
        assert!(e.message.starts_with("every:"), "{e}");
        let e = Trigger::Cron {
            expr: "61 * * * *".into(),
            tz: "UTC".into(),
        }
        .compile(0)
        .unwrap_err();
        assert!(e.message.starts_with("cron:"), "{e}");
        let e = Trigger::Cron {
            expr: "* * * * *".into(),
            tz: "Mars/Olympus".into(),
        }
        .compile(0)
        .unwrap_err();
        assert!(
            e.message.starts_with("timezone:") && e.message.contains("Mars/Olympus"),
            "{e}"
        );
        assert!(validate_schedule_name("bad name")
            .unwrap_err()
            .message
            .starts_with("name:"));
    }
}
