//! One scenario — push, fetch, ack, nack → retry → dead, replay — run through the engine API and through RESP; the
//! door must not change any outcome.

mod common;

use std::collections::HashMap;

use redis::Value;
use spool_core::{JobId, JobOptions};
use spool_engine::{Broker, NackAction, NewJob, ReserveRequest};
use spool_resp::RespConfig;

/// What an observer can see after each step; the two runs must produce the same list.
type Outcomes = Vec<String>;

fn stats_line(broker: &Broker) -> String {
    let s = broker.queue_stats("work").expect("stats");
    format!(
        "stats ready={} leased={} retry={} dead={} acked={} failed={} dead_lettered={}",
        s.ready, s.leased, s.retry, s.dead, s.acked_total, s.failed_total, s.dead_lettered_total
    )
}

async fn through_engine(broker: &Broker) -> Outcomes {
    let mut out = Vec::new();
    let push = |payload: &str| NewJob {
        queue: "work".into(),
        payload: payload.as_bytes().to_vec(),
        options: JobOptions {
            max_attempts: Some(2),
            ..JobOptions::default()
        },
        ..NewJob::default()
    };
    let fetch = || ReserveRequest::new(vec!["work".into()], 1, std::time::Duration::ZERO);
    broker.enqueue(push("first")).await.expect("push");
    let failing = broker.enqueue(push("second")).await.expect("push").id;
    let job = broker.reserve(fetch()).await.expect("fetch").remove(0);
    out.push(format!(
        "fetched {} attempt {}",
        String::from_utf8_lossy(&job.payload),
        job.attempts
    ));
    broker.ack(job.id, job.lease.unwrap().token).await.expect("ack");
    out.push(stats_line(broker));
    for _ in 0..2 {
        let job = broker.reserve(fetch()).await.expect("fetch").remove(0);
        out.push(format!(
            "fetched {} attempt {}",
            String::from_utf8_lossy(&job.payload),
            job.attempts
        ));
        broker
            .nack(
                job.id,
                job.lease.unwrap().token,
                NackAction::RetryAfter(0),
                Some("boom".into()),
            )
            .await
            .expect("nack");
        out.push(stats_line(broker));
    }
    let dead = broker.dead_list(Some("work"), None, 10).expect("dead list");
    out.push(format!("dead {} {:?}", dead.len(), dead[0].last_error));
    out.push(format!(
        "replayed {}",
        broker
            .dead_replay(spool_engine::DeadSelector::One(failing))
            .await
            .expect("replay")
    ));
    let job = broker.reserve(fetch()).await.expect("fetch").remove(0);
    out.push(format!(
        "fetched {} attempt {}",
        String::from_utf8_lossy(&job.payload),
        job.attempts
    ));
    broker.ack(job.id, job.lease.unwrap().token).await.expect("ack");
    out.push(stats_line(broker));
    out
}

fn field(job: &HashMap<String, Value>, key: &str) -> String {
    redis::from_redis_value(&job[key]).expect(key)
}

async fn through_resp(c: &mut redis::aio::MultiplexedConnection, broker: &Broker) -> Outcomes {
    let mut out = Vec::new();
    let fetch = |c: &mut redis::aio::MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            let mut jobs: Vec<HashMap<String, Value>> = redis::cmd("JOB.FETCH")
                .arg("work")
                .query_async(&mut c)
                .await
                .expect("fetch");
            jobs.remove(0)
        }
    };
    let push = |c: &mut redis::aio::MultiplexedConnection, payload: &'static str| {
        let mut c = c.clone();
        async move {
            let id: String = redis::cmd("JOB.PUSH")
                .arg("work")
                .arg(payload)
                .arg("MAXATTEMPTS")
                .arg(2)
                .query_async(&mut c)
                .await
                .expect("push");
            id
        }
    };
    push(c, "first").await;
    let failing = push(c, "second").await;
    let job = fetch(c).await;
    out.push(format!(
        "fetched {} attempt {}",
        field(&job, "payload"),
        field(&job, "attempt")
    ));
    let () = redis::cmd("JOB.ACK")
        .arg(field(&job, "id"))
        .arg(field(&job, "token"))
        .query_async(c)
        .await
        .expect("ack");
    out.push(stats_line(broker));
    for _ in 0..2 {
        let job = fetch(c).await;
        out.push(format!(
            "fetched {} attempt {}",
            field(&job, "payload"),
            field(&job, "attempt")
        ));
        let () = redis::cmd("JOB.NACK")
            .arg(field(&job, "id"))
            .arg(field(&job, "token"))
            .arg("DELAY")
            .arg(0)
            .arg("ERROR")
            .arg("boom")
            .query_async(c)
            .await
            .expect("nack");
        out.push(stats_line(broker));
    }
    let dead: Vec<HashMap<String, Value>> = redis::cmd("DEAD.LIST").arg("work").query_async(c).await.expect("dead");
    let last_error: Option<String> = redis::from_redis_value(&dead[0]["last_error"]).expect("last_error");
    out.push(format!("dead {} {:?}", dead.len(), last_error));
    let replayed: u64 = redis::cmd("DEAD.REPLAY")
        .arg(&failing)
        .query_async(c)
        .await
        .expect("replay");
    out.push(format!("replayed {replayed}"));
    let job = fetch(c).await;
    out.push(format!(
        "fetched {} attempt {}",
        field(&job, "payload"),
        field(&job, "attempt")
    ));
    assert_eq!(field(&job, "id").parse::<JobId>().expect("id").to_string(), failing);
    let () = redis::cmd("JOB.ACK")
        .arg(field(&job, "id"))
        .arg(field(&job, "token"))
        .query_async(c)
        .await
        .expect("ack");
    out.push(stats_line(broker));
    out
}

#[tokio::test]
async fn the_door_changes_no_outcome() {
    let direct = common::broker_with(std::sync::Arc::new(spool_core::SystemClock));
    let expected = through_engine(&direct).await;
    assert_eq!(expected[0], "fetched first attempt 1");
    assert!(expected[5].contains("dead=1"), "{expected:?}");

    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    let via_resp = through_resp(&mut c, &server.broker).await;
    assert_eq!(via_resp, expected);
    server.stop().await;
}
