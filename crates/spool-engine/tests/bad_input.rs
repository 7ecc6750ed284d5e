//! Bad input gets an error with the right code and a message that names the problem, and changes nothing.

mod common;

use std::time::Duration;

use common::*;
use spool_core::{ErrorCode, JobId, JobOptions, Priority, RetryPolicy};
use spool_engine::{Broker, EngineConfig, NackAction, NewJob, QueueStats, ReserveOrder, ReserveRequest};

/// Everything observable about the queues, to compare before and after a rejected call.
fn snapshot(broker: &Broker) -> (Vec<QueueStats>, (usize, usize)) {
    (broker.list_queues(), broker.totals())
}

/// A broker with one job ready in `default` and one leased from `bulk`, so that "changes nothing" has something to
/// leave alone. Returns the leased job's id and token.
async fn busy_broker(config: EngineConfig) -> (Broker, JobId, u64) {
    let (broker, _clock, _store) = mem_broker_with(config);
    put(&broker, job("default", "bystander")).await;
    put(&broker, job("bulk", "in-flight")).await;
    let leased = take_one(&broker, "bulk").await;
    (broker, leased.id, leased.lease.unwrap().token)
}

fn options(f: impl FnOnce(&mut JobOptions)) -> JobOptions {
    let mut o = JobOptions::default();
    f(&mut o);
    o
}

#[tokio::test]
async fn invalid_queue_names() {
    let (broker, _, _) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    assert_err(
        broker.enqueue(job("has space", "x")).await,
        ErrorCode::Invalid,
        "queue name",
    );
    assert_err(broker.enqueue(job("", "x")).await, ErrorCode::Invalid, "queue name");
    assert_err(
        broker.enqueue(job(&"q".repeat(129), "x")).await,
        ErrorCode::Invalid,
        "128",
    );
    assert_err(
        broker
            .reserve(ReserveRequest::new(vec!["bad/name".into()], 1, Duration::ZERO))
            .await,
        ErrorCode::Invalid,
        "bad/name",
    );
    assert_err(broker.pause("bad name").await, ErrorCode::Invalid, "queue name");
    assert_err(broker.purge("bad name").await, ErrorCode::Invalid, "queue name");
    assert_err(
        broker.peek("bad name", Default::default(), 0, 1),
        ErrorCode::Invalid,
        "queue name",
    );
    assert_err(
        broker.dead_list(Some("bad name"), None, 1),
        ErrorCode::Invalid,
        "queue name",
    );
    assert_eq!(snapshot(&broker), before);
}

#[tokio::test]
async fn payload_over_the_limit() {
    let (broker, _, _) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    let limit = EngineConfig::default().max_payload_bytes;
    assert_eq!(limit, 1024 * 1024, "documented default");
    let big = NewJob {
        payload: vec![0; limit + 1],
        ..job("default", "")
    };
    assert_err(
        broker.enqueue(big).await,
        ErrorCode::TooBig,
        &format!("{} bytes", limit + 1),
    );
    assert_eq!(snapshot(&broker), before);
    // Exactly at the limit is fine.
    let fits = NewJob {
        payload: vec![0; limit],
        ..job("default", "")
    };
    broker.enqueue(fits).await.unwrap();

    let (small, _, _) = busy_broker(EngineConfig {
        max_payload_bytes: 16,
        ..EngineConfig::default()
    })
    .await;
    let before = snapshot(&small);
    assert_err(
        small.enqueue(job("default", &"x".repeat(17))).await,
        ErrorCode::TooBig,
        "16 bytes",
    );
    assert_eq!(snapshot(&small), before);
}

#[test]
fn priority_out_of_range() {
    for p in [10, -1, 255] {
        assert_err(Priority::new(p), ErrorCode::Invalid, &format!("got {p}"));
    }
    assert_eq!(Priority::new(9).unwrap(), Priority::MAX);
}

#[tokio::test]
async fn unknown_job_ids() {
    let (broker, _, token) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    let ghost = JobId::generate(T0);
    let name = ghost.to_string();
    assert_err(broker.ack(ghost, token).await, ErrorCode::NotFound, &name);
    assert_err(
        broker.nack(ghost, token, NackAction::Retry, None).await,
        ErrorCode::NotFound,
        &name,
    );
    assert_err(broker.extend(ghost, token, None).await, ErrorCode::NotFound, &name);
    assert_err(broker.cancel(ghost).await, ErrorCode::NotFound, &name);
    assert_err(broker.get(ghost), ErrorCode::NotFound, &name);
    assert_err(
        broker.dead_replay(spool_engine::DeadSelector::One(ghost)).await,
        ErrorCode::NotFound,
        &name,
    );
    assert_err(
        broker.dead_purge(spool_engine::DeadSelector::One(ghost)).await,
        ErrorCode::NotFound,
        &name,
    );
    let acks = broker.ack_many(&[(ghost, token)]).await.unwrap();
    assert_eq!(acks[0].as_ref().unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(snapshot(&broker), before);
}

#[tokio::test]
async fn stale_lease_token() {
    let (broker, id, token) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    let job_before = broker.get(id).unwrap();
    let wrong = token.wrapping_add(1);
    assert_err(broker.ack(id, wrong).await, ErrorCode::LeaseLost, &wrong.to_string());
    assert_err(
        broker.nack(id, wrong, NackAction::Dead, None).await,
        ErrorCode::LeaseLost,
        "stale",
    );
    assert_err(
        broker.extend(id, wrong, Some(1_000)).await,
        ErrorCode::LeaseLost,
        "leased under another token",
    );
    // In a batch of acks, only the stale one fails.
    let acks = broker.ack_many(&[(id, wrong)]).await.unwrap();
    assert_eq!(acks[0].as_ref().unwrap_err().code, ErrorCode::LeaseLost);
    assert_eq!(snapshot(&broker), before);
    assert_eq!(broker.get(id).unwrap(), job_before);
    broker.ack(id, token).await.unwrap();
}

#[tokio::test]
async fn batches_over_max_batch() {
    let (broker, _, _) = busy_broker(EngineConfig {
        max_batch: 3,
        ..EngineConfig::default()
    })
    .await;
    let before = snapshot(&broker);
    let four: Vec<NewJob> = (0..4).map(|i| job("default", &i.to_string())).collect();
    assert_err(broker.enqueue_batch(four).await, ErrorCode::TooBig, "limit of 3");
    let reserve = |count| ReserveRequest::new(vec!["default".into()], count, Duration::ZERO);
    assert_err(
        broker.reserve(reserve(4)).await,
        ErrorCode::Invalid,
        "between 1 and 3, got 4",
    );
    assert_err(broker.reserve(reserve(0)).await, ErrorCode::Invalid, "got 0");
    assert_eq!(snapshot(&broker), before);
    let three: Vec<NewJob> = (0..3).map(|i| job("default", &i.to_string())).collect();
    assert_eq!(broker.enqueue_batch(three).await.unwrap().len(), 3);
}

#[tokio::test]
async fn unknown_queue_without_auto_create() {
    let (broker, _, _) = busy_broker(EngineConfig {
        auto_create_queues: false,
        ..EngineConfig::default()
    })
    .await;
    let before = snapshot(&broker);
    assert_err(broker.enqueue(job("nope", "x")).await, ErrorCode::UnknownQueue, "nope");
    assert_err(
        broker
            .reserve(ReserveRequest::new(vec!["nope".into()], 1, Duration::ZERO))
            .await,
        ErrorCode::UnknownQueue,
        "auto-creation is off",
    );
    assert_err(broker.pause("nope").await, ErrorCode::UnknownQueue, "nope");
    assert_err(broker.queue_stats("nope"), ErrorCode::NotFound, "nope");
    assert_eq!(snapshot(&broker), before);
    // Configured queues still work.
    put(&broker, job("critical", "x")).await;
}

#[tokio::test]
async fn bad_job_options() {
    let (broker, id, token) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    let cases: Vec<(JobOptions, &str)> = vec![
        (options(|o| o.lease_ms = Some(0)), "lease"),
        (options(|o| o.lease_ms = Some(86_400_001)), "1 day"),
        (options(|o| o.max_attempts = Some(0)), "max attempts"),
        (options(|o| o.unique_key = Some(String::new())), "unique key"),
        (
            options(|o| {
                o.delay_ms = Some(1_000);
                o.ttl_ms = Some(500);
            }),
            "expiry",
        ),
        (
            options(|o| {
                o.retry = Some(RetryPolicy {
                    multiplier: 0.5,
                    ..RetryPolicy::default()
                })
            }),
            "multiplier",
        ),
    ];
    for (opts, needle) in cases {
        assert_err(
            broker.enqueue(job_with("default", "x", opts)).await,
            ErrorCode::Invalid,
            needle,
        );
    }
    let lease_before = broker.get(id).unwrap().lease;
    assert_err(broker.extend(id, token, Some(0)).await, ErrorCode::Invalid, "lease");
    assert_eq!(
        broker.get(id).unwrap().lease,
        lease_before,
        "a rejected extend keeps the lease"
    );
    assert_err(
        broker.nack(id, token, NackAction::RetryAfter(u64::MAX), None).await,
        ErrorCode::Invalid,
        "retry delay",
    );
    let mut weighted = ReserveRequest::new(vec!["default".into(), "bulk".into()], 1, Duration::ZERO);
    weighted.order = ReserveOrder::Weighted(vec![1]);
    assert_err(
        broker.reserve(weighted).await,
        ErrorCode::Invalid,
        "1 weights given for 2 queues",
    );
    assert_err(
        broker.reserve(ReserveRequest::new(Vec::new(), 1, Duration::ZERO)).await,
        ErrorCode::Invalid,
        "at least one queue",
    );
    assert_eq!(snapshot(&broker), before);
}

#[tokio::test]
async fn a_batch_with_one_bad_job_creates_nothing() {
    let (broker, _, _) = busy_broker(EngineConfig::default()).await;
    let before = snapshot(&broker);
    let batch = vec![
        job("default", "good"),
        job("brand-new-queue", "good too"),
        job_with("default", "bad", options(|o| o.max_attempts = Some(0))),
    ];
    assert_err(
        broker.enqueue_batch(batch).await,
        ErrorCode::Invalid,
        "job 2 of the batch",
    );
    assert_eq!(snapshot(&broker), before);
    assert_err(
        broker.queue_stats("brand-new-queue"),
        ErrorCode::NotFound,
        "brand-new-queue",
    );

    let unique = |label| job_with("default", label, options(|o| o.unique_key = Some("once".into())));
    let batch = vec![unique("first"), job("bad queue", "x")];
    assert_err(
        broker.enqueue_batch(batch).await,
        ErrorCode::Invalid,
        "job 1 of the batch",
    );
    // The unique key of the rejected batch was never taken.
    assert!(!broker.enqueue(unique("after")).await.unwrap().duplicate);
}

#[test]
fn bad_queue_settings_refuse_to_open() {
    let mut config = EngineConfig::default();
    config.queue_defaults.max_attempts = 0;
    let err = Broker::open(
        std::sync::Arc::new(spool_store::MemStore::new()),
        std::sync::Arc::new(spool_core::ManualClock::new(T0)),
        config,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert!(err.message.contains("max attempts"), "{err}");
}
