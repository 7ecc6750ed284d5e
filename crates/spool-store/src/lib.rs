//! Spool's storage layer: the [`Store`] trait the engine writes through, the durable [`SledStore`] (the default) and
//! the [`MemStore`] (tests, and `durability = "none"` experiments).
//!
//! The engine keeps its indexes in memory and uses the store as a durable record: it [`Store::load`]s everything
//! once at start, then [`Store::submit`]s batches of [`Mutation`]s in the order it made them. A store must apply
//! batches in submission order, and must resolve a batch's [`Commit`] only once the batch is as durable as the
//! configured [`Durability`] promises. Every sled detail (key layout, encoding, group commit, fsync) stays inside this
//! crate so that the backend can be replaced; this crate must never depend on a protocol crate.

mod codec;
mod error;
mod mem;
mod sled_store;
mod wal;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_core::{Job, JobId, QueueName, Schedule};
use tokio::sync::oneshot;

pub use error::StoreError;
pub use mem::MemStore;
pub use sled_store::{SledConfig, SledStore, CHECKPOINT_QUEUE};

/// How durable a write is before its [`Commit`] resolves (Redis's `appendfsync`, by another name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed and fsynced before the caller hears OK. One flush serves every batch waiting on it (group commit).
    Always,
    /// Written at once, fsynced at least this often: a power cut loses at most one period of acknowledged writes.
    Interval(Duration),
    /// Written at once, fsynced when the store sees fit: fast, and a power cut may lose recent writes.
    None,
}

/// Durable, per-queue state other than its jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// The queue.
    pub name: QueueName,
    /// Whether reservations from the queue are suspended.
    pub paused: bool,
}

/// One change to the durable record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Insert or replace a job. Shared with the engine's state, which keeps the same job: a put costs no copy. A job
    /// without its payload (`payload_loaded` false) keeps the payload already stored.
    PutJob(Arc<Job>),
    /// Remove a job (acked, cancelled, purged, expired).
    DeleteJob(JobId),
    /// Insert or replace a queue's record.
    PutQueue(QueueRecord),
    /// Insert or replace a schedule (definition and progress together, so a firing's progress commits in the same
    /// batch as its job).
    PutSchedule(Box<Schedule>),
    /// Remove a schedule, by name.
    DeleteSchedule(String),
}

/// See [`Store::set_checkpoint_listener`].
pub type CheckpointListener = Box<dyn Fn(&[JobId]) + Send + Sync>;

/// A store's [`CheckpointListener`], shared with the thread that calls it.
#[derive(Default, Clone)]
struct ListenerSlot(Arc<Mutex<Option<CheckpointListener>>>);

impl ListenerSlot {
    fn set(&self, listener: CheckpointListener) {
        *self.0.lock().expect("checkpoint listener lock") = Some(listener);
    }

    fn is_set(&self) -> bool {
        self.0.lock().expect("checkpoint listener lock").is_some()
    }

    /// Tells the listener, if any. (The engine's listener only queues the ids; it chunks its own work.)
    fn notify(&self, ids: &[JobId]) {
        if let Some(listener) = &*self.0.lock().expect("checkpoint listener lock") {
            listener(ids);
        }
    }
}

impl Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerSlot")
    }
}

/// Everything the store holds, as read at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every stored job, in id order, without payloads. Each in the allocation the engine keeps it in: a million
    /// jobs moved out of one big vector would need that vector's 300 MB on top of their own at start-up.
    pub jobs: Vec<Arc<Job>>,
    /// Every stored queue record.
    pub queues: Vec<QueueRecord>,
    /// Every stored schedule, in name order.
    pub schedules: Vec<Schedule>,
}

/// A durable record of jobs, queues and schedules.
pub trait Store: Send + Sync + Debug + 'static {
    /// Reads everything stored, jobs without their payloads (`payload_loaded` false). Called once, before the first
    /// `submit`.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// The payload of a job that `load` returned or a checkpoint reported (see `set_checkpoint_listener`), or `None`
    /// if no such job is stored. A job's payload is written by each put that carries it (`payload_loaded`) and
    /// removed with the job.
    fn read_payload(&self, id: &JobId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Queues `batch` to be applied atomically after every batch submitted before it. The returned [`Commit`]
    /// resolves when the batch is durable as configured; dropping it does not cancel the write.
    fn submit(&self, batch: Vec<Mutation>) -> Commit;

    /// Blocks until everything submitted so far is applied and fsynced, whatever the durability setting.
    fn flush(&self) -> Result<(), StoreError>;

    /// Registers (replacing any earlier one) the function told, after each checkpoint, the ids of jobs whose records (payload included) it made
    /// durable where `read_payload` finds them, so that the engine may drop those payloads from memory. Called from
    /// the store's own thread, never while `submit` is running. A store without checkpoints never calls it.
    fn set_checkpoint_listener(&self, listener: CheckpointListener);

    /// Bytes the store occupies on disk (0 for memory).
    fn disk_bytes(&self) -> u64;
}

/// The outcome of a submitted batch, resolved when it is durable.
#[derive(Debug)]
pub struct Commit(CommitState);

#[derive(Debug)]
enum CommitState {
    Ready(Option<Result<(), StoreError>>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    /// A commit that has already resolved.
    pub fn ready(result: Result<(), StoreError>) -> Self {
        Commit(CommitState::Ready(Some(result)))
    }

    /// A commit resolved through `rx`, for a store whose writes complete elsewhere; a dropped sender means the
    /// writer died.
    pub fn waiting(rx: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        Commit(CommitState::Waiting(rx))
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            CommitState::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(StoreError::Closed))),
            CommitState::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(StoreError::Closed))),
        }
    }
}
