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
///
/// Its stored form (`Serialize`/`Deserialize`) is one flat list of fields in a fixed order, whatever
/// the in-memory shape: a store writes it with a positional format (postcard), so the order is the format.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Unique id (UUIDv7).
    pub id: JobId,
    /// The queue the job lives in.
    pub queue: QueueName,
    /// Opaque bytes; Spool never looks inside. Not part of the job's serialised form: a store writes it after the
    /// job's other fields, so that jobs can be loaded without it (see `payload_loaded`).
    pub payload: Vec<u8>,
    /// Whether `payload` holds the payload. Jobs a store loads at start-up leave their payloads on disk (a large
    /// backlog costs memory only for what is scheduled, not for what is carried) and have this false, with `payload`
    /// empty, until the engine reads the payload back to hand the job out. Every job the engine hands out has it.
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
    /// Where the job is in its life.
    pub state: JobState,
    /// The current reservation, when `state` is `Leased`.
    pub lease: Option<Lease>,
    /// The fields most jobs never set, behind one pointer so that a job without them is 96 bytes smaller (a 224-byte
    /// allocation behind the engine's `Arc` instead of 320): a backlog of millions is mostly such jobs. `None` while
    /// none is set; read them through the accessors and change them with [`Job::update_extra`], which keeps that so.
    pub extra: Option<Box<JobExtra>>,
}

/// A job's rarely set fields (see [`Job::extra`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobExtra {
    /// Dedup key: while this job is live (and until `unique_until`), enqueues with the same key return this job.
    pub unique_key: Option<String>,
    /// When the unique key is released even if the job is still live (ms since epoch); `None` holds it for the
    /// job's whole life.
    pub unique_until: Option<TimestampMs>,
    /// Free-form string metadata.
    pub headers: BTreeMap<String, String>,
    /// The last failure: a nack's message, "lease expired", or why it was dead-lettered.
    pub last_error: Option<String>,
    /// When the job entered the dead-letter queue.
    pub dead_at: Option<TimestampMs>,
}

impl JobExtra {
    /// Compared with the default rather than field by field, so that a field added later cannot be forgotten here.
    fn is_unset(&self) -> bool {
        *self == Self::default()
    }

    /// The form [`Job::extra`] keeps: boxed if any field is set, else `None`.
    pub fn boxed(self) -> Option<Box<JobExtra>> {
        (!self.is_unset()).then(|| Box::new(self))
    }
}

static NO_HEADERS: BTreeMap<String, String> = BTreeMap::new();

impl Job {
    /// See [`JobExtra::unique_key`].
    pub fn unique_key(&self) -> Option<&str> {
        self.extra.as_ref()?.unique_key.as_deref()
    }

    /// See [`JobExtra::unique_until`].
    pub fn unique_until(&self) -> Option<TimestampMs> {
        self.extra.as_ref()?.unique_until
    }

    /// See [`JobExtra::headers`].
    pub fn headers(&self) -> &BTreeMap<String, String> {
        self.extra.as_ref().map_or(&NO_HEADERS, |e| &e.headers)
    }

    /// See [`JobExtra::last_error`].
    pub fn last_error(&self) -> Option<&str> {
        self.extra.as_ref()?.last_error.as_deref()
    }

    /// See [`JobExtra::dead_at`].
    pub fn dead_at(&self) -> Option<TimestampMs> {
        self.extra.as_ref()?.dead_at
    }

    /// Changes the rarely set fields, freeing them when `change` leaves none set.
    pub fn update_extra(&mut self, change: impl FnOnce(&mut JobExtra)) {
        let extra = self.extra.get_or_insert_default();
        change(extra);
        if extra.is_unset() {
            self.extra = None;
        }
    }
}

/// A job's stored fields, in their stored order; the payload is not among them (a store writes it after them).
/// One list for both directions, so that writing and reading cannot disagree on the order: borrowed to write
/// (`JobRecord<&QueueName, Option<&str>, &BTreeMap<..>>`, so that encoding a job copies nothing), owned to read.
#[derive(Serialize, Deserialize)]
struct JobRecord<Q, S, H> {
    id: JobId,
    queue: Q,
    priority: Priority,
    created_at: TimestampMs,
    enqueued_at: TimestampMs,
    seq: u64,
    run_at: Option<TimestampMs>,
    expires_at: Option<TimestampMs>,
    attempts: u32,
    max_attempts: u32,
    lease_ms: u64,
    retry: RetryPolicy,
    unique_key: S,
    unique_until: Option<TimestampMs>,
    headers: H,
    last_error: S,
    state: JobState,
    lease: Option<Lease>,
    dead_at: Option<TimestampMs>,
}

type OwnedJobRecord = JobRecord<QueueName, Option<String>, BTreeMap<String, String>>;

impl Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JobRecord {
            id: self.id,
            queue: &self.queue,
            priority: self.priority,
            created_at: self.created_at,
            enqueued_at: self.enqueued_at,
            seq: self.seq,
            run_at: self.run_at,
            expires_at: self.expires_at,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            lease_ms: self.lease_ms,
            retry: self.retry,
            unique_key: self.unique_key(),
            unique_until: self.unique_until(),
            headers: self.headers(),
            last_error: self.last_error(),
            state: self.state,
            lease: self.lease,
            dead_at: self.dead_at(),
        }
        .serialize(serializer)
    }
}

/// A deserialised job has no payload (`payload_loaded` false): see [`Job::payload`].
impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = OwnedJobRecord::deserialize(deserializer)?;
        Ok(Job {
            id: r.id,
            queue: r.queue,
            payload: Vec::new(),
            payload_loaded: false,
            priority: r.priority,
            created_at: r.created_at,
            enqueued_at: r.enqueued_at,
            seq: r.seq,
            run_at: r.run_at,
            expires_at: r.expires_at,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            lease_ms: r.lease_ms,
            retry: r.retry,
            state: r.state,
            lease: r.lease,
            extra: JobExtra {
                unique_key: r.unique_key,
                unique_until: r.unique_until,
                headers: r.headers,
                last_error: r.last_error,
                dead_at: r.dead_at,
            }
            .boxed(),
        })
    }
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

    /// The engine keeps each job in an `Arc` (two counters, 16 bytes, before the job). jemalloc's size classes near
    /// here are 192, 224, 256 and 320 bytes: a field added to `Job` that pushes it past 208 bytes costs every job of a
    /// backlog 32 bytes or more, and belongs in `JobExtra` unless most jobs set it.
    #[test]
    fn a_job_without_extras_fits_a_224_byte_allocation() {
        assert!(std::mem::size_of::<Job>() + 16 <= 224);
    }

    #[test]
    fn extras_are_freed_once_unset() {
        let mut job = Job {
            id: JobId::generate(1),
            queue: QueueName::new("q").unwrap(),
            payload: Vec::new(),
            payload_loaded: true,
            priority: Priority::DEFAULT,
            created_at: 1,
            enqueued_at: 1,
            seq: 1,
            run_at: None,
            expires_at: None,
            attempts: 0,
            max_attempts: 1,
            lease_ms: 1,
            retry: RetryPolicy::default(),
            state: JobState::Ready,
            lease: None,
            extra: None,
        };
        assert_eq!((job.headers().len(), job.last_error()), (0, None));
        // Each field alone keeps the box, reads back, and frees it once unset.
        let mut alone = |field: &str, set: fn(&mut JobExtra), read: fn(&Job) -> bool, unset: fn(&mut JobExtra)| {
            job.update_extra(set);
            assert!(job.extra.is_some() && read(&job), "{field}");
            job.update_extra(unset);
            assert_eq!(job.extra, None, "{field}");
        };
        alone(
            "unique_key",
            |e| e.unique_key = Some("k".into()),
            |j| j.unique_key() == Some("k"),
            |e| e.unique_key = None,
        );
        alone(
            "unique_until",
            |e| e.unique_until = Some(7),
            |j| j.unique_until() == Some(7),
            |e| e.unique_until = None,
        );
        alone(
            "headers",
            |e| _ = e.headers.insert("h".into(), "v".into()),
            |j| j.headers().get("h").map(String::as_str) == Some("v"),
            |e| e.headers.clear(),
        );
        alone(
            "last_error",
            |e| e.last_error = Some("x".into()),
            |j| j.last_error() == Some("x"),
            |e| e.last_error = None,
        );
        alone(
            "dead_at",
            |e| e.dead_at = Some(9),
            |j| j.dead_at() == Some(9),
            |e| e.dead_at = None,
        );
        job.update_extra(|e| e.last_error = Some("boom".into()));
        assert_eq!(job.last_error(), Some("boom"));
        job.update_extra(|e| e.dead_at = Some(5));
        assert_eq!((job.last_error(), job.dead_at()), (Some("boom"), Some(5)));
        job.update_extra(|e| e.last_error = None);
        assert!(job.extra.is_some(), "dead_at is still set");
        job.update_extra(|e| e.dead_at = None);
        assert_eq!(job.extra, None);
        assert_eq!(JobExtra::default().boxed(), None);
    }

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
