//! The job and its life: `Scheduled`/`Retry` → `Ready` → `Leased` → acked (deleted) or back to `Retry`, or `Dead`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Priority, QueueName, RetryPolicy, SpoolError, TimestampMs};

/// A job's id: a UUIDv7, so ids sort by creation time and index well.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh id for a job created at `now_ms`. The clock is injected so ids follow the broker's notion of time.
    pub fn generate(now_ms: TimestampMs) -> Self {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, now_ms / 1_000, ((now_ms % 1_000) * 1_000_000) as u32);
        JobId(Uuid::new_v7(ts))
    }

    /// The id's 16 bytes, big-endian (so byte order is time order).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        JobId(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for JobId {
    type Err = SpoolError;
    fn from_str(s: &str) -> Result<Self, SpoolError> {
        Uuid::parse_str(s)
            .map(JobId)
            .map_err(|_| SpoolError::invalid(format!("{s:?} is not a job id (a UUID)")))
    }
}

/// Where a job is in its life. Acked, cancelled, purged and expired jobs are deleted, so they have no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for its `run_at` (a delayed job).
    Scheduled,
    /// Waiting to be reserved.
    Ready,
    /// Reserved by a worker under a lease.
    Leased,
    /// Failed, waiting out its backoff before it is ready again.
    Retry,
    /// In the dead-letter queue: attempts exhausted, or sent there by a nack.
    Dead,
}

impl JobState {
    /// The state's name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Leased => "leased",
            JobState::Retry => "retry",
            JobState::Dead => "dead",
        }
    }
}

/// A reservation. Ack, nack and extend must present `token`; a reservation that expired and was handed out again
/// has a different token, so a late worker cannot complete a job that someone else now holds (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Random, non-zero, never reused for another reservation (64 random bits; not a counter, because a counter
    /// would restart after a crash and could hand a new worker an old worker's token).
    pub token: u64,
    /// When the lease ends unless extended, in ms since the epoch.
    pub expires_at: TimestampMs,
}

/// A job: an opaque payload with the options that govern its delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (UUIDv7).
    pub id: JobId,
    /// The queue the job lives in.
    pub queue: QueueName,
    /// Opaque bytes; Spool never looks inside. Not part of the job's serialised form: a store writes it after the
    /// job's other fields, so that jobs can be loaded without it (see `payload_loaded`).
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// Whether `payload` holds the payload. Jobs a store loads at start-up leave their payloads on disk (a large
    /// backlog costs memory only for what is scheduled, not for what is carried) and have this false, with `payload`
    /// empty, until the engine reads the payload back to hand the job out. Every job the engine hands out has it.
    #[serde(skip)]
    pub payload_loaded: bool,
    /// Higher is reserved first within the queue.
    pub priority: Priority,
    /// When the job was first accepted (ms since epoch).
    pub created_at: TimestampMs,
    /// When the job last entered the queue (first enqueue, retry, replay), in ms since epoch.
    pub enqueued_at: TimestampMs,
    /// Enqueue sequence number: FIFO order among jobs of equal priority, across restarts.
    pub seq: u64,
    /// When a delayed or retrying job becomes ready (ms since epoch).
    pub run_at: Option<TimestampMs>,
    /// A job still unreserved at this time is dropped and counted as expired, never run.
    pub expires_at: Option<TimestampMs>,
    /// How many times the job has been reserved.
    pub attempts: u32,
    /// Reservations allowed before the job is dead-lettered.
    pub max_attempts: u32,
    /// Lease length for each reservation, in ms.
    pub lease_ms: u64,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Dedup key: while this job is live (and until `unique_until`), enqueues with the same key return this job.
    pub unique_key: Option<String>,
    /// When the unique key is released even if the job is still live (ms since epoch); `None` holds it for the
    /// job's whole life.
    pub unique_until: Option<TimestampMs>,
    /// Free-form string metadata.
    pub headers: BTreeMap<String, String>,
    /// The last failure: a nack's message, "lease expired", or why it was dead-lettered.
    pub last_error: Option<String>,
    /// Where the job is in its life.
    pub state: JobState,
    /// The current reservation, when `state` is `Leased`.
    pub lease: Option<Lease>,
    /// When the job entered the dead-letter queue.
    pub dead_at: Option<TimestampMs>,
}

/// What a producer may say about a job; `None` takes the queue's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOptions {
    /// Priority within the queue (default 0).
    pub priority: Option<Priority>,
    /// Run no earlier than this time (ms since epoch). Takes precedence over `delay_ms`.
    pub run_at: Option<TimestampMs>,
    /// Run no earlier than this many ms from now.
    pub delay_ms: Option<u64>,
    /// Drop the job if not reserved by this time (ms since epoch). Takes precedence over `ttl_ms`.
    pub expires_at: Option<TimestampMs>,
    /// Drop the job if not reserved within this many ms.
    pub ttl_ms: Option<u64>,
    /// Reservations allowed before dead-lettering.
    pub max_attempts: Option<u32>,
    /// Lease length per reservation, in ms.
    pub lease_ms: Option<u64>,
    /// Backoff override for this job.
    pub retry: Option<RetryPolicy>,
    /// Dedup key.
    pub unique_key: Option<String>,
    /// How long the dedup key is held at most, in ms.
    pub unique_ttl_ms: Option<u64>,
    /// String metadata.
    pub headers: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_time_ordered() {
        let a = JobId::generate(1_700_000_000_000);
        let b = JobId::generate(1_700_000_000_001);
        assert!(a < b);
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("nope".parse::<JobId>().is_err());
    }
}
