//! The gRPC pattern: the same producers and consumers as over RESP, through `spool-client` (Enqueue /
//! EnqueueBatch, Reserve with a count, Ack / AckBatch, Nack). `--pipeline` requests are in flight per producer or
//! consumer at once; clones of one `Client` share its HTTP/2 connection, so each task opens its own.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spool_client::{proto, Client, Nack};
use tokio::task::JoinSet;

use crate::{chosen, decode, histogram, payload, Mode, Options, Shared, TaskResult, BALLAST};

pub(crate) async fn produce(
    p: usize,
    quota: Option<u64>,
    opts: &Options,
    shared: &Shared,
    queue: &str,
    endpoint: &str,
) -> TaskResult {
    let mut result = TaskResult {
        latency: Some(histogram()),
        ..TaskResult::default()
    };
    let client = match Client::connect(endpoint.to_string()).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(1, &format!("connect: {e}"));
            shared.producers_left.fetch_sub(1, Ordering::Release);
            return result;
        }
    };
    let per_job = opts.rate.map(|r| Duration::from_secs_f64(opts.connections as f64 / r));
    let start = Instant::now();
    let mut seq = 0u64;
    loop {
        let remaining = quota.map_or(u64::MAX, |q| q - seq);
        if remaining == 0 || shared.stop_producing.load(Ordering::Relaxed) {
            break;
        }
        if let Some(per_job) = per_job {
            tokio::time::sleep_until((start + per_job.mul_f64(seq as f64)).into()).await;
        }
        let mut in_flight = JoinSet::new();
        let mut left = remaining;
        for _ in 0..opts.pipeline {
            if left == 0 {
                break;
            }
            let now = shared.now_ns();
            let (ids, delay) = crate::next_batch(opts, p, &mut seq, &mut left, &mut result);
            let jobs: Vec<proto::NewJob> = ids
                .iter()
                .map(|&id| {
                    let mut job = spool_client::new_job(queue, payload(opts.payload, now, id));
                    job.options = Some(proto::JobOptions {
                        delay_ms: delay,
                        // Ahead of any --backlog ballast, which is pushed at priority 0.
                        priority: (opts.backlog > 0).then_some(1),
                        ..Default::default()
                    });
                    job
                })
                .collect();
            let client = client.clone();
            in_flight.spawn(async move {
                let sent = Instant::now();
                let outcome = if jobs.len() == 1 {
                    client
                        .enqueue(jobs.into_iter().next().expect("one job"))
                        .await
                        .map(|_| ())
                } else {
                    client.enqueue_batch(jobs).await.map(|_| ())
                };
                (ids, outcome, sent.elapsed())
            });
        }
        while let Some(done) = in_flight.join_next().await {
            let (ids, outcome, took) = done.expect("enqueue task");
            match outcome {
                Ok(()) => {
                    shared.enqueued.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    result.ids.extend(ids);
                    let _ = result
                        .latency
                        .as_mut()
                        .expect("set above")
                        .record((took.as_nanos() as u64).max(1));
                }
                Err(e) => {
                    shared.error(ids.len() as u64, &e.to_string());
                    result.unconfirmed.extend(ids);
                }
            }
        }
    }
    shared.producers_left.fetch_sub(1, Ordering::Release);
    result
}

pub(crate) async fn consume(opts: &Options, shared: &Shared, queues: &[String], endpoint: &str) -> TaskResult {
    let mut result = TaskResult {
        latency: Some(histogram()),
        ..TaskResult::default()
    };
    let client = match Client::connect(endpoint.to_string()).await {
        Ok(c) => c,
        Err(e) => {
            shared.error(1, &format!("connect: {e}"));
            return result;
        }
    };
    let queue_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut drain = crate::Drain::new(opts);
    while !drain.done(shared) {
        let fetch_ns = shared.now_ns();
        let mut reserves = JoinSet::new();
        for _ in 0..opts.pipeline {
            let client = client.clone();
            let queues: Vec<String> = queue_refs.iter().map(|q| q.to_string()).collect();
            let count = opts.batch as u32;
            reserves.spawn(async move {
                let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
                client.reserve(&queues, count, Duration::from_millis(100)).await
            });
        }
        // (id, token, sent_ns, bench id, attempt)
        let mut jobs = Vec::new();
        while let Some(done) = reserves.join_next().await {
            match done.expect("reserve task") {
                Ok(batch) => {
                    for job in batch {
                        let token = job.lease.as_ref().map_or(0, |l| l.token);
                        let (sent_ns, id) = match decode(&job.payload) {
                            Some(d) => d,
                            None if job.payload.starts_with(b"ballast") => (0, BALLAST),
                            None => {
                                shared.error(1, "fetched a job the bench did not write");
                                continue;
                            }
                        };
                        let sent_ns = if opts.mode == Mode::Consume { fetch_ns } else { sent_ns };
                        jobs.push((job.id, token, sent_ns, id, job.attempts));
                    }
                }
                Err(e) => shared.error(1, &e.to_string()),
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let (nacks, acks): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(_, _, _, id, attempts)| {
            opts.mode == Mode::Mixed && *attempts <= 1 && chosen(*id, 2, opts.retry_fraction)
        });
        let mut settles = JoinSet::new();
        for (id, token, ..) in &nacks {
            let (client, id, token) = (client.clone(), id.clone(), *token);
            let delay = Duration::from_millis(opts.retry_delay_ms);
            settles.spawn(async move { client.nack(&id, token, Nack::RetryAfter(delay), None).await.map(|_| 0) });
        }
        result.nacks += nacks.len() as u64;
        let mut acked = Vec::new();
        if opts.batch > 1 {
            let pairs: Vec<(&str, u64)> = acks.iter().map(|(id, token, ..)| (id.as_str(), *token)).collect();
            match client.ack_batch(&pairs).await {
                Ok(outcomes) => {
                    for (job, outcome) in acks.iter().zip(outcomes) {
                        match outcome {
                            Ok(()) => acked.push((job.2, job.3)),
                            Err(e) => shared.error(1, &e.to_string()),
                        }
                    }
                }
                Err(e) => shared.error(acks.len() as u64, &e.to_string()),
            }
        } else {
            let mut singles = JoinSet::new();
            for (id, token, sent_ns, bench, _) in acks {
                let client = client.clone();
                singles.spawn(async move { (client.ack(&id, token).await, sent_ns, bench) });
            }
            while let Some(done) = singles.join_next().await {
                match done.expect("ack task") {
                    (Ok(()), sent_ns, bench) => acked.push((sent_ns, bench)),
                    (Err(e), ..) => shared.error(1, &e.to_string()),
                }
            }
        }
        while let Some(done) = settles.join_next().await {
            if let Err(e) = done.expect("nack task") {
                shared.error(1, &e.to_string());
            }
        }
        let now = shared.now_ns();
        let mut got = 0;
        for (sent_ns, bench) in acked {
            if bench == BALLAST {
                result.ballast_acked += 1;
                continue;
            }
            result.ids.push(bench);
            let _ = result
                .latency
                .as_mut()
                .expect("set")
                .record(now.saturating_sub(sent_ns).max(1));
            got += 1;
        }
        shared.received.fetch_add(got, Ordering::Relaxed);
        shared.last_receipt_ns.fetch_max(now, Ordering::Relaxed);
    }
    result
}
