//! What survives a restart on the sled store: every stored job, in its stored state and order, the dead-letter queue
//! and paused queues. By design reservations, extends and promotions are not written, so a job leased at the restart
//! comes back ready with the attempts of its last stored write, and a delayed job is promoted when its time comes.
//! Jobs come back without their payloads, which the engine reads back as it hands each job out.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use spool_core::{ErrorCode, Jitter, Job, JobId, JobOptions, JobState, ManualClock, Priority, RetryPolicy, SpoolError};
use spool_engine::{Broker, Delivery, End, EngineConfig, NackAction, ReserveRequest};
use spool_store::{CheckpointListener, Commit, MemStore, Mutation, Snapshot, Store, StoreError};

/// Drops the broker (and with it the store, which drains and syncs its writer) and opens the same directory again.
fn restart(broker: Broker, dir: &std::path::Path, clock: &ManualClock) -> Broker {
    drop(broker);
    sled_broker(dir, clock)
}

#[tokio::test]
async fn ready_jobs_survive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let broker = sled_broker(dir.path(), &clock);
    for label in ["a", "b", "c", "d"] {
        put(&broker, job("default", label)).await;
        clock.advance(1);
    }
    let urgent = JobOptions {
        priority: Some(Priority::new(3).unwrap()),
        ..JobOptions::default()
    };
    put(&broker, job_with("default", "urgent", urgent)).await;
    put(
        &broker,
        spool_engine::NewJob {
            position: spool_engine::End::Next,
            ..job("default", "front")
        },
    )
    .await;
    // An acked and a cancelled job must stay gone.
    let acked = put(&broker, job("bulk", "acked")).await;
    let j = take_one(&broker, "bulk").await;
    broker.ack(j.id, j.lease.unwrap().token).await.unwrap();
    let cancelled = put(&broker, job("bulk", "cancelled")).await;
    broker.cancel(cancelled).await.unwrap();

    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(counts(&broker, "default"), (6, 0, 0, 0, 0));
    assert_eq!(counts(&broker, "bulk"), (0, 0, 0, 0, 0));
    assert_eq!(broker.get(acked).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(broker.get(cancelled).unwrap_err().code, ErrorCode::NotFound);
    let jobs = take(&broker, &["default"], 10).await;
    assert_eq!(labels(&jobs), ["urgent", "front", "a", "b", "c", "d"]);

    // New jobs after the restart still go to the back of the line.
    let broker = restart(broker, dir.path(), &clock);
    put(&broker, job("default", "e")).await;
    let jobs = take(&broker, &["default"], 10).await;
    assert_eq!(labels(&jobs), ["urgent", "front", "a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn leased_jobs_are_redelivered_with_their_stored_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let broker = sled_broker(dir.path(), &clock);
    let fresh = put(&broker, job("default", "fresh")).await;
    let failed = put(
        &broker,
        job_with(
            "default",
            "failed-once",
            JobOptions {
                retry: Some(RetryPolicy {
                    initial_ms: 0,
                    multiplier: 1.0,
                    max_ms: 0,
                    jitter: Jitter::None,
                }),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let first = take(&broker, &["default"], 2).await;
    // Nacked once (attempts 1 is written), then reserved again (attempts 2 is not).
    broker
        .nack(failed, first[1].lease.unwrap().token, NackAction::Retry, None)
        .await
        .unwrap();
    let second = take_one(&broker, "default").await;
    assert_eq!((second.id, second.attempts), (failed, 2));
    assert_eq!(counts(&broker, "default"), (0, 0, 2, 0, 0));

    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        counts(&broker, "default"),
        (2, 0, 0, 0, 0),
        "leases do not survive a restart"
    );
    let f = broker.get(fresh).unwrap();
    assert_eq!((f.state, f.attempts, f.lease), (JobState::Ready, 0, None));
    let g = broker.get(failed).unwrap();
    assert_eq!((g.state, g.attempts), (JobState::Ready, 1));
    // A worker from before the restart is fenced off.
    assert_err(
        broker.ack(fresh, first[0].lease.unwrap().token).await,
        ErrorCode::LeaseLost,
        "stale",
    );
    let again = take(&broker, &["default"], 2).await;
    assert_eq!(labels(&again), ["fresh", "failed-once"]);
    assert_eq!(again[1].attempts, 2);
}

#[tokio::test]
async fn delayed_jobs_fire_at_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let broker = sled_broker(dir.path(), &clock);
    let delay = |ms| JobOptions {
        delay_ms: Some(ms),
        ..JobOptions::default()
    };
    let soon = put(&broker, job_with("default", "soon", delay(1_000))).await;
    let later = put(&broker, job_with("default", "later", delay(10_000))).await;
    let retry = put(&broker, job("default", "retry")).await;
    let j = take_one(&broker, "default").await;
    broker
        .nack(retry, j.lease.unwrap().token, NackAction::RetryAfter(5_000), None)
        .await
        .unwrap();
    assert_eq!(counts(&broker, "default"), (0, 2, 0, 1, 0));

    // Down over the first job's time: it is ready as soon as the broker opens.
    drop(broker);
    clock.advance(2_000);
    let broker = sled_broker(dir.path(), &clock);
    assert_eq!(counts(&broker, "default"), (1, 1, 0, 1, 0));
    assert_eq!(broker.get(soon).unwrap().state, JobState::Ready);

    // The others fire at their own time, not before.
    clock.set(T0 + 4_999);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (1, 1, 0, 1, 0));
    clock.set(T0 + 5_000);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (2, 1, 0, 0, 0));
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        counts(&broker, "default"),
        (2, 1, 0, 0, 0),
        "promotions are recomputed, not stored"
    );
    clock.set(T0 + 9_999);
    broker.tick();
    assert_eq!(broker.get(later).unwrap().state, JobState::Scheduled);
    clock.set(T0 + 10_000);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (3, 0, 0, 0, 0));
}

#[tokio::test]
async fn dead_letters_and_paused_queues_survive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let broker = sled_broker(dir.path(), &clock);
    let dead = dead_letter(
        &broker,
        &clock,
        &[("default", "d1"), ("bulk", "b1"), ("default", "d2")],
        "broke",
        5,
    )
    .await;
    let listed_before = broker.dead_list(None, None, 10).unwrap();
    broker.pause("critical").await.unwrap();
    put(&broker, job("critical", "waiting")).await;
    // A queue created on first use and paused survives too.
    broker.pause("made-up").await.unwrap();

    let broker = restart(broker, dir.path(), &clock);
    let listed = broker.dead_list(None, None, 10).unwrap();
    assert_eq!(
        listed, listed_before,
        "dead jobs, their order, errors and death times are intact"
    );
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), dead);
    assert_eq!(listed[2].last_error(), Some("d2 broke"));
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 2));
    assert!(stats(&broker, "critical").paused);
    assert!(stats(&broker, "made-up").paused);
    assert!(!stats(&broker, "default").paused);
    assert!(take(&broker, &["critical"], 1).await.is_empty(), "still paused");

    broker.resume("critical").await.unwrap();
    assert_eq!(
        broker
            .dead_replay(spool_engine::DeadSelector::One(dead[0]))
            .await
            .unwrap(),
        1
    );
    let broker = restart(broker, dir.path(), &clock);
    assert!(!stats(&broker, "critical").paused, "resuming is stored too");
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 1));
    assert_eq!(broker.get(dead[0]).unwrap().attempts, 0, "the replay was stored");
    assert_eq!(
        labels(&take(&broker, &["default"], 1).await),
        ["d1"],
        "the replay of a job held without its payload (a merge in the log) kept the payload"
    );
    assert_eq!(labels(&take(&broker, &["critical"], 1).await), ["waiting"]);
}

#[tokio::test]
async fn unique_keys_are_held_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let broker = sled_broker(dir.path(), &clock);
    let unique = JobOptions {
        unique_key: Some("once".into()),
        ..JobOptions::default()
    };
    let holder = broker.enqueue(job_with("default", "a", unique.clone())).await.unwrap();
    take_one(&broker, "default").await;

    let broker = restart(broker, dir.path(), &clock);
    let dup = broker.enqueue(job_with("default", "b", unique)).await.unwrap();
    assert_eq!((dup.id, dup.duplicate), (holder.id, true));
}

/// A `MemStore` whose payload reads fail for the jobs in `failing`: a disk error on the path that reads payloads back.
#[derive(Debug)]
struct FailingReads {
    inner: MemStore,
    failing: Arc<Mutex<HashSet<JobId>>>,
}

impl Store for FailingReads {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn read_payload(&self, id: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
        if self.failing.lock().unwrap().contains(id) {
            return Err(StoreError::Read {
                path: "test".into(),
                reason: "injected I/O error".into(),
            });
        }
        self.inner.read_payload(id)
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        self.inner.submit(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn set_checkpoint_listener(&self, listener: CheckpointListener) {
        self.inner.set_checkpoint_listener(listener)
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn a_payload_that_cannot_be_read_back_fails_alone_and_holds_up_no_other_job() {
    let (broker, clock, store) = mem_broker_with(EngineConfig::default());
    let mut ids = Vec::new();
    for label in ["a", "b", "c", "d", "e"] {
        ids.push(put(&broker, job("default", label)).await);
    }
    drop(broker);
    let failing = Arc::new(Mutex::new(HashSet::from([ids[0], ids[3]])));
    let store = FailingReads {
        inner: store,
        failing: failing.clone(),
    };
    let broker = Broker::open(Arc::new(store), Arc::new(clock.clone()), EngineConfig::default()).unwrap();
    let pop = |count| {
        let mut req = ReserveRequest::new(vec!["default".into()], count, Duration::ZERO);
        req.delivery = Delivery::Pop;
        req
    };
    let storage = |r: Result<Vec<Job>, SpoolError>| assert_eq!(r.unwrap_err().code, ErrorCode::Storage);

    // `a` fails the call that meets it first and goes to the back of the line, so the next calls reach `b` and `c`;
    // `d` fails part-way through a call, which hands out what it took before.
    assert!(matches!(broker.apply_pop(pop(1)), Err(e) if e.code == ErrorCode::Storage));
    assert_eq!(labels(&broker.reserve(pop(1)).await.unwrap()), ["b"]);
    assert_eq!(labels(&take(&broker, &["default"], 3).await), ["c"]);
    storage(broker.peek("default", End::Next, 0, 10));
    assert_eq!(broker.get(ids[0]).unwrap_err().code, ErrorCode::Storage);
    assert_eq!(
        counts(&broker, "default"),
        (3, 0, 1, 0, 0),
        "nothing taken or lost by a failed read"
    );

    failing.lock().unwrap().clear();
    let rest = broker.reserve(pop(10)).await.unwrap();
    assert_eq!(
        labels(&rest),
        ["e", "a", "d"],
        "the jobs that failed, read back at the back of the line"
    );
    assert_eq!(counts(&broker, "default"), (0, 0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_payload_that_cannot_be_read_back_fails_one_waiter_not_all() {
    let (broker, clock, store) = mem_broker_with(EngineConfig::default());
    let delayed = JobOptions {
        delay_ms: Some(1_000),
        ..JobOptions::default()
    };
    let id = put(&broker, job_with("default", "a", delayed)).await;
    drop(broker);
    let store = FailingReads {
        inner: store,
        failing: Arc::new(Mutex::new(HashSet::from([id]))),
    };
    let broker = Broker::open(Arc::new(store), Arc::new(clock.clone()), EngineConfig::default()).unwrap();
    let first = parked_reserver(&broker, "default", "nothing is ready yet").await;
    let second = parked_reserver(&broker, "default", "nothing is ready yet").await;
    // The job falls due: the first waiter is woken, meets the unreadable payload and fails.
    clock.advance(1_000);
    broker.tick();
    assert_eq!(first.await.unwrap().unwrap_err().code, ErrorCode::Storage);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the other waiter is not woken only to fail too");
    second.abort();
}

#[tokio::test]
async fn past_the_memory_budget_checkpointed_payloads_are_dropped_and_read_back() {
    let config = EngineConfig {
        payload_memory_bytes: 10,
        ..EngineConfig::default()
    };
    let (broker, _clock, store) = mem_broker_with(config);
    let labels_put = ["job-0", "job-1", "job-2", "job-3"];
    for label in labels_put {
        put(&broker, job("default", label)).await;
    }
    broker.tick();
    assert_eq!(
        broker.payload_bytes_held(),
        20,
        "nothing is dropped before a checkpoint"
    );

    store.checkpoint();
    broker.tick();
    assert_eq!(broker.payload_bytes_held(), 10, "dropped down to the budget, not below");

    let jobs = take(&broker, &["default"], 4).await;
    assert_eq!(labels(&jobs), labels_put);
    assert_eq!(broker.payload_bytes_held(), 20, "leased jobs hold their payloads again");
    for j in jobs {
        broker.ack(j.id, j.lease.unwrap().token).await.unwrap();
    }
    assert_eq!(broker.payload_bytes_held(), 0);
}
