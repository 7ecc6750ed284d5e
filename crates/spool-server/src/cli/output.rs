//! How client subcommands print: aligned tables for people, one JSON document for scripts.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use spool_client::proto;

/// An RFC 3339 time (UTC, milliseconds) for a ms-since-epoch timestamp.
fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn print_json(value: Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("JSON values serialise")
    );
}

/// Prints rows under headers, each column as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn enqueued(out: &proto::EnqueueResponse, json: bool) {
    if json {
        print_json(json!({ "id": out.id, "duplicate": out.duplicate }));
    } else if out.duplicate {
        println!("{} (duplicate: a live job holds the unique key)", out.id);
    } else {
        println!("{}", out.id);
    }
}

fn queue_json(q: &proto::QueueStats) -> Value {
    json!({
        "name": q.name, "paused": q.paused, "ready": q.ready, "scheduled": q.scheduled, "leased": q.leased,
        "retry": q.retry, "dead": q.dead, "oldest_ready_age_ms": q.oldest_ready_age_ms,
        "enqueued_total": q.enqueued_total, "acked_total": q.acked_total, "failed_total": q.failed_total,
        "expired_total": q.expired_total, "dead_lettered_total": q.dead_lettered_total,
    })
}

pub fn queues(queues: &[proto::QueueStats], json: bool) {
    if json {
        print_json(Value::Array(queues.iter().map(queue_json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                if q.paused { "paused" } else { "running" }.into(),
                q.ready.to_string(),
                q.scheduled.to_string(),
                q.leased.to_string(),
                q.retry.to_string(),
                q.dead.to_string(),
                q.oldest_ready_age_ms.map_or("-".into(), |ms| {
                    humantime::format_duration(Duration::from_millis(ms)).to_string()
                }),
                q.acked_total.to_string(),
                q.failed_total.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "STATE",
            "READY",
            "SCHEDULED",
            "LEASED",
            "RETRY",
            "DEAD",
            "OLDEST",
            "ACKED",
            "FAILED",
        ],
        &rows,
    );
}

fn state(job: &proto::Job) -> &'static str {
    match job.state() {
        proto::JobState::Scheduled => "scheduled",
        proto::JobState::Ready => "ready",
        proto::JobState::Leased => "leased",
        proto::JobState::Retry => "retry",
        proto::JobState::Dead => "dead",
        proto::JobState::Unspecified => "unknown",
    }
}

fn job_json(job: &proto::Job) -> Value {
    // Payloads are bytes: text when they are UTF-8, else hex, so the JSON stays valid and lossless.
    let payload = match std::str::from_utf8(&job.payload) {
        Ok(text) => json!({ "payload": text }),
        Err(_) => json!({ "payload_hex": job.payload.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    };
    let mut value = json!({
        "id": job.id, "queue": job.queue, "state": state(job), "priority": job.priority,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "lease_ms": job.lease_ms,
        "created_at_ms": job.created_at_ms, "enqueued_at_ms": job.enqueued_at_ms, "run_at_ms": job.run_at_ms,
        "expires_at_ms": job.expires_at_ms, "unique_key": job.unique_key, "headers": job.headers,
        "last_error": job.last_error, "dead_at_ms": job.dead_at_ms,
        "lease_expires_at_ms": job.lease.map(|l| l.expires_at_ms),
    });
    value
        .as_object_mut()
        .expect("an object")
        .extend(payload.as_object().expect("an object").clone());
    value
}

pub fn job(job: &proto::Job, json: bool) {
    if json {
        print_json(job_json(job));
        return;
    }
    let mut rows = vec![
        ("id", job.id.clone()),
        ("queue", job.queue.clone()),
        ("state", state(job).into()),
        ("priority", job.priority.to_string()),
        ("attempts", format!("{} of {}", job.attempts, job.max_attempts)),
        ("created", time(job.created_at_ms)),
        ("enqueued", time(job.enqueued_at_ms)),
    ];
    let optional = [
        ("run at", job.run_at_ms.map(time)),
        ("expires", job.expires_at_ms.map(time)),
        ("lease until", job.lease.map(|l| time(l.expires_at_ms))),
        ("dead since", job.dead_at_ms.map(time)),
        ("unique key", job.unique_key.clone()),
        ("last error", job.last_error.clone()),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let mut headers: Vec<_> = job.headers.iter().collect();
    headers.sort();
    rows.extend(headers.into_iter().map(|(k, v)| ("header", format!("{k}={v}"))));
    rows.push((
        "payload",
        match std::str::from_utf8(&job.payload) {
            Ok(text) => text.to_string(),
            Err(_) => format!("<{} bytes, not UTF-8>", job.payload.len()),
        },
    ));
    for (key, value) in rows {
        println!("{key:<12} {value}");
    }
}

pub fn dead(jobs: &[proto::Job], json: bool) {
    if json {
        print_json(Value::Array(jobs.iter().map(job_json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.queue.clone(),
                j.attempts.to_string(),
                j.dead_at_ms.map_or("-".into(), time),
                j.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "QUEUE", "ATTEMPTS", "DIED", "LAST ERROR"], &rows);
}

pub fn changed(verb: &str, queue: &str, changed: bool, json: bool) {
    if json {
        print_json(json!({ "queue": queue, "changed": changed }));
    } else if changed {
        println!("{queue}: {verb}");
    } else {
        println!("{queue}: already {verb}");
    }
}

pub fn count(verb: &str, n: u64, json: bool) {
    if json {
        print_json(json!({ verb: n }));
    } else {
        println!("{verb} {n}");
    }
}

pub fn health(serving: bool, json: bool) {
    let status = if serving { "SERVING" } else { "NOT_SERVING" };
    if json {
        print_json(json!({ "status": status }));
    } else {
        println!("{status}");
    }
}
