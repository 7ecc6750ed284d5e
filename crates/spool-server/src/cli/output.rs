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

/// `kind` is what `name` is (`queue`, `schedule`): the JSON key it goes under.
pub fn changed(kind: &str, verb: &str, name: &str, changed: bool, json: bool) {
    if json {
        print_json(json!({ kind: name, "changed": changed }));
    } else if changed {
        println!("{name}: {verb}");
    } else {
        println!("{name}: already {verb}");
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

fn trigger_text(def: &proto::ScheduleDef) -> String {
    use proto::schedule_def::Trigger;
    match &def.trigger {
        Some(Trigger::Cron(c)) => format!("cron {:?} {}", c.expr, c.timezone),
        Some(Trigger::EveryMs(ms)) => format!("every {}", humantime::format_duration(Duration::from_millis(*ms))),
        Some(Trigger::AtMs(ms)) => format!("at {}", time(*ms)),
        None => "-".into(),
    }
}

fn trigger_json(def: &proto::ScheduleDef) -> Value {
    use proto::schedule_def::Trigger;
    match &def.trigger {
        Some(Trigger::Cron(c)) => json!({ "cron": c.expr, "timezone": c.timezone }),
        Some(Trigger::EveryMs(ms)) => json!({ "every_ms": ms }),
        Some(Trigger::AtMs(ms)) => json!({ "at_ms": ms }),
        None => Value::Null,
    }
}

/// Enum words as the docs and the RESP door spell them (`skip`, `skipped_overlap`), not prost's `CATCH_UP_SKIP`.
fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn firing_json(f: &proto::Firing) -> Value {
    json!({
        "tick_at_ms": f.tick_at_ms, "recorded_at_ms": f.recorded_at_ms,
        "kind": word(f.kind().as_str_name(), "FIRING_KIND_"), "job_id": f.job_id,
        "outcome": outcome(f), "missed": f.missed,
    })
}

/// The job's state, `done` once it is gone, or nothing for firings without a job of their own.
fn outcome(f: &proto::Firing) -> Option<String> {
    if f.job_done {
        Some("done".into())
    } else if f.job_state() != proto::JobState::Unspecified {
        Some(word(f.job_state().as_str_name(), "JOB_STATE_"))
    } else {
        None
    }
}

fn schedule_json(s: &proto::Schedule) -> Value {
    let def = s.def.clone().unwrap_or_default();
    let job = def.job.clone().unwrap_or_default();
    json!({
        "name": def.name, "queue": job.queue, "payload": String::from_utf8_lossy(&job.payload),
        "trigger": trigger_json(&def), "catch_up": word(def.catch_up().as_str_name(), "CATCH_UP_"),
        "catch_up_limit": def.catch_up_limit, "overlap": word(def.overlap().as_str_name(), "OVERLAP_"),
        "priority": job.priority, "ttl_ms": job.ttl_ms, "max_attempts": job.max_attempts, "lease_ms": job.lease_ms,
        "jitter_ms": def.jitter_ms, "headers": job.headers,
        "start_at_ms": def.start_at_ms, "end_at_ms": def.end_at_ms, "enabled": def.enabled.unwrap_or(true),
        "origin": word(s.origin().as_str_name(), "SCHEDULE_ORIGIN_"), "last_tick_at_ms": s.last_tick_at_ms,
        "next_tick_at_ms": s.next_tick_at_ms, "history": s.history.iter().map(firing_json).collect::<Vec<_>>(),
    })
}

/// `from … until …` of a schedule's start and end, or `-`.
fn window_text(def: &proto::ScheduleDef) -> String {
    match (def.start_at_ms, def.end_at_ms) {
        (None, None) => "-".into(),
        (start, end) => format!(
            "from {} until {}",
            start.map_or("-".into(), time),
            end.map_or("-".into(), time)
        ),
    }
}

/// A run's job options that are set, as `key=value` words; unset ones take the queue's.
fn job_text(value: &Value) -> String {
    let words: Vec<String> = ["priority", "max_attempts", "lease_ms", "ttl_ms", "jitter_ms"]
        .into_iter()
        // jitter_ms is always present (0: none); the others are absent (null) when unset.
        .filter(|key| value[key].as_u64().is_some_and(|v| v > 0 || *key != "jitter_ms"))
        .map(|key| format!("{key}={}", value[key]))
        .collect();
    if words.is_empty() {
        "queue defaults".into()
    } else {
        words.join(" ")
    }
}

pub fn schedules(schedules: &[proto::Schedule], json: bool) {
    if json {
        print_json(Value::Array(schedules.iter().map(schedule_json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            let def = s.def.clone().unwrap_or_default();
            vec![
                def.name.clone(),
                def.job.as_ref().map_or(String::new(), |j| j.queue.clone()),
                trigger_text(&def),
                if def.enabled.unwrap_or(true) {
                    "enabled"
                } else {
                    "disabled"
                }
                .into(),
                word(s.origin().as_str_name(), "SCHEDULE_ORIGIN_"),
                s.next_tick_at_ms.map_or("-".into(), time),
            ]
        })
        .collect();
    table(&["SCHEDULE", "QUEUE", "TRIGGER", "STATE", "ORIGIN", "NEXT RUN"], &rows);
}

pub fn schedule(s: &proto::Schedule, json: bool) {
    if json {
        print_json(schedule_json(s));
        return;
    }
    let value = schedule_json(s);
    let def = s.def.clone().unwrap_or_default();
    let rows = [
        ("name", def.name.clone()),
        ("queue", value["queue"].as_str().unwrap_or_default().to_string()),
        ("trigger", trigger_text(&def)),
        (
            "state",
            if def.enabled.unwrap_or(true) {
                "enabled"
            } else {
                "disabled"
            }
            .into(),
        ),
        ("origin", value["origin"].as_str().unwrap_or_default().to_string()),
        ("catch-up", value["catch_up"].as_str().unwrap_or_default().to_string()),
        ("overlap", value["overlap"].as_str().unwrap_or_default().to_string()),
        ("window", window_text(&def)),
        ("job", job_text(&value)),
        ("last tick", s.last_tick_at_ms.map_or("-".into(), time)),
        ("next run", s.next_tick_at_ms.map_or("-".into(), time)),
        ("payload", value["payload"].as_str().unwrap_or_default().to_string()),
    ];
    for (key, value) in rows {
        println!("{key:<12} {value}");
    }
    println!();
    let history: Vec<Vec<String>> = s
        .history
        .iter()
        .map(|f| {
            vec![
                time(f.tick_at_ms),
                word(f.kind().as_str_name(), "FIRING_KIND_"),
                f.job_id.clone().unwrap_or_else(|| "-".into()),
                outcome(f).unwrap_or_else(|| "-".into()),
                f.missed.to_string(),
            ]
        })
        .collect();
    table(&["TICK", "KIND", "JOB", "OUTCOME", "MISSED"], &history);
}

pub fn done(verb: &str, name: &str, json: bool) {
    if json {
        print_json(json!({ "schedule": name, verb: true }));
    } else {
        println!("{name}: {verb}");
    }
}

pub fn triggered(name: &str, job_id: &str, json: bool) {
    if json {
        print_json(json!({ "schedule": name, "job_id": job_id }));
    } else {
        println!("{job_id}");
    }
}
