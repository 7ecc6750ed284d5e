//! The life of jobs through the broker's API on a `MemStore`: enqueue, reserve, ack and nack, leases and fencing,
//! delays and expiry, dedup, queue control, the dead-letter queue, stats, and the ends of a queue's line.

mod common;

use std::time::Duration;

use common::*;
use spool_core::{ErrorCode, Jitter, JobOptions, JobState, Priority, QueueName, RetryPolicy};
use spool_engine::{DeadSelector, Delivery, End, EngineConfig, NackAction, NewJob, ReserveOrder, ReserveRequest};

fn prio(p: i64) -> JobOptions {
    JobOptions {
        priority: Some(Priority::new(p).unwrap()),
        ..JobOptions::default()
    }
}

/// A deterministic backoff: `initial_ms`, doubling, no jitter.
fn backoff(initial_ms: u64) -> RetryPolicy {
    RetryPolicy {
        initial_ms,
        multiplier: 2.0,
        max_ms: 60_000,
        jitter: Jitter::None,
    }
}

/// Every door runs broker calls in spawned tasks on a multi-threaded runtime, so each future must be `Send`. This
/// test fails to compile, rather than at run time, when one is not.
#[test]
fn broker_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let (broker, _clock) = mem_broker();
    let id = spool_core::JobId::generate(T0);
    assert_send(broker.enqueue(job("default", "x")));
    assert_send(broker.enqueue_batch(Vec::new()));
    assert_send(broker.reserve(ReserveRequest::new(vec!["default".into()], 1, Duration::ZERO)));
    assert_send(broker.ack(id, 1));
    assert_send(broker.ack_many(&[]));
    assert_send(broker.nack(id, 1, NackAction::Retry, None));
    assert_send(broker.extend(id, 1, None));
    assert_send(broker.cancel(id));
    assert_send(broker.pause("default"));
    assert_send(broker.resume("default"));
    assert_send(broker.purge("default"));
    assert_send(broker.dead_replay(DeadSelector::All));
    assert_send(broker.dead_purge(DeadSelector::All));
}

#[tokio::test]
async fn enqueue_reserve_ack() {
    let (broker, _clock) = mem_broker();
    let id = put(&broker, job("default", "hello")).await;
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 0));

    let job = take_one(&broker, "default").await;
    assert_eq!(job.id, id);
    assert_eq!(job.payload, b"hello");
    assert_eq!(job.state, JobState::Leased);
    assert_eq!(job.attempts, 1);
    let lease = job.lease.expect("a leased job has a lease");
    assert_eq!(lease.expires_at, T0 + 30_000, "default lease is 30 s");
    assert_eq!(counts(&broker, "default"), (0, 0, 1, 0, 0));
    assert!(
        take(&broker, &["default"], 1).await.is_empty(),
        "a leased job is not handed out twice"
    );

    broker.ack(id, lease.token).await.unwrap();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 0));
    assert_eq!(broker.get(id).unwrap_err().code, ErrorCode::NotFound);
    let s = stats(&broker, "default");
    assert_eq!((s.enqueued_total, s.acked_total, s.failed_total), (1, 1, 0));
    // An acked job is gone: a second ack cannot find it.
    assert_err(broker.ack(id, lease.token).await, ErrorCode::NotFound, &id.to_string());
}

#[tokio::test]
async fn higher_priority_first_then_fifo() {
    let (broker, _clock) = mem_broker();
    for (label, p) in [("a0", 0), ("b5", 5), ("c5", 5), ("d9", 9), ("e0", 0), ("f5", 5)] {
        put(&broker, job_with("default", label, prio(p))).await;
    }
    let jobs = take(&broker, &["default"], 10).await;
    assert_eq!(labels(&jobs), ["d9", "b5", "c5", "f5", "a0", "e0"]);
}

#[tokio::test]
async fn strict_order_drains_queues_in_the_order_given() {
    let (broker, _clock) = mem_broker();
    put(&broker, job("bulk", "bulk1")).await;
    put(&broker, job("critical", "crit1")).await;
    put(&broker, job("critical", "crit2")).await;
    put(&broker, job("default", "def1")).await;

    // Strict: the first listed queue with a ready job wins, whatever was enqueued first.
    let first = take(&broker, &["critical", "default", "bulk"], 1).await;
    assert_eq!(labels(&first), ["crit1"]);
    // A batch moves on to the next queue once the first is empty.
    let rest = take(&broker, &["critical", "default", "bulk"], 10).await;
    assert_eq!(labels(&rest), ["crit2", "def1", "bulk1"]);
}

#[tokio::test]
async fn weighted_order_serves_every_queue_in_proportion() {
    let (broker, _clock) = mem_broker();
    let rounds = 200;
    let jobs: Vec<NewJob> = (0..rounds)
        .flat_map(|i| [job("heavy", &format!("h{i}")), job("light", &format!("l{i}"))])
        .collect();
    broker.enqueue_batch(jobs).await.unwrap();

    let mut heavy = 0;
    let mut light = 0;
    for _ in 0..rounds {
        let mut req = ReserveRequest::new(vec!["heavy".into(), "light".into()], 1, Duration::ZERO);
        req.order = ReserveOrder::Weighted(vec![3, 1]);
        let got = broker.reserve(req).await.unwrap();
        assert_eq!(got.len(), 1);
        match got[0].queue.as_str() {
            "heavy" => heavy += 1,
            _ => light += 1,
        }
    }
    // Expected 150 : 50. Strict order would give 200 : 0; a light queue starved entirely has probability 0.75^200.
    // The bounds are ~6 standard deviations wide, so this does not flake.
    assert!(light > 0, "weighted order starved the light queue");
    assert!((100..=190).contains(&heavy), "heavy got {heavy} of {rounds}");
}

#[tokio::test]
async fn reserve_returns_at_most_count() {
    let (broker, _clock) = mem_broker();
    for i in 0..5 {
        put(&broker, job("default", &i.to_string())).await;
    }
    assert_eq!(labels(&take(&broker, &["default"], 3).await), ["0", "1", "2"]);
    assert_eq!(labels(&take(&broker, &["default"], 3).await), ["3", "4"]);
    assert!(take(&broker, &["default"], 3).await.is_empty());
    assert_eq!(counts(&broker, "default"), (0, 0, 5, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn blocking_reserve_is_woken_by_an_enqueue() {
    let (broker, _clock) = mem_broker();
    let reserver = parked_reserver(&broker, "default", "reserve returned before any job existed").await;

    let started = tokio::time::Instant::now();
    let id = put(&broker, job("default", "wake")).await;
    let jobs = reserver.await.unwrap().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, id);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "woken by the enqueue, not by the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_for_a_queue_its_reserver_did_not_take_from_is_passed_on() {
    let (broker, _clock) = mem_broker();
    // W1 waits on `critical` then `bulk` in strict order, W2 on `bulk` alone.
    let w1 = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let queues = vec!["critical".to_string(), "bulk".to_string()];
            broker
                .reserve(ReserveRequest::new(queues, 1, Duration::from_secs(60)))
                .await
        })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let w2 = parked_reserver(&broker, "bulk", "nothing to take yet").await;
    // A job for `bulk` wakes W1 (the first waiter on it); before W1 looks, one for `critical` finds no waiter left.
    let started = tokio::time::Instant::now();
    put(&broker, job("bulk", "b")).await;
    put(&broker, job("critical", "c")).await;
    assert_eq!(
        labels(&w1.await.unwrap().unwrap()),
        ["c"],
        "strict order: critical first"
    );
    assert_eq!(
        labels(&w2.await.unwrap().unwrap()),
        ["b"],
        "W1 left the bulk job, so W2 is woken for it"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "woken, not timed out");
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_that_arrives_as_its_reserver_is_dropped_is_passed_on() {
    let (broker, _clock) = mem_broker();
    let first = parked_reserver(&broker, "default", "nothing to take yet").await;
    let second = parked_reserver(&broker, "default", "nothing to take yet").await;
    let started = tokio::time::Instant::now();
    // The enqueue wakes `first`, which is cancelled (its client left) before it runs again to take the job.
    put(&broker, job("default", "j")).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(labels(&second.await.unwrap().unwrap()), ["j"]);
    assert!(started.elapsed() < Duration::from_secs(1), "woken, not timed out");
}

#[tokio::test]
async fn a_reservation_stops_at_its_byte_budget_but_always_hands_out_one_job() {
    let (broker, _clock, _store) = mem_broker_with(EngineConfig {
        max_reserve_bytes: 10,
        ..EngineConfig::default()
    });
    for label in ["aaaa", "bbbb", "cccc", "a-payload-over-the-budget", "dddd"] {
        put(&broker, job("default", label)).await;
    }
    assert_eq!(
        labels(&take(&broker, &["default"], 10).await),
        ["aaaa", "bbbb"],
        "a third would pass 10 bytes"
    );
    assert_eq!(labels(&take(&broker, &["default"], 10).await), ["cccc"]);
    assert_eq!(
        labels(&take(&broker, &["default"], 10).await),
        ["a-payload-over-the-budget"],
        "one job, however large"
    );
    assert_eq!(labels(&take(&broker, &["default"], 10).await), ["dddd"]);
    assert_eq!(
        counts(&broker, "default"),
        (0, 0, 5, 0, 0),
        "every job leased once, none left behind"
    );
}

#[tokio::test(start_paused = true)]
async fn blocking_reserve_times_out_empty() {
    let (broker, _clock) = mem_broker();
    let started = tokio::time::Instant::now();
    let jobs = broker
        .reserve(ReserveRequest::new(vec!["default".into()], 1, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(jobs.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "returned before its timeout"
    );
    // A job that arrives after the timeout is still there for the next reserver.
    put(&broker, job("default", "late")).await;
    assert_eq!(take(&broker, &["default"], 1).await.len(), 1);
}

#[tokio::test]
async fn delayed_jobs_wait_for_their_time() {
    let (broker, clock) = mem_broker();
    let delayed = put(
        &broker,
        job_with(
            "default",
            "delay",
            JobOptions {
                delay_ms: Some(5_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let at = put(
        &broker,
        job_with(
            "default",
            "run_at",
            JobOptions {
                run_at: Some(T0 + 8_000),
                // run_at wins over delay_ms.
                delay_ms: Some(1),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(counts(&broker, "default"), (0, 2, 0, 0, 0));
    assert_eq!(broker.get(delayed).unwrap().state, JobState::Scheduled);
    assert!(take(&broker, &["default"], 10).await.is_empty());

    clock.advance(4_999);
    broker.tick();
    assert!(take(&broker, &["default"], 10).await.is_empty(), "1 ms early");

    clock.advance(1);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (1, 1, 0, 0, 0));
    let got = take(&broker, &["default"], 10).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [delayed]);

    clock.set(T0 + 7_999);
    broker.tick();
    assert!(take(&broker, &["default"], 10).await.is_empty());
    clock.set(T0 + 8_000);
    // No tick: every operation fires due timers first, so a reserve sees the job without the timer task.
    let got = take(&broker, &["default"], 10).await;
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [at]);
}

#[tokio::test]
async fn unreserved_jobs_expire_and_are_counted() {
    let (broker, clock) = mem_broker();
    let doomed = put(
        &broker,
        job_with(
            "default",
            "ttl",
            JobOptions {
                ttl_ms: Some(1_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let taken = put(
        &broker,
        job_with(
            "default",
            "ttl-but-reserved",
            JobOptions {
                ttl_ms: Some(1_000),
                priority: Some(Priority::MAX),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(take_one(&broker, "default").await.id, taken);

    clock.advance(999);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (1, 0, 1, 0, 0));
    clock.advance(1);
    broker.tick();
    assert_eq!(
        counts(&broker, "default"),
        (0, 0, 1, 0, 0),
        "the reserved job is not expired"
    );
    assert_eq!(broker.get(doomed).unwrap_err().code, ErrorCode::NotFound);
    let s = stats(&broker, "default");
    assert_eq!(s.expired_total, 1);
    assert_eq!(s.acked_total, 0);
}

#[tokio::test]
async fn a_job_expiring_during_its_backoff_goes_at_its_expiry_and_frees_its_unique_key() {
    let (broker, clock) = mem_broker();
    let options = || JobOptions {
        unique_key: Some("k".into()),
        ttl_ms: Some(10_000),
        ..JobOptions::default()
    };
    let first = put(&broker, job_with("default", "a", options())).await;
    let job = take_one(&broker, "default").await;
    broker
        .nack(
            job.id,
            job.lease.unwrap().token,
            NackAction::RetryAfter(3_600_000),
            None,
        )
        .await
        .unwrap();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 1, 0));
    clock.advance(20_000);
    let second = broker.enqueue(job_with("default", "b", options())).await.unwrap();
    assert!(!second.duplicate, "the expired job no longer holds the key");
    assert_eq!(broker.get(first).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 0));
    assert_eq!(stats(&broker, "default").expired_total, 1);
}

#[tokio::test]
async fn lost_leases_retry_with_backoff_then_die() {
    let (broker, clock) = mem_broker();
    let id = put(
        &broker,
        job_with(
            "default",
            "flaky",
            JobOptions {
                lease_ms: Some(1_000),
                max_attempts: Some(2),
                retry: Some(backoff(500)),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    take_one(&broker, "default").await;

    clock.advance(999);
    broker.tick();
    assert_eq!(
        counts(&broker, "default"),
        (0, 0, 1, 0, 0),
        "lease still live at 999 ms"
    );
    clock.advance(1);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 1, 0));
    let job = broker.get(id).unwrap();
    assert_eq!(job.state, JobState::Retry);
    assert_eq!(job.attempts, 1);
    assert_eq!(
        job.run_at,
        Some(T0 + 1_000 + 500),
        "first retry waits the initial backoff"
    );
    assert!(job.lease.is_none());
    assert!(job.last_error().unwrap().contains("lease"), "{:?}", job.last_error());

    clock.advance(499);
    broker.tick();
    assert!(take(&broker, &["default"], 1).await.is_empty(), "backoff not yet over");
    clock.advance(1);
    broker.tick();
    let again = take_one(&broker, "default").await;
    assert_eq!(again.attempts, 2);

    clock.advance(1_000);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 1), "attempts exhausted: dead");
    let dead = broker.get(id).unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.dead_at(), Some(T0 + 2_500));
    let error = dead.last_error().unwrap();
    assert!(error.contains("lease") && error.contains("2/2"), "{error}");
    let s = stats(&broker, "default");
    assert_eq!((s.failed_total, s.dead_lettered_total), (2, 1));
}

#[tokio::test]
async fn stale_tokens_are_fenced_off() {
    let (broker, clock) = mem_broker();
    let id = put(
        &broker,
        job_with(
            "default",
            "contested",
            JobOptions {
                lease_ms: Some(1_000),
                // No backoff: the lost job is ready again at once, for the second worker.
                retry: Some(backoff(0)),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let slow = take_one(&broker, "default").await.lease.unwrap().token;
    clock.advance(1_000);
    broker.tick();
    let second = take_one(&broker, "default").await;
    assert_eq!(second.id, id);
    assert_eq!(second.attempts, 2);
    let fresh = second.lease.unwrap();
    assert_ne!(fresh.token, slow);

    let before = broker.get(id).unwrap();
    assert_err(broker.ack(id, slow).await, ErrorCode::LeaseLost, "stale");
    assert_err(
        broker.nack(id, slow, NackAction::Dead, Some("late".into())).await,
        ErrorCode::LeaseLost,
        "stale",
    );
    assert_err(
        broker.extend(id, slow, Some(60_000)).await,
        ErrorCode::LeaseLost,
        "stale",
    );
    assert_eq!(broker.get(id).unwrap(), before, "stale calls changed the job");
    assert_eq!(counts(&broker, "default"), (0, 0, 1, 0, 0));

    broker.ack(id, fresh.token).await.unwrap();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn extend_moves_the_end_of_the_lease() {
    let (broker, clock) = mem_broker();
    put(
        &broker,
        job_with(
            "default",
            "long",
            JobOptions {
                lease_ms: Some(1_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let job = take_one(&broker, "default").await;
    let token = job.lease.unwrap().token;

    clock.advance(800);
    assert_eq!(
        broker.extend(job.id, token, None).await.unwrap(),
        T0 + 1_800,
        "the job's own lease length"
    );
    clock.advance(800);
    broker.tick();
    assert_eq!(
        broker.get(job.id).unwrap().state,
        JobState::Leased,
        "would have expired at 1 000 ms"
    );

    let end = broker.extend(job.id, token, Some(5_000)).await.unwrap();
    assert_eq!(end, T0 + 1_600 + 5_000);
    assert_eq!(broker.get(job.id).unwrap().lease.unwrap().expires_at, end);
    clock.set(end - 1);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (0, 0, 1, 0, 0));
    clock.set(end);
    broker.tick();
    assert_eq!(
        counts(&broker, "default"),
        (0, 0, 0, 1, 0),
        "the extended lease ends when extend said"
    );
}

#[tokio::test]
async fn nack_retry_retry_after_and_dead() {
    let (broker, clock) = mem_broker();
    let opts = JobOptions {
        retry: Some(backoff(200)),
        ..JobOptions::default()
    };
    for label in ["retry", "after", "now", "dead"] {
        put(&broker, job_with("default", label, opts.clone())).await;
    }
    let jobs = take(&broker, &["default"], 4).await;
    let lease = |i: usize| (jobs[i].id, jobs[i].lease.unwrap().token);
    clock.advance(10);

    let (id, token) = lease(0);
    broker
        .nack(id, token, NackAction::Retry, Some("boom".into()))
        .await
        .unwrap();
    let j = broker.get(id).unwrap();
    assert_eq!(
        (j.state, j.run_at, j.attempts),
        (JobState::Retry, Some(T0 + 10 + 200), 1)
    );
    assert_eq!(j.last_error(), Some("boom"));

    let (id, token) = lease(1);
    broker.nack(id, token, NackAction::RetryAfter(700), None).await.unwrap();
    let j = broker.get(id).unwrap();
    assert_eq!((j.state, j.run_at), (JobState::Retry, Some(T0 + 10 + 700)));

    let (id, token) = lease(2);
    broker.nack(id, token, NackAction::RetryAfter(0), None).await.unwrap();
    assert_eq!(
        broker.get(id).unwrap().state,
        JobState::Ready,
        "no delay: ready at once"
    );

    let (id, token) = lease(3);
    broker
        .nack(id, token, NackAction::Dead, Some("poison".into()))
        .await
        .unwrap();
    let j = broker.get(id).unwrap();
    assert_eq!((j.state, j.dead_at()), (JobState::Dead, Some(T0 + 10)));
    assert_eq!(
        j.last_error(),
        Some("poison"),
        "dead on request keeps the worker's reason"
    );

    assert_eq!(counts(&broker, "default"), (1, 0, 0, 2, 1));
    let s = stats(&broker, "default");
    assert_eq!((s.failed_total, s.dead_lettered_total), (4, 1));

    // A nacked token is spent.
    assert_err(broker.ack(jobs[0].id, lease(0).1).await, ErrorCode::LeaseLost, "retry");
    // A failed job rejoins the back of the line when it fails, not when its backoff ends: once all are ready they
    // come out in the order they were nacked.
    clock.advance(700);
    broker.tick();
    assert_eq!(
        labels(&take(&broker, &["default"], 10).await),
        ["retry", "after", "now"]
    );
}

#[tokio::test]
async fn unique_keys_dedup_until_the_job_is_done() {
    let (broker, clock) = mem_broker();
    let unique = |key: &str, ttl: Option<u64>| JobOptions {
        unique_key: Some(key.into()),
        unique_ttl_ms: ttl,
        ..JobOptions::default()
    };
    let first = broker
        .enqueue(job_with("default", "a", unique("k", None)))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = broker
        .enqueue(job_with("default", "b", unique("k", None)))
        .await
        .unwrap();
    assert_eq!((again.id, again.duplicate), (first.id, true));
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 0));
    assert_eq!(stats(&broker, "default").enqueued_total, 1);

    // A batch dedups against the holder too, and against itself.
    let batch = broker
        .enqueue_batch(vec![
            job_with("default", "c", unique("k", None)),
            job_with("default", "d", unique("other", None)),
            job_with("default", "e", unique("other", None)),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].id, first.id);
    assert!(batch[0].duplicate && !batch[1].duplicate && batch[2].duplicate);
    assert_eq!(batch[2].id, batch[1].id);

    // Held while leased; released by the ack.
    let leased = take(&broker, &["default"], 10).await;
    assert!(
        broker
            .enqueue(job_with("default", "f", unique("k", None)))
            .await
            .unwrap()
            .duplicate
    );
    for j in &leased {
        broker.ack(j.id, j.lease.unwrap().token).await.unwrap();
    }
    let after_ack = broker
        .enqueue(job_with("default", "g", unique("k", None)))
        .await
        .unwrap();
    assert!(!after_ack.duplicate);
    assert_ne!(after_ack.id, first.id);

    // unique_ttl_ms releases the key while the job still waits.
    let ttl = broker
        .enqueue(job_with("default", "t1", unique("t", Some(1_000))))
        .await
        .unwrap();
    clock.advance(999);
    let held = broker
        .enqueue(job_with("default", "t2", unique("t", Some(1_000))))
        .await
        .unwrap();
    assert_eq!((held.id, held.duplicate), (ttl.id, true));
    clock.advance(1);
    let released = broker
        .enqueue(job_with("default", "t3", unique("t", Some(1_000))))
        .await
        .unwrap();
    assert!(!released.duplicate);
    assert_eq!(
        broker.get(ttl.id).unwrap().state,
        JobState::Ready,
        "the first job is still there"
    );

    // A dead job holds no key.
    let d = broker.enqueue(job_with("bulk", "d1", unique("d", None))).await.unwrap();
    let j = take_one(&broker, "bulk").await;
    broker
        .nack(j.id, j.lease.unwrap().token, NackAction::Dead, None)
        .await
        .unwrap();
    let d2 = broker.enqueue(job_with("bulk", "d2", unique("d", None))).await.unwrap();
    assert!(!d2.duplicate);
    assert_ne!(d2.id, d.id);
}

#[tokio::test]
async fn cancel_deletes_waiting_jobs_only() {
    let (broker, clock) = mem_broker();
    let ready = put(&broker, job("default", "ready")).await;
    let scheduled = put(
        &broker,
        job_with(
            "default",
            "scheduled",
            JobOptions {
                delay_ms: Some(10_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let leased = put(&broker, job_with("critical", "leased", JobOptions::default())).await;
    let retrying = put(
        &broker,
        job_with(
            "bulk",
            "retry",
            JobOptions {
                retry: Some(backoff(1_000)),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let lease = take_one(&broker, "critical").await.lease.unwrap();
    let r = take_one(&broker, "bulk").await;
    broker
        .nack(r.id, r.lease.unwrap().token, NackAction::Retry, None)
        .await
        .unwrap();

    broker.cancel(ready).await.unwrap();
    broker.cancel(scheduled).await.unwrap();
    broker.cancel(retrying).await.unwrap();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 0));
    assert_eq!(counts(&broker, "bulk"), (0, 0, 0, 0, 0));
    assert_err(broker.cancel(ready).await, ErrorCode::NotFound, &ready.to_string());

    assert_err(broker.cancel(leased).await, ErrorCode::WrongState, "leased");
    assert_eq!(counts(&broker, "critical"), (0, 0, 1, 0, 0));
    broker.ack(leased, lease.token).await.unwrap();

    // A cancelled delayed job never fires.
    clock.advance(20_000);
    broker.tick();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 0));
}

#[tokio::test]
async fn paused_queues_are_not_reserved() {
    let (broker, _clock) = mem_broker();
    assert!(broker.pause("default").await.unwrap());
    assert!(!broker.pause("default").await.unwrap(), "already paused");
    put(&broker, job("default", "waits")).await;
    put(&broker, job("bulk", "flows")).await;
    assert!(stats(&broker, "default").paused);
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 0), "enqueues still land");
    assert_eq!(labels(&take(&broker, &["default", "bulk"], 10).await), ["flows"]);

    assert!(broker.resume("default").await.unwrap());
    assert!(!broker.resume("default").await.unwrap());
    assert!(!stats(&broker, "default").paused);
    assert_eq!(labels(&take(&broker, &["default"], 10).await), ["waits"]);
}

#[tokio::test(start_paused = true)]
async fn resume_wakes_a_blocked_reserver() {
    let (broker, _clock) = mem_broker();
    broker.pause("default").await.unwrap();
    let id = put(&broker, job("default", "held")).await;
    let reserver = parked_reserver(&broker, "default", "reserved from a paused queue").await;
    let started = tokio::time::Instant::now();
    broker.resume("default").await.unwrap();
    let jobs = reserver.await.unwrap().unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn purge_deletes_everything_not_in_flight() {
    let (broker, clock) = mem_broker();
    let leased = put(
        &broker,
        job_with(
            "default",
            "leased",
            JobOptions {
                priority: Some(Priority::MAX),
                lease_ms: Some(5_000),
                retry: Some(backoff(1_000)),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let retry = put(
        &broker,
        job_with(
            "default",
            "retry",
            JobOptions {
                priority: Some(Priority::new(8).unwrap()),
                retry: Some(backoff(1_000)),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let jobs = take(&broker, &["default"], 2).await;
    assert_eq!(jobs[0].id, leased);
    assert_eq!(jobs[1].id, retry);
    broker
        .nack(retry, jobs[1].lease.unwrap().token, NackAction::Retry, None)
        .await
        .unwrap();
    put(&broker, job("default", "ready1")).await;
    put(&broker, job("default", "ready2")).await;
    put(
        &broker,
        job_with(
            "default",
            "later",
            JobOptions {
                delay_ms: Some(5_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    let other = put(&broker, job("bulk", "untouched")).await;
    assert_eq!(counts(&broker, "default"), (2, 1, 1, 1, 0));

    assert_eq!(broker.purge("default").await.unwrap(), 4);
    assert_eq!(counts(&broker, "default"), (0, 0, 1, 0, 0));
    assert_eq!(broker.get(other).unwrap().state, JobState::Ready);
    clock.advance(5_000);
    broker.tick();
    assert_eq!(
        counts(&broker, "default"),
        (0, 0, 0, 1, 0),
        "only the leased job is left (its lease expired)"
    );
    assert_eq!(broker.purge("default").await.unwrap(), 1);
    assert_eq!(broker.purge("default").await.unwrap(), 0);
}

#[tokio::test]
async fn dead_letters_list_replay_and_purge() {
    let (broker, clock) = mem_broker();
    let jobs = [("default", "d1"), ("bulk", "b1"), ("default", "d2"), ("default", "d3")];
    let kill = dead_letter(&broker, &clock, &jobs, "failed", 10).await;
    let all = broker.dead_list(None, None, 100).unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        kill,
        "listed in the order they died"
    );
    assert_eq!(all[1].last_error(), Some("b1 failed"));

    // Paging with a cursor.
    let page1 = broker.dead_list(None, None, 2).unwrap();
    let page2 = broker.dead_list(None, Some(page1[1].id), 2).unwrap();
    let page3 = broker.dead_list(None, Some(page2[1].id), 2).unwrap();
    assert_eq!(labels(&page1), ["d1", "b1"]);
    assert_eq!(labels(&page2), ["d2", "d3"]);
    assert!(page3.is_empty());
    assert_eq!(
        labels(&broker.dead_list(Some("default"), None, 100).unwrap()),
        ["d1", "d2", "d3"]
    );
    assert_eq!(
        labels(&broker.dead_list(Some("default"), Some(kill[0]), 1).unwrap()),
        ["d2"]
    );

    // Replay one: back in its queue, attempts reset.
    assert_eq!(broker.dead_replay(DeadSelector::One(kill[2])).await.unwrap(), 1);
    let j = broker.get(kill[2]).unwrap();
    assert_eq!((j.state, j.attempts, j.dead_at()), (JobState::Ready, 0, None));
    assert_eq!(counts(&broker, "default"), (1, 0, 0, 0, 2));
    assert_err(
        broker.dead_replay(DeadSelector::One(kill[2])).await,
        ErrorCode::WrongState,
        "not dead",
    );

    // Replay a queue: only that queue's dead jobs.
    let default = QueueName::new("default").unwrap();
    assert_eq!(
        broker.dead_replay(DeadSelector::Queue(default.clone())).await.unwrap(),
        2
    );
    assert_eq!(counts(&broker, "default"), (3, 0, 0, 0, 0));
    assert_eq!(counts(&broker, "bulk"), (0, 0, 0, 0, 1));
    // Each replay joins the back of the line, in the order the jobs died.
    let replayed = take(&broker, &["default"], 10).await;
    assert_eq!(labels(&replayed), ["d2", "d1", "d3"]);

    // Replay all.
    assert_eq!(broker.dead_replay(DeadSelector::All).await.unwrap(), 1);
    assert_eq!(counts(&broker, "bulk"), (1, 0, 0, 0, 0));
    assert_eq!(broker.dead_replay(DeadSelector::All).await.unwrap(), 0);

    // Purge: one, a queue, all.
    for j in &replayed {
        broker
            .nack(j.id, j.lease.unwrap().token, NackAction::Dead, None)
            .await
            .unwrap();
    }
    let b = take_one(&broker, "bulk").await;
    broker
        .nack(b.id, b.lease.unwrap().token, NackAction::Dead, None)
        .await
        .unwrap();
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 3));
    assert_eq!(broker.dead_purge(DeadSelector::One(kill[0])).await.unwrap(), 1);
    assert_eq!(broker.get(kill[0]).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(broker.dead_purge(DeadSelector::Queue(default)).await.unwrap(), 2);
    assert_eq!(counts(&broker, "default"), (0, 0, 0, 0, 0));
    assert_eq!(counts(&broker, "bulk"), (0, 0, 0, 0, 1));
    assert_eq!(broker.dead_purge(DeadSelector::All).await.unwrap(), 1);
    assert!(broker.dead_list(None, None, 100).unwrap().is_empty());
}

#[tokio::test]
async fn queue_stats_count_every_state() {
    let (broker, clock) = mem_broker();
    let opts = JobOptions {
        retry: Some(backoff(1_000)),
        ..JobOptions::default()
    };
    for label in ["leased", "retry", "dead"] {
        put(&broker, job_with("default", label, opts.clone())).await;
    }
    let jobs = take(&broker, &["default"], 3).await;
    broker
        .nack(jobs[1].id, jobs[1].lease.unwrap().token, NackAction::Retry, None)
        .await
        .unwrap();
    broker
        .nack(jobs[2].id, jobs[2].lease.unwrap().token, NackAction::Dead, None)
        .await
        .unwrap();
    put(&broker, job("default", "ready-old")).await;
    clock.advance(300);
    put(&broker, job("default", "ready-new")).await;
    put(
        &broker,
        job_with(
            "default",
            "scheduled",
            JobOptions {
                delay_ms: Some(60_000),
                ..JobOptions::default()
            },
        ),
    )
    .await;
    clock.advance(200);

    let s = stats(&broker, "default");
    assert_eq!((s.ready, s.scheduled, s.leased, s.retry, s.dead), (2, 1, 1, 1, 1));
    assert_eq!(s.oldest_ready_age_ms, Some(500));
    assert_eq!(s.enqueued_total, 6);
    assert!(!s.paused);
    assert_eq!(stats(&broker, "bulk").oldest_ready_age_ms, None, "no ready job, no age");

    // A job pushed to the front of the line is the next one out, not the oldest one waiting.
    put(
        &broker,
        NewJob {
            position: End::Next,
            ..job("default", "jumper")
        },
    )
    .await;
    assert_eq!(stats(&broker, "default").oldest_ready_age_ms, Some(500));

    let listed = broker.list_queues();
    let names: Vec<&str> = listed.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["bulk", "critical", "default"]);
    assert_eq!(broker.totals(), (7, 3));
    assert_err(broker.queue_stats("never-used"), ErrorCode::NotFound, "never-used");
}

#[tokio::test]
async fn enqueue_position_and_reserve_end() {
    let (broker, _clock) = mem_broker();
    put(&broker, job("default", "a")).await;
    put(&broker, job("default", "b")).await;
    put(
        &broker,
        NewJob {
            position: End::Next,
            ..job("default", "front")
        },
    )
    .await;
    put(&broker, job_with("default", "urgent", prio(5))).await;
    put(
        &broker,
        NewJob {
            position: End::Next,
            ..job_with("default", "urgent-front", prio(5))
        },
    )
    .await;

    // Position `Next` jumps the line of its own priority level only.
    let next: Vec<_> = broker.peek("default", End::Next, 0, 10).unwrap();
    assert_eq!(labels(&next), ["urgent-front", "urgent", "front", "a", "b"]);
    let last = broker.peek("default", End::Last, 0, 10).unwrap();
    assert_eq!(labels(&last), ["b", "a", "front", "urgent", "urgent-front"]);
    assert_eq!(
        labels(&broker.peek("default", End::Next, 1, 2).unwrap()),
        ["urgent", "front"]
    );
    assert_eq!(
        labels(&broker.peek("default", End::Last, 4, 10).unwrap()),
        ["urgent-front"]
    );
    assert!(broker.peek("default", End::Next, 5, 10).unwrap().is_empty());
    assert_eq!(counts(&broker, "default"), (5, 0, 0, 0, 0), "peek changes nothing");

    // Reserving from the `Last` end takes the job that would have gone last.
    let mut req = ReserveRequest::new(vec!["default".into()], 2, Duration::ZERO);
    req.end = End::Last;
    let got = broker.reserve(req).await.unwrap();
    assert_eq!(labels(&got), ["b", "a"]);
    assert!(got.iter().all(|j| j.state == JobState::Leased));

    // Pop: the job is deleted, not leased.
    let mut req = ReserveRequest::new(vec!["default".into()], 1, Duration::ZERO);
    req.delivery = Delivery::Pop;
    let popped = broker.reserve(req).await.unwrap();
    assert_eq!(labels(&popped), ["urgent-front"]);
    assert_eq!(broker.get(popped[0].id).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(counts(&broker, "default"), (2, 0, 2, 0, 0));
    assert_eq!(stats(&broker, "default").acked_total, 1, "a pop counts as done");
}
