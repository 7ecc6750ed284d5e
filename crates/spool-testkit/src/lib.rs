//! Test support shared by the door crates: scenarios written once against the small [`Door`] trait and run through
//! the engine API ([`EngineDoor`]), RESP and gRPC (each door's tests implement `Door` over a real socket). Comparing
//! the outcome lists proves a door changes no outcome — the doors are thin by test, not only by intention.
//!
//! Test-only (`publish = false`); nothing in the shipped binary depends on it.

use std::time::Duration;

use spool_core::JobOptions;
use spool_engine::{Broker, DeadSelector, NackAction, NewJob, ReserveRequest};

/// A leased job as any door reports it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The job id, as text.
    pub id: String,
    /// The lease token, as text (RESP carries it as a string: it is an unsigned 64-bit number).
    pub token: String,
    /// The payload, as text.
    pub payload: String,
    /// Which attempt this reservation is (1 on the first).
    pub attempt: u32,
}

/// The operations a scenario drives, each one call through a door. Implementations panic on unexpected errors:
/// they are test code, and the scenario's outcome list is what is compared.
#[allow(async_fn_in_trait)] // test-only, driven on one task: no `Send` bound needed
pub trait Door {
    /// Enqueues a job with `max_attempts`; returns its id.
    async fn push(&mut self, queue: &str, payload: &str, max_attempts: u32) -> String;
    /// Leases exactly one ready job (the scenario only fetches when one is ready).
    async fn fetch(&mut self, queue: &str) -> Fetched;
    /// Acks a leased job.
    async fn ack(&mut self, job: &Fetched);
    /// Nacks a leased job for an immediate retry, with `error`.
    async fn nack_now(&mut self, job: &Fetched, error: &str);
    /// The last errors of the queue's dead jobs, in the order they died.
    async fn dead_errors(&mut self, queue: &str) -> Vec<Option<String>>;
    /// Replays one dead job; returns how many were replayed.
    async fn replay(&mut self, id: &str) -> u64;
}

/// The engine API itself: the reference every door is compared with.
#[derive(Debug)]
pub struct EngineDoor<'a>(pub &'a Broker);

impl Door for EngineDoor<'_> {
    async fn push(&mut self, queue: &str, payload: &str, max_attempts: u32) -> String {
        let job = NewJob {
            queue: queue.into(),
            payload: payload.as_bytes().to_vec(),
            options: JobOptions {
                max_attempts: Some(max_attempts),
                ..JobOptions::default()
            },
            ..NewJob::default()
        };
        self.0.enqueue(job).await.expect("push").id.to_string()
    }

    async fn fetch(&mut self, queue: &str) -> Fetched {
        let request = ReserveRequest::new(vec![queue.into()], 1, Duration::ZERO);
        let job = self.0.reserve(request).await.expect("fetch").remove(0);
        Fetched {
            id: job.id.to_string(),
            token: job.lease.expect("leased").token.to_string(),
            payload: String::from_utf8_lossy(&job.payload).into_owned(),
            attempt: job.attempts,
        }
    }

    async fn ack(&mut self, job: &Fetched) {
        let (id, token) = parse(job);
        self.0.ack(id, token).await.expect("ack");
    }

    async fn nack_now(&mut self, job: &Fetched, error: &str) {
        let (id, token) = parse(job);
        self.0
            .nack(id, token, NackAction::RetryAfter(0), Some(error.into()))
            .await
            .expect("nack");
    }

    async fn dead_errors(&mut self, queue: &str) -> Vec<Option<String>> {
        let dead = self.0.dead_list(Some(queue), None, 100).expect("dead list");
        dead.iter().map(|j| j.last_error().map(str::to_owned)).collect()
    }

    async fn replay(&mut self, id: &str) -> u64 {
        let id = id.parse().expect("job id");
        self.0.dead_replay(DeadSelector::One(id)).await.expect("replay")
    }
}

fn parse(job: &Fetched) -> (spool_core::JobId, u64) {
    (job.id.parse().expect("job id"), job.token.parse().expect("token"))
}

/// A queue's counts, as one comparable line.
pub fn stats_line(broker: &Broker, queue: &str) -> String {
    let s = broker.queue_stats(queue).expect("stats");
    format!(
        "stats ready={} leased={} retry={} dead={} acked={} failed={} dead_lettered={}",
        s.ready, s.leased, s.retry, s.dead, s.acked_total, s.failed_total, s.dead_lettered_total
    )
}

/// Push two jobs, fetch and ack the first, fail the second until it is dead (two attempts), replay it, fetch and
/// ack it. Returns what an observer sees after each step; `broker` is the one behind the door, for the counts.
pub async fn push_fetch_ack_nack_dead_replay(door: &mut impl Door, broker: &Broker) -> Vec<String> {
    const QUEUE: &str = "work";
    let mut out = Vec::new();
    let fetched = |job: &Fetched| format!("fetched {} attempt {}", job.payload, job.attempt);
    door.push(QUEUE, "first", 2).await;
    let failing = door.push(QUEUE, "second", 2).await;
    let job = door.fetch(QUEUE).await;
    out.push(fetched(&job));
    door.ack(&job).await;
    out.push(stats_line(broker, QUEUE));
    for _ in 0..2 {
        let job = door.fetch(QUEUE).await;
        out.push(fetched(&job));
        door.nack_now(&job, "boom").await;
        out.push(stats_line(broker, QUEUE));
    }
    let dead = door.dead_errors(QUEUE).await;
    out.push(format!("dead {} {:?}", dead.len(), dead.first()));
    out.push(format!("replayed {}", door.replay(&failing).await));
    let job = door.fetch(QUEUE).await;
    out.push(fetched(&job));
    out.push(format!("same job came back: {}", job.id == failing));
    door.ack(&job).await;
    out.push(stats_line(broker, QUEUE));
    out
}
