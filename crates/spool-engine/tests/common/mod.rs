//! Helpers shared by the engine's test binaries: a broker on a manual clock over a `MemStore` or a `SledStore`, and
//! short ways to build jobs and read queue counts.

// Each test binary compiles this module on its own and uses only some of the helpers; without this every binary
// would warn about the helpers the others use.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spool_core::{Job, JobId, JobOptions, ManualClock, SpoolError};
use spool_engine::{Broker, EngineConfig, NackAction, NewJob, QueueStats, ReserveRequest};
use spool_store::{MemStore, SledConfig, SledStore, StoreError};

/// Where every test clock starts: a plausible "now" (Nov 2023), so timestamps look like real ones in failures.
pub const T0: u64 = 1_700_000_000_000;

/// A broker over a fresh `MemStore` with the default configuration, and the clock that drives it.
pub fn mem_broker() -> (Broker, ManualClock) {
    let (broker, clock, _) = mem_broker_with(EngineConfig::default());
    (broker, clock)
}

/// A broker over a fresh `MemStore` with `config`; the store is returned so a test can "restart" on it.
pub fn mem_broker_with(config: EngineConfig) -> (Broker, ManualClock, MemStore) {
    let clock = ManualClock::new(T0);
    let store = MemStore::new();
    let broker = Broker::open(Arc::new(store.clone()), Arc::new(clock.clone()), config).expect("open broker");
    (broker, clock, store)
}

/// A broker over the sled store in `dir` (created if missing), on `clock`, with the default configuration. Dropping
/// the broker drops the store, which drains and syncs its writer: that is a clean restart.
pub fn sled_broker(dir: &Path, clock: &ManualClock) -> Broker {
    Broker::open(
        Arc::new(open_sled(dir)),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
    .expect("open broker")
}

/// Opens the sled store in `dir`, waiting for a previous instance in this process to let go of it.
///
/// Dropping a `SledStore` joins its writer, but sled's own I/O threads can hold the database's file lock for a moment
/// longer, so an in-process restart may briefly find the directory locked. (A real restart is a new process, and the
/// OS releases the lock when the old one exits.) Retrying for a bounded time keeps restarts in tests deterministic.
pub fn open_sled(dir: &Path) -> SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(SledConfig::new(dir)) {
            Ok(store) => return store,
            Err(StoreError::Open { reason, .. })
                if reason.contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("open sled store: {e}"),
        }
    }
}

/// A job for `queue` with default options; the payload doubles as a label for order checks.
pub fn job(queue: &str, payload: &str) -> NewJob {
    job_with(queue, payload, JobOptions::default())
}

/// A job for `queue` with `options`.
pub fn job_with(queue: &str, payload: &str, options: JobOptions) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: payload.as_bytes().to_vec(),
        options,
        ..NewJob::default()
    }
}

/// Enqueues one job and returns its id, failing the test on error or on a dedup hit.
pub async fn put(broker: &Broker, job: NewJob) -> JobId {
    let out = broker.enqueue(job).await.expect("enqueue");
    assert!(!out.duplicate, "unexpected duplicate");
    out.id
}

/// Leases up to `count` jobs from `queues` in strict order, without waiting.
pub async fn take(broker: &Broker, queues: &[&str], count: usize) -> Vec<Job> {
    broker
        .reserve(ReserveRequest::new(
            queues.iter().map(|q| q.to_string()).collect(),
            count,
            Duration::ZERO,
        ))
        .await
        .expect("reserve")
}

/// Leases exactly one job from `queue`, failing the test if there is none.
pub async fn take_one(broker: &Broker, queue: &str) -> Job {
    let mut jobs = take(broker, &[queue], 1).await;
    assert_eq!(jobs.len(), 1, "expected a ready job in {queue}");
    jobs.pop().expect("one job")
}

/// Enqueues one job per `(queue, label)`, leases it and nacks it straight to the dead-letter queue with the error
/// "`<label> <why>`", advancing the clock `step_ms` after each so their `dead_at` times differ. Returns their ids.
pub async fn dead_letter(
    broker: &Broker,
    clock: &ManualClock,
    jobs: &[(&str, &str)],
    why: &str,
    step_ms: u64,
) -> Vec<JobId> {
    let mut dead = Vec::new();
    for (queue, label) in jobs {
        put(broker, job(queue, label)).await;
        let j = take_one(broker, queue).await;
        broker
            .nack(
                j.id,
                j.lease.expect("leased").token,
                NackAction::Dead,
                Some(format!("{label} {why}")),
            )
            .await
            .expect("nack to dead");
        dead.push(j.id);
        clock.advance(step_ms);
    }
    dead
}

/// Spawns a reserve of one job from `queue` (60 s timeout) and runs it until it is parked waiting; `why` is the
/// failure message if it returns instead. Yielding does not move tokio's paused clock, so it cannot time out here.
pub async fn parked_reserver(
    broker: &Broker,
    queue: &str,
    why: &str,
) -> tokio::task::JoinHandle<Result<Vec<Job>, SpoolError>> {
    let reserver = {
        let (broker, queue) = (broker.clone(), queue.to_string());
        tokio::spawn(async move {
            broker
                .reserve(ReserveRequest::new(vec![queue], 1, Duration::from_secs(60)))
                .await
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!reserver.is_finished(), "{why}");
    reserver
}

/// The payloads of `jobs` as strings, in order.
pub fn labels(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .map(|j| String::from_utf8(j.payload.clone()).expect("utf-8 label"))
        .collect()
}

/// A queue's state counts: (ready, scheduled, leased, retry, dead).
pub fn counts(broker: &Broker, queue: &str) -> (u64, u64, u64, u64, u64) {
    let s = stats(broker, queue);
    (s.ready, s.scheduled, s.leased, s.retry, s.dead)
}

/// A queue's stats, failing the test if the queue does not exist.
pub fn stats(broker: &Broker, queue: &str) -> QueueStats {
    broker.queue_stats(queue).expect("queue stats")
}

/// Asserts that `result` failed with `code` and that its message mentions `needle` (case-insensitive), so that each
/// error names the problem rather than just its class.
#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(result: Result<T, SpoolError>, code: spool_core::ErrorCode, needle: &str) {
    let err = result.expect_err("expected an error");
    assert_eq!(err.code, code, "wrong code for {err}");
    assert!(
        err.message.to_lowercase().contains(&needle.to_lowercase()),
        "message {:?} does not mention {needle:?}",
        err.message
    );
}
