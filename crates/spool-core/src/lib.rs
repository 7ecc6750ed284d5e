//! Spool's domain model: the nouns every other crate speaks — [`JobId`], [`QueueName`], [`Priority`], [`Job`] and its
//! [`JobState`], the [`Lease`] with its fencing token, the [`RetryPolicy`], periodic [`Schedule`]s and their [`Trigger`]s, the injectable [`Clock`], and the stable
//! [`ErrorCode`]s that travel verbatim to clients of every door.
//!
//! This crate does no I/O and must never depend on tokio's I/O, sled, tonic or axum: it is the pure vocabulary that the
//! store persists and the engine orchestrates. Invariants it guards: a `QueueName` is always valid, a `Priority` is
//! always 0–9, a `JobId` is always a UUIDv7 (so ids sort by creation time).

mod clock;
mod error;
mod job;
mod names;
mod retry;
mod schedule;

pub use clock::{Clock, ManualClock, SystemClock, TimestampMs};
pub use error::{ErrorCode, SpoolError};
pub use job::{Job, JobExtra, JobId, JobOptions, JobState, Lease};
pub use names::{Priority, QueueName, MAX_QUEUE_NAME_LEN};
pub use retry::{Jitter, RetryPolicy};
pub use schedule::{
    tick_unique_key, validate_schedule_name, CatchUp, CompiledTrigger, Firing, FiringKind, Overlap, Schedule,
    ScheduleDef, ScheduleOrigin, ScheduleProgress, ScheduledJob, Trigger, DEFAULT_CATCH_UP_LIMIT, HISTORY_LEN,
    MAX_SCHEDULE_NAME_LEN, MISFIRE_GRACE_MS,
};
