//! `SCHED.*` over a real socket: create, bad input naming the field, list, trigger-now with its history and outcome,
//! enable/disable, delete.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use redis::{RedisError, Value};
use spool_core::ManualClock;

async fn sched(c: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Result<Value, RedisError> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await
}

fn error_text(e: RedisError) -> String {
    format!("{} {}", e.code().unwrap_or_default(), e.detail().unwrap_or_default())
}

#[tokio::test]
async fn schedules_over_resp() {
    let clock = ManualClock::new(1_700_000_000_000);
    let server = common::start_with(common::broker_with(Arc::new(clock.clone())), Default::default()).await;
    let mut c = server.client().await;

    let ok = sched(
        &mut c,
        &[
            "SCHED.CREATE",
            "nightly",
            "default",
            "report",
            "CRON",
            "30 2 * * *",
            "TZ",
            "America/New_York",
            "CATCHUP",
            "ALL",
            "LIMIT",
            "5",
            "OVERLAP",
            "SKIP",
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok, Value::Okay);
    sched(&mut c, &["SCHED.CREATE", "tick", "default", "t", "EVERY", "30000"])
        .await
        .unwrap();

    for (args, expected) in [
        (
            vec!["SCHED.CREATE", "nightly", "default", "x", "EVERY", "1000"],
            "INVALID name: a schedule named nightly already exists",
        ),
        (
            vec!["SCHED.CREATE", "c", "default", "x", "CRON", "61 * * * *"],
            "INVALID cron:",
        ),
        (
            vec![
                "SCHED.CREATE",
                "z",
                "default",
                "x",
                "CRON",
                "* * * * *",
                "TZ",
                "Mars/Olympus",
            ],
            "INVALID timezone:",
        ),
        (
            vec!["SCHED.CREATE", "e", "default", "x", "EVERY", "0"],
            "INVALID every:",
        ),
        (
            vec!["SCHED.CREATE", "q", "bad queue", "x", "EVERY", "1000"],
            "INVALID queue:",
        ),
        (
            vec!["SCHED.CREATE", "n", "default", "x", "DISABLED"],
            "ERR syntax error: one of CRON, EVERY or AT is required",
        ),
        (
            vec!["SCHED.UPDATE", "missing", "default", "x", "EVERY", "1000"],
            "NOTFOUND",
        ),
    ] {
        let e = error_text(sched(&mut c, &args).await.unwrap_err());
        assert!(e.starts_with(expected), "{args:?}: {e}");
    }

    let list: Vec<HashMap<String, Value>> = redis::cmd("SCHED.LIST").query_async(&mut c).await.unwrap();
    assert_eq!(list.len(), 2);
    let nightly = &list[0];
    assert_eq!(nightly["name"], Value::BulkString(b"nightly".to_vec()));
    assert_eq!(nightly["tz"], Value::BulkString(b"America/New_York".to_vec()));
    assert_eq!(nightly["catch_up"], Value::BulkString(b"all".to_vec()));
    assert!(matches!(nightly["next_tick_ms"], Value::Int(t) if t > 1_700_000_000_000));

    let id: String = redis::cmd("SCHED.TRIGGER")
        .arg("tick")
        .query_async(&mut c)
        .await
        .unwrap();
    let history: Vec<HashMap<String, Value>> = redis::cmd("SCHED.HISTORY")
        .arg("tick")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["kind"], Value::BulkString(b"manual".to_vec()));
    assert_eq!(history[0]["job"], Value::BulkString(id.clone().into_bytes()));
    assert_eq!(history[0]["outcome"], Value::BulkString(b"ready".to_vec()));
    let job: HashMap<String, Value> = redis::cmd("JOB.GET").arg(&id).query_async(&mut c).await.unwrap();
    assert_eq!(job["payload"], Value::BulkString(b"t".to_vec()));

    let changed: i64 = redis::cmd("SCHED.DISABLE")
        .arg("tick")
        .query_async(&mut c)
        .await
        .unwrap();
    let again: i64 = redis::cmd("SCHED.DISABLE")
        .arg("tick")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!((changed, again), (1, 0));
    let got: HashMap<String, Value> = redis::cmd("SCHED.GET").arg("tick").query_async(&mut c).await.unwrap();
    assert_eq!(got["enabled"], Value::Int(0));
    assert_eq!(got["next_tick_ms"], Value::Nil);
    let deleted: i64 = redis::cmd("SCHED.DEL").arg("tick").query_async(&mut c).await.unwrap();
    assert_eq!(deleted, 1);
    let e = error_text(sched(&mut c, &["SCHED.GET", "tick"]).await.unwrap_err());
    assert!(e.starts_with("NOTFOUND"), "{e}");
}
