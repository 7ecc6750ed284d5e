//! `[[schedules]]` tables of the config file, and their checks. Errors read `schedules.NAME: FIELD: problem`, so with
//! the file name the config loader puts in front, an operator learns the file, the schedule and the problem at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use spool_core::{
    validate_schedule_name, CatchUp, Overlap, Priority, QueueName, ScheduleDef, ScheduleOrigin, ScheduledJob,
    SpoolError, TimestampMs, Trigger, DEFAULT_CATCH_UP_LIMIT,
};
use spool_engine::EngineConfig;

/// The catch-up policy as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUpSpec {
    /// Drop ticks missed during downtime (default for cron and interval schedules).
    Skip,
    /// Run once for them (default for `at` one-off schedules).
    One,
    /// Run every one of them, up to `catch_up_limit`.
    All,
}

/// The overlap policy as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapSpec {
    /// Enqueue every tick (default).
    Allow,
    /// Skip a tick while the previous tick's job is pending or leased.
    Skip,
}

/// One `[[schedules]]` table. Exactly one of `cron`, `every` and `at` is required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique name (letters, digits, `_ - . :`).
    pub name: String,
    /// Target queue.
    pub queue: String,
    /// The job's payload, as a UTF-8 string. Default empty.
    #[serde(default)]
    pub payload: String,
    /// A cron expression: 5 fields, or 6 with seconds first; `@hourly`, `@daily`, …; `L` and `#`.
    pub cron: Option<String>,
    /// IANA time zone of `cron`. Default `UTC`.
    pub timezone: Option<String>,
    /// A fixed interval such as `"30s"`, aligned to `start` (or the Unix epoch).
    pub every: Option<String>,
    /// A one-off run at this RFC 3339 time, e.g. `"2026-12-31T23:59:00Z"`.
    pub at: Option<String>,
    /// Job priority 0–9. Default 0.
    pub priority: Option<u8>,
    /// Reservations before dead-lettering. Default: the queue's.
    pub max_attempts: Option<u32>,
    /// Lease per reservation, e.g. `"5m"`. Default: the queue's.
    pub lease: Option<String>,
    /// Drop a job not reserved within this long of its tick, e.g. `"1h"`. Default: never.
    pub ttl: Option<String>,
    /// Job headers. Each firing adds `schedule` and `schedule_tick`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `skip`, `one` or `all`: what to do with ticks missed while the daemon was down.
    pub catch_up: Option<CatchUpSpec>,
    /// With `catch_up = "all"`: most missed ticks run after one outage (the latest ones). Default 100.
    pub catch_up_limit: Option<u32>,
    /// `allow` (default) or `skip`.
    pub overlap: Option<OverlapSpec>,
    /// Delay each job by a random 0..jitter after its tick, e.g. `"30s"`. Default none.
    pub jitter: Option<String>,
    /// No tick before this RFC 3339 time.
    pub start: Option<String>,
    /// No tick after this RFC 3339 time.
    pub end: Option<String>,
    /// Whether the schedule fires. Default true.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

fn duration_ms(field: &str, text: &str) -> Result<u64, SpoolError> {
    let d: Duration = humantime::parse_duration(text).map_err(|e| {
        SpoolError::invalid(format!(
            "{field}: {text:?} is not a duration like \"30s\" or \"5m\": {e}"
        ))
    })?;
    u64::try_from(d.as_millis())
        .map_err(|_| SpoolError::invalid(format!("{field}: {text:?} is longer than this daemon can count in ms")))
}

fn instant_ms(field: &str, text: &str) -> Result<TimestampMs, SpoolError> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        SpoolError::invalid(format!(
            "{field}: {text:?} is not an RFC 3339 time like \"2026-12-31T23:59:00Z\": {e}"
        ))
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| SpoolError::invalid(format!("{field}: {text:?} is before 1970")))
}

impl ScheduleSpec {
    /// The definition this table describes; errors name the field. Checks everything that needs no broker (the
    /// broker checks the queue's existence and the job limits when the schedule is applied).
    pub fn to_def(&self) -> Result<ScheduleDef, SpoolError> {
        validate_schedule_name(&self.name)?;
        let queue = QueueName::new(&self.queue).map_err(|e| SpoolError::invalid(format!("queue: {}", e.message)))?;
        let trigger = match (&self.cron, &self.every, &self.at) {
            (Some(expr), None, None) => Trigger::Cron {
                expr: expr.clone(),
                tz: self.timezone.clone().unwrap_or_else(|| "UTC".into()),
            },
            (None, Some(every), None) => Trigger::Every {
                every_ms: duration_ms("every", every)?,
            },
            (None, None, Some(at)) => Trigger::Once {
                at: instant_ms("at", at)?,
            },
            (None, None, None) => return Err(SpoolError::invalid("cron: one of cron, every or at is required")),
            _ => return Err(SpoolError::invalid("cron: give only one of cron, every and at")),
        };
        if self.timezone.is_some() && self.cron.is_none() {
            return Err(SpoolError::invalid("timezone: only applies to cron schedules"));
        }
        let priority = self
            .priority
            .map(|p| Priority::new(i64::from(p)))
            .transpose()
            .map_err(|e| SpoolError::invalid(format!("priority: {}", e.message)))?;
        if self.catch_up_limit.is_some() && self.catch_up != Some(CatchUpSpec::All) {
            return Err(SpoolError::invalid(
                "catch_up_limit: only applies with catch_up = \"all\"",
            ));
        }
        let catch_up = match self.catch_up {
            None => CatchUp::default_for(&trigger),
            Some(CatchUpSpec::Skip) => CatchUp::Skip,
            Some(CatchUpSpec::One) => CatchUp::One,
            Some(CatchUpSpec::All) => CatchUp::All {
                limit: self.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT),
            },
        };
        let def = ScheduleDef {
            name: self.name.clone(),
            job: ScheduledJob {
                queue,
                payload: self.payload.clone().into_bytes(),
                priority,
                max_attempts: self.max_attempts,
                lease_ms: self.lease.as_deref().map(|l| duration_ms("lease", l)).transpose()?,
                ttl_ms: self.ttl.as_deref().map(|t| duration_ms("ttl", t)).transpose()?,
                headers: self.headers.clone(),
            },
            trigger,
            catch_up,
            overlap: match self.overlap.unwrap_or(OverlapSpec::Allow) {
                OverlapSpec::Allow => Overlap::Allow,
                OverlapSpec::Skip => Overlap::Skip,
            },
            jitter_ms: self
                .jitter
                .as_deref()
                .map(|j| duration_ms("jitter", j))
                .transpose()?
                .unwrap_or(0),
            start_at: self.start.as_deref().map(|s| instant_ms("start", s)).transpose()?,
            end_at: self.end.as_deref().map(|s| instant_ms("end", s)).transpose()?,
            enabled: self.enabled,
            origin: ScheduleOrigin::Config,
        };
        def.validate()?;
        Ok(def)
    }
}

/// Checks every `[[schedules]]` table and returns their definitions. The error names the schedule (by name, or by
/// position when the name itself is bad) and the field: `schedules.nightly: cron: invalid expression …`.
pub fn validate_specs(specs: &[ScheduleSpec]) -> Result<Vec<ScheduleDef>, String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut defs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let label = if validate_schedule_name(&spec.name).is_ok() {
            format!("schedules.{}", spec.name)
        } else {
            format!("schedules[{i}]")
        };
        if let Some(first) = seen.insert(&spec.name, i) {
            return Err(format!(
                "{label}: name: duplicate schedule name (tables {first} and {i}, counting from 0)"
            ));
        }
        defs.push(spec.to_def().map_err(|e| format!("{label}: {}", e.message))?);
    }
    Ok(defs)
}

/// With queue auto-creation off, every schedule must target a queue the config declares; `check-config` calls this
/// so a typo in a queue name fails before the daemon starts.
pub fn check_queues(defs: &[ScheduleDef], engine: &EngineConfig) -> Result<(), String> {
    if engine.auto_create_queues {
        return Ok(());
    }
    match defs.iter().find(|d| !engine.queues.contains_key(&d.job.queue)) {
        Some(d) => Err(format!(
            "schedules.{}: queue: queue {} does not exist and server.auto_create_queues is off",
            d.name, d.job.queue
        )),
        None => Ok(()),
    }
}
