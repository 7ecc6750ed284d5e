//! The streaming `Consume` RPC: credits cap what a worker holds, settling on the stream frees credits, a dropped
//! stream's jobs come back after their lease, and competing workers never hold the same job at once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use spool_client::{new_job, proto, Consumer, Event, Nack};
use spool_core::ErrorCode;

async fn next_event(worker: &mut Consumer) -> Event {
    worker
        .next()
        .await
        .expect("the stream is open")
        .expect("no stream error")
}

async fn next_job(worker: &mut Consumer) -> proto::Job {
    match next_event(worker).await {
        Event::Job(job) => *job,
        other => panic!("expected a job, got {other:?}"),
    }
}

async fn next_result(worker: &mut Consumer, request_id: u64) -> Result<Option<u64>, spool_client::ClientError> {
    match next_event(worker).await {
        Event::Result {
            request_id: id,
            outcome,
        } if id == request_id => outcome,
        other => panic!("expected the result of request {request_id}, got {other:?}"),
    }
}

/// A job for `work` leased for 5 s and retried without delay when its lease runs out.
fn retried_at_once(payload: &str) -> proto::NewJob {
    let mut job = new_job("work", payload);
    job.options = Some(proto::JobOptions {
        lease_ms: Some(5_000),
        retry: Some(proto::RetryPolicy {
            initial_ms: 0,
            multiplier: 1.0,
            max_ms: 0,
            jitter: proto::Jitter::None.into(),
        }),
        ..Default::default()
    });
    job
}

fn token(job: &proto::Job) -> u64 {
    job.lease.expect("leased").token
}

#[tokio::test]
async fn credits_cap_what_a_worker_holds_and_settling_frees_them() {
    let server = common::start().await;
    let c = server.client().await;
    for i in 0..5 {
        c.enqueue(new_job("work", format!("job-{i}"))).await.expect("push");
    }
    let mut worker = c.consume(&["work"], 2).await.expect("consume");
    let a = next_job(&mut worker).await;
    let b = next_job(&mut worker).await;
    assert_eq!(
        (a.payload.as_slice(), b.payload.as_slice()),
        (&b"job-0"[..], &b"job-1"[..])
    );

    // The stream is ordered and the server delivers a reservation's jobs before reading the next message, so if it
    // were going to over-deliver, a third job would arrive before this extend's result.
    let extend = worker.extend(&a.id, token(&a), Some(60_000)).await.expect("send");
    assert_eq!(
        next_result(&mut worker, extend).await.expect("extended"),
        Some(common::T0 + 60_000)
    );
    let stats = c.queue_stats("work").await.expect("stats");
    assert_eq!((stats.leased, stats.ready), (2, 3));

    // An ack frees one credit: exactly one more job follows.
    let ack = worker.ack(&a.id, token(&a)).await.expect("send");
    assert_eq!(next_result(&mut worker, ack).await.expect("acked"), None);
    let c3 = next_job(&mut worker).await;
    assert_eq!(c3.payload, b"job-2");
    // A nack frees one too, whatever it does to the job.
    let nack = worker
        .nack(&b.id, token(&b), Nack::Dead, Some("bad".into()))
        .await
        .expect("send");
    next_result(&mut worker, nack).await.expect("nacked");
    let d = next_job(&mut worker).await;
    assert_eq!(d.payload, b"job-3");
    // An ack under a token this stream never delivered is refused and frees nothing: the worker still holds `c3`
    // under its real lease. (Over-delivery would put a job between the two results.)
    let stale = worker.ack(&c3.id, 1).await.expect("send");
    let e = next_result(&mut worker, stale).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LeaseLost));
    let ack = worker.ack(&c3.id, token(&c3)).await.expect("send");
    assert_eq!(next_result(&mut worker, ack).await.expect("acked"), None);
    let e5 = next_job(&mut worker).await;
    assert_eq!(e5.payload, b"job-4");
    let stats = c.queue_stats("work").await.expect("stats");
    assert_eq!((stats.leased, stats.ready, stats.acked_total, stats.dead), (2, 0, 2, 1));

    // More credits, then new work arrives while the worker waits: delivered as it becomes ready.
    let grant = worker.grant(1).await.expect("send");
    assert_eq!(next_result(&mut worker, grant).await.expect("granted"), None);
    c.enqueue(new_job("work", "late")).await.expect("push");
    assert_eq!(next_job(&mut worker).await.payload, b"late");

    // Bad messages get an INVALID result and the stream goes on.
    let bad = worker.ack("nope", 3).await.expect("send");
    assert_eq!(
        next_result(&mut worker, bad).await.unwrap_err().code(),
        Some(ErrorCode::Invalid)
    );
    let too_many = worker.grant(5_000).await.expect("send");
    assert_eq!(
        next_result(&mut worker, too_many).await.unwrap_err().code(),
        Some(ErrorCode::Invalid)
    );
    drop(worker);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_settlement_keeps_the_credit_and_a_message_over_the_limit_ends_the_stream_with_its_status() {
    let server = common::start().await;
    let c = server.client().await;
    for i in 0..2 {
        c.enqueue(new_job("work", format!("job-{i}"))).await.expect("push");
    }
    let mut worker = c.consume(&["work"], 1).await.expect("consume");
    let a = next_job(&mut worker).await;
    // A retry delay past the engine's bound is refused; the job stays leased to this worker, so its credit stays
    // taken: the extend's result comes before any second job.
    let nack = worker
        .nack(&a.id, token(&a), Nack::RetryAfter(Duration::from_secs(1 << 40)), None)
        .await
        .expect("send");
    let e = next_result(&mut worker, nack).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Invalid));
    let extend = worker.extend(&a.id, token(&a), None).await.expect("send");
    next_result(&mut worker, extend).await.expect("still held");
    let ack = worker.ack(&a.id, token(&a)).await.expect("send");
    next_result(&mut worker, ack).await.expect("acked");
    let b = next_job(&mut worker).await;
    assert_eq!(b.payload, b"job-1");

    // A message over `max_message_bytes` (4 MiB here) ends the stream with OUT_OF_RANGE, not a clean close.
    let huge = "x".repeat(5 * 1024 * 1024);
    worker
        .nack(&b.id, token(&b), Nack::Retry, Some(huge))
        .await
        .expect("send");
    match worker.next().await {
        Some(Err(e)) => assert!(e.to_string().contains("OutOfRange"), "{e}"),
        other => panic!("expected the stream to end with an error, got {other:?}"),
    }
    drop(worker);
    server.stop().await;
}

#[tokio::test]
async fn a_job_redelivered_to_the_same_stream_takes_a_credit_per_delivery() {
    let server = common::start().await;
    let c = server.client().await;
    c.enqueue(retried_at_once("j")).await.expect("push");
    let mut worker = c.consume(&["work"], 2).await.expect("consume");
    let first = next_job(&mut worker).await;
    // The lease runs out and the retry comes straight back to this stream, under a new token.
    server.advance(5_001);
    let second = next_job(&mut worker).await;
    assert_eq!(second.id, first.id);
    assert_ne!(token(&second), token(&first));
    // Two deliveries held, two credits: a new job must wait. Over-delivery would put it before the extend's result.
    c.enqueue(new_job("work", "k")).await.expect("push");
    let extend = worker.extend(&second.id, token(&second), None).await.expect("send");
    next_result(&mut worker, extend).await.expect("extended");
    // Settling the stale delivery frees its credit, and only that one.
    let stale = worker.ack(&first.id, token(&first)).await.expect("send");
    let e = next_result(&mut worker, stale).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LeaseLost));
    assert_eq!(next_job(&mut worker).await.payload, b"k");
    let extend = worker.extend(&second.id, token(&second), None).await.expect("send");
    next_result(&mut worker, extend)
        .await
        .expect("the second delivery is still held");
    drop(worker);
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_streams_jobs_come_back_after_their_lease() {
    let server = common::start().await;
    let c = server.client().await;
    let mut ids = HashSet::new();
    for i in 0..3 {
        ids.insert(c.enqueue(retried_at_once(&format!("job-{i}"))).await.expect("push").id);
    }
    let mut crashed = c.consume(&["work"], 3).await.expect("consume");
    let mut held = HashSet::new();
    for _ in 0..3 {
        held.insert(next_job(&mut crashed).await.id);
    }
    assert_eq!(held, ids);
    drop(crashed);
    assert_eq!(
        c.queue_stats("work").await.expect("stats").leased,
        3,
        "held until the lease ends"
    );

    server.advance(5_001);
    let mut rescuer = c.consume(&["work"], 3).await.expect("consume");
    let mut again = HashSet::new();
    for _ in 0..3 {
        let job = next_job(&mut rescuer).await;
        assert_eq!(job.attempts, 2);
        assert_eq!(job.last_error.as_deref(), Some("lease expired"));
        again.insert(job.id);
    }
    assert_eq!(again, ids);
    drop(rescuer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_workers_never_hold_the_same_job() {
    const JOBS: usize = 60;
    let server = common::start().await;
    let c = server.client().await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for worker_id in 0..2 {
        let mut worker = c.consume(&["work"], 4).await.expect("consume");
        let seen = seen_tx.clone();
        workers.push(tokio::spawn(async move {
            while let Some(Ok(event)) = worker.next().await {
                if let Event::Job(job) = event {
                    // Report before acking: while this job is reported and unacked, the other worker must not
                    // have it too (no lease expires: the clock stands still).
                    if seen.send((worker_id, job.id.clone())).is_err() {
                        return;
                    }
                    worker.ack(&job.id, token(&job)).await.expect("send ack");
                }
            }
        }));
    }
    drop(seen_tx);
    let jobs: Vec<_> = (0..JOBS).map(|i| new_job("work", format!("{i}"))).collect();
    c.enqueue_batch(jobs).await.expect("batch");
    let mut seen = HashSet::new();
    let mut per_worker = [0usize; 2];
    while seen.len() < JOBS {
        let (worker_id, id) = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
            .await
            .expect("progress")
            .expect("a worker is alive");
        assert!(seen.insert(id.clone()), "job {id} delivered twice");
        per_worker[worker_id] += 1;
    }
    assert_eq!(per_worker.iter().sum::<usize>(), JOBS);
    for w in workers {
        w.abort();
    }
    let stats = c.queue_stats("work").await.expect("stats");
    assert_eq!((stats.ready, stats.failed_total), (0, 0));
    server.stop().await;
}
