//! Commands through the `redis` crate against an in-process server: connection commands, RESP3, native job
//! commands, Redis list semantics, blocking pops and transactions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use redis::{AsyncCommands, Value};
use spool_core::SystemClock;
use spool_engine::{Broker, EngineConfig};
use spool_resp::RespConfig;
use spool_store::{SledConfig, SledStore};

type Fields = HashMap<String, Value>;

fn text(fields: &Fields, key: &str) -> String {
    redis::from_redis_value(&fields[key]).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn int(fields: &Fields, key: &str) -> i64 {
    redis::from_redis_value(&fields[key]).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test]
async fn connection_commands_answer_like_redis() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    let pong: String = redis::cmd("PING").query_async(&mut c).await?;
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("PING").arg("hi").query_async(&mut c).await?;
    assert_eq!(echo, "hi");
    let echo: Vec<u8> = redis::cmd("ECHO").arg(&b"bin\0\xff"[..]).query_async(&mut c).await?;
    assert_eq!(echo, b"bin\0\xff");
    let () = redis::cmd("SELECT").arg(0).query_async(&mut c).await?;
    let err = redis::cmd("SELECT").arg(1).query_async::<()>(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("DB index is out of range"), "{err}");
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query_async(&mut c)
        .await?;
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query_async(&mut c).await?;
    assert_eq!(name, "worker-1");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await?;
    assert!(id > 0);
    let err = redis::cmd("CLIENT")
        .arg("KILL")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown subcommand 'KILL'"), "{err}");
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query_async(&mut c).await?;
    assert!(count > 30);
    let docs: Value = redis::cmd("COMMAND").arg("DOCS").query_async(&mut c).await?;
    assert!(matches!(docs, Value::Array(ref v) if v.is_empty()), "{docs:?}");
    let time: Vec<String> = redis::cmd("TIME").query_async(&mut c).await?;
    assert!(time[0].parse::<u64>()? > 1_600_000_000);
    let _: String = c.lpush("emails", "a").await.map(|n: i64| n.to_string())?;
    let info: String = redis::cmd("INFO").query_async(&mut c).await?;
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains("# Spool"), "{info}");
    assert!(info.contains("queue_emails:ready=1,"), "{info}");
    let only_spool: String = redis::cmd("INFO").arg("spool").query_async(&mut c).await?;
    assert!(!only_spool.contains("# Server"));
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await?;
    assert_eq!(size, 1);
    // The connection survived every error above.
    let pong: String = redis::cmd("PING").query_async(&mut c).await?;
    assert_eq!(pong, "PONG");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn hello_3_switches_every_reply_to_resp3() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    raw.send(b"HELLO 3\r\n").await;
    assert_eq!(raw.line().await, "%7");
    let mut hello = Vec::new();
    // The last pair is `modules` with an empty array.
    while hello.last().map(String::as_str) != Some("*0") {
        hello.push(raw.line().await);
    }
    let proto = hello.iter().position(|l| l == "proto").expect("proto key");
    assert_eq!(hello[proto + 1], ":3");
    // Nulls, maps and booleans now take their RESP3 forms.
    assert_eq!(raw.ask(b"CLIENT GETNAME\r\n").await, "_");
    assert_eq!(raw.ask(b"RPOP nothing-here\r\n").await, "_");
    raw.send(b"QUEUE.STATS default\r\n").await;
    assert_eq!(raw.line().await, "%13");
    let mut stats = Vec::new();
    for _ in 0..6 {
        stats.push(raw.line().await);
    }
    assert_eq!(stats, ["$4", "name", "$7", "default", "$6", "paused"]);
    assert_eq!(raw.line().await, "#f");
    let mut other = server.raw().await;
    assert_eq!(other.ask(b"HELLO 4\r\n").await, "-NOPROTO unsupported protocol version");

    // The redis crate's RESP3 mode parses every reply shape we send.
    let mut c = server.client_resp3().await;
    let id: String = redis::cmd("JOB.PUSH").arg("q3").arg("p").query_async(&mut c).await?;
    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH").arg("q3").query_async(&mut c).await?;
    assert_eq!(text(&jobs[0], "id"), id);
    let stats: Fields = redis::cmd("QUEUE.STATS").arg("q3").query_async(&mut c).await?;
    assert_eq!(stats["paused"], Value::Boolean(false));
    assert_eq!(int(&stats, "leased"), 1);
    let none: Option<Vec<u8>> = c.rpop("q3", None).await?;
    assert_eq!(none, None);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn job_life_through_native_commands() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    let id: String = redis::cmd("JOB.PUSH")
        .arg("emails")
        .arg("hello")
        .arg("PRIORITY")
        .arg(5)
        .arg("MAXATTEMPTS")
        .arg(2)
        .arg("HEADER")
        .arg("trace")
        .arg("t-1")
        .query_async(&mut c)
        .await?;
    let same: String = redis::cmd("JOB.PUSH")
        .arg("emails")
        .arg("other")
        .arg("UNIQUE")
        .arg("k1")
        .query_async(&mut c)
        .await?;
    let dup: String = redis::cmd("JOB.PUSH")
        .arg("emails")
        .arg("again")
        .arg("UNIQUE")
        .arg("k1")
        .query_async(&mut c)
        .await?;
    assert_eq!(same, dup, "a held unique key returns the holder's id");

    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH")
        .arg("emails")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await?;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(text(job, "id"), id, "priority 5 goes first");
    assert_eq!(text(job, "payload"), "hello");
    assert_eq!(int(job, "attempt"), 1);
    let headers: HashMap<String, String> = redis::from_redis_value(&job["headers"])?;
    assert_eq!(headers["trace"], "t-1");
    let token = text(job, "token");

    let expiry: i64 = redis::cmd("JOB.EXTEND")
        .arg(&id)
        .arg(&token)
        .arg("LEASE")
        .arg(60_000)
        .query_async(&mut c)
        .await?;
    assert!(expiry > int(job, "lease_expires_at") - 1);
    let err = redis::cmd("JOB.ACK")
        .arg(&id)
        .arg("12345")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("LEASELOST"), "{err}");

    let () = redis::cmd("JOB.NACK")
        .arg(&id)
        .arg(&token)
        .arg("DELAY")
        .arg(0)
        .arg("ERROR")
        .arg("smtp down")
        .query_async(&mut c)
        .await?;
    let got: Fields = redis::cmd("JOB.GET").arg(&id).query_async(&mut c).await?;
    assert_eq!(text(&got, "state"), "ready");
    assert_eq!(text(&got, "last_error"), "smtp down");
    assert!(!got.contains_key("token"), "GET never shows the lease token");

    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH").arg("emails").query_async(&mut c).await?;
    assert_eq!(int(&jobs[0], "attempt"), 2);
    let () = redis::cmd("JOB.NACK")
        .arg(&id)
        .arg(text(&jobs[0], "token"))
        .query_async(&mut c)
        .await?;
    let dead: Vec<Fields> = redis::cmd("DEAD.LIST").arg("emails").query_async(&mut c).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(text(&dead[0], "id"), id);
    let replayed: i64 = redis::cmd("DEAD.REPLAY").arg(&id).query_async(&mut c).await?;
    assert_eq!(replayed, 1);

    // Ack several at once: each pair gets its own answer.
    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH")
        .arg("emails")
        .arg("COUNT")
        .arg(10)
        .query_async(&mut c)
        .await?;
    assert_eq!(jobs.len(), 2);
    let mut ack = redis::cmd("JOB.ACK");
    for job in &jobs {
        ack.arg(text(job, "id")).arg(text(job, "token"));
    }
    ack.arg(text(&jobs[0], "id")).arg(text(&jobs[0], "token"));
    // The redis crate turns a nested error into an error of the whole reply; the raw bytes show each answer.
    let mut raw = server.raw().await;
    let packed = ack.get_packed_command();
    raw.send(&packed).await;
    assert_eq!(raw.line().await, "*3");
    assert_eq!(raw.line().await, "+OK");
    assert_eq!(raw.line().await, "+OK");
    assert!(raw.line().await.starts_with("-NOTFOUND no job "));

    let stats: Fields = redis::cmd("QUEUE.STATS").arg("emails").query_async(&mut c).await?;
    assert_eq!(int(&stats, "acked_total"), 2);
    assert_eq!(int(&stats, "dead_lettered_total"), 1);
    assert_eq!(int(&stats, "ready") + int(&stats, "leased") + int(&stats, "dead"), 0);

    let err = redis::cmd("JOB.GET")
        .arg(&id)
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOTFOUND"));
    let err = redis::cmd("JOB.PUSH")
        .arg("emails")
        .arg(vec![0u8; 1024 * 1024 + 1])
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("TOOBIG"), "{err}");
    let err = redis::cmd("JOB.PUSH")
        .arg("bad queue")
        .arg("x")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID"), "{err}");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn queue_admin_commands() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    let ids: Vec<String> = redis::cmd("JOB.PUSHMANY")
        .arg("reports")
        .arg("DELAY")
        .arg(60_000)
        .arg("PAYLOADS")
        .arg("a")
        .arg("b")
        .query_async(&mut c)
        .await?;
    assert_eq!(ids.len(), 2);
    let queues: Vec<String> = redis::cmd("QUEUE.LIST").query_async(&mut c).await?;
    assert!(queues.contains(&"reports".to_string()));
    let stats: Fields = redis::cmd("QUEUE.STATS").arg("reports").query_async(&mut c).await?;
    assert_eq!(int(&stats, "scheduled"), 2);
    let () = redis::cmd("JOB.CANCEL").arg(&ids[0]).query_async(&mut c).await?;
    let purged: i64 = redis::cmd("QUEUE.PURGE").arg("reports").query_async(&mut c).await?;
    assert_eq!(purged, 1);

    let paused: i64 = redis::cmd("QUEUE.PAUSE").arg("default").query_async(&mut c).await?;
    assert_eq!(paused, 1);
    let _: i64 = c.lpush("default", "x").await?;
    let nothing: Vec<Fields> = redis::cmd("JOB.FETCH").arg("default").query_async(&mut c).await?;
    assert!(nothing.is_empty(), "a paused queue hands out nothing");
    let resumed: i64 = redis::cmd("QUEUE.RESUME").arg("default").query_async(&mut c).await?;
    assert_eq!(resumed, 1);
    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH").arg("default").query_async(&mut c).await?;
    assert_eq!(jobs.len(), 1);
    let () = redis::cmd("JOB.NACK")
        .arg(text(&jobs[0], "id"))
        .arg(text(&jobs[0], "token"))
        .arg("DEAD")
        .query_async(&mut c)
        .await?;
    let purged: i64 = redis::cmd("DEAD.PURGE")
        .arg("QUEUE")
        .arg("default")
        .query_async(&mut c)
        .await?;
    assert_eq!(purged, 1);
    let err = redis::cmd("QUEUE.STATS")
        .arg("nope")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOTFOUND"));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn lists_keep_redis_order() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    // LPUSH a b c makes the list [c b a]; RPOP takes from the right: FIFO.
    let len: i64 = c.lpush("l", &["a", "b", "c"]).await?;
    assert_eq!(len, 3);
    let range: Vec<String> = c.lrange("l", 0, -1).await?;
    assert_eq!(range, ["c", "b", "a"]);
    // RPUSH puts d at the right end, where the next RPOP takes it.
    let len: i64 = c.rpush("l", "d").await?;
    assert_eq!(len, 4);
    let range: Vec<String> = c.lrange("l", 0, -1).await?;
    assert_eq!(range, ["c", "b", "a", "d"]);
    let range: Vec<String> = c.lrange("l", -2, 10).await?;
    assert_eq!(range, ["a", "d"]);
    let range: Vec<String> = c.lrange("l", 3, 1).await?;
    assert!(range.is_empty());
    let last: String = c.rpop("l", None).await?;
    assert_eq!(last, "d");
    let first: String = c.lpop("l", None).await?;
    assert_eq!(first, "c");
    let two: Vec<String> = c.rpop("l", std::num::NonZeroUsize::new(5)).await?;
    assert_eq!(two, ["a", "b"]);
    let none: Option<String> = c.rpop("l", None).await?;
    assert_eq!(none, None);
    let none: Option<Vec<String>> = c.rpop("l", std::num::NonZeroUsize::new(2)).await?;
    assert_eq!(none, None);
    let len: i64 = c.llen("never-seen").await?;
    assert_eq!(len, 0);

    let _: i64 = c.lpush("d1", &["x", "y"]).await?;
    let deleted: i64 = c.del(&["d1", "never-seen"]).await?;
    assert_eq!(deleted, 1);
    let len: i64 = c.llen("d1").await?;
    assert_eq!(len, 0);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn blocking_pop_is_woken_by_a_push_from_another_connection() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut consumer = server.client().await;
    let mut producer = server.client().await;
    let mut watcher = server.client().await;
    let waiting = tokio::spawn(async move {
        let got: Option<(String, String)> = consumer.brpop(&["first", "second"], 0.0).await.unwrap();
        got
    });
    // Wait (on an event, not a sleep) until the consumer is blocked, then push to its second key.
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut watcher).await?;
        if info.contains("blocked_clients:1") {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _: i64 = producer.lpush("second", "job").await?;
    assert_eq!(waiting.await?, Some(("second".into(), "job".into())));

    // With both keys non-empty, the first key in argument order wins.
    let _: i64 = producer.lpush("second", "2").await?;
    let _: i64 = producer.lpush("first", "1").await?;
    let got: Option<(String, String)> = producer.blpop(&["first", "second"], 1.0).await?;
    assert_eq!(got, Some(("first".into(), "1".into())));
    server.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn blocking_pop_honours_its_timeout() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    let started = tokio::time::Instant::now();
    let got: Option<(String, String)> = c.brpop("empty", 2.5).await?;
    assert_eq!(got, None);
    assert!(started.elapsed() >= Duration::from_millis(2_500));
    let jobs: Vec<Fields> = redis::cmd("JOB.FETCH")
        .arg("empty")
        .arg("TIMEOUT")
        .arg(1_000)
        .query_async(&mut c)
        .await?;
    assert!(jobs.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn pipelines_and_transactions() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut c = server.client().await;
    // redis-py and the redis crate wrap pipelines in MULTI/EXEC.
    let (n, len, popped): (i64, i64, String) = redis::pipe()
        .atomic()
        .lpush("t", "a")
        .llen("t")
        .rpop("t", None)
        .query_async(&mut c)
        .await?;
    assert_eq!((n, len, popped.as_str()), (1, 1, "a"));
    let (a, b): (String, String) = redis::pipe()
        .cmd("PING")
        .cmd("ECHO")
        .arg("x")
        .query_async(&mut c)
        .await?;
    assert_eq!((a.as_str(), b.as_str()), ("PONG", "x"));

    let mut raw = server.raw().await;
    assert_eq!(raw.ask(b"MULTI\r\n").await, "+OK");
    assert_eq!(raw.ask(b"BRPOP t 0\r\n").await, "+QUEUED");
    assert_eq!(raw.ask(b"EXEC\r\n").await, "*1");
    assert_eq!(raw.line().await, "*-1", "a blocking pop inside EXEC does not wait");
    assert_eq!(raw.ask(b"MULTI\r\n").await, "+OK");
    assert_eq!(
        raw.ask(b"NOSUCH\r\n").await,
        "-ERR unknown command 'NOSUCH', with args beginning with: "
    );
    assert_eq!(raw.ask(b"LPUSH t a\r\n").await, "+QUEUED");
    assert_eq!(
        raw.ask(b"EXEC\r\n").await,
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(raw.ask(b"LLEN t\r\n").await, ":0", "an aborted transaction ran nothing");
    assert_eq!(raw.ask(b"EXEC\r\n").await, "-ERR EXEC without MULTI");
    assert_eq!(raw.ask(b"MULTI\r\n").await, "+OK");
    assert_eq!(raw.ask(b"MULTI\r\n").await, "-ERR MULTI calls can not be nested");
    assert_eq!(raw.ask(b"DISCARD\r\n").await, "+OK");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_transaction_is_held_to_the_bounds_of_one_request() -> anyhow::Result<()> {
    let config = RespConfig {
        max_array_len: 3,
        max_bulk_bytes: 8,
        ..RespConfig::default()
    };
    let server = common::start(config).await;
    let mut raw = server.raw().await;
    assert_eq!(raw.ask(b"MULTI\r\n").await, "+OK");
    for _ in 0..3 {
        assert_eq!(raw.ask(b"LPUSH t a\r\n").await, "+QUEUED");
    }
    let too_many = raw.ask(b"LPUSH t a\r\n").await;
    assert!(too_many.starts_with("-ERR transaction too large"), "{too_many}");
    assert_eq!(
        raw.ask(b"LPUSH t a\r\n").await,
        "+QUEUED",
        "later commands are taken and dropped"
    );
    assert_eq!(
        raw.ask(b"EXEC\r\n").await,
        "-EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(raw.ask(b"LLEN t\r\n").await, ":0", "nothing ran");
    server.stop().await;

    // 32 × 8 = 256 bytes of arguments.
    let config = RespConfig {
        max_bulk_bytes: 8,
        ..RespConfig::default()
    };
    let server = common::start(config).await;
    let mut raw = server.raw().await;
    assert_eq!(raw.ask(b"MULTI\r\n").await, "+OK");
    // 14 bytes of arguments each: 18 fit in 256.
    for _ in 0..18 {
        assert_eq!(raw.ask(b"LPUSH t 12345678\r\n").await, "+QUEUED");
    }
    let too_big = raw.ask(b"LPUSH t 12345678\r\n").await;
    assert!(too_big.starts_with("-ERR transaction too large"), "{too_big}");
    assert_eq!(raw.ask(b"DISCARD\r\n").await, "+OK");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn del_of_a_name_that_cannot_be_a_queue_counts_it_missing() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    assert_eq!(raw.ask(b"LPUSH q1 a\r\n").await, ":1");
    assert_eq!(raw.ask(b"DEL q1 bad/name\r\n").await, ":1");
    assert_eq!(raw.ask(b"LLEN q1\r\n").await, ":0");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_cuts_blocked_clients_short_and_returns() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    let mut watcher = server.client().await;
    raw.send(b"BRPOP q 0\r\n").await;
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut watcher).await?;
        if info.contains("blocked_clients:1") {
            break;
        }
        tokio::task::yield_now().await;
    }
    server.stop().await;
    assert_eq!(raw.line().await, "-SHUTDOWN the server is shutting down");
    assert!(raw.closed().await);
    Ok(())
}

#[tokio::test]
async fn a_pipeline_shares_group_commits_and_keeps_reply_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(SledConfig::new(dir.path()))?);
    let broker = Broker::open(store.clone(), Arc::new(SystemClock), EngineConfig::default())?;
    let server = common::start_with(broker, RespConfig::default()).await;
    let mut raw = server.raw().await;

    // 64 pushes in one write: each waited for its own commit before the next was read, this would take 64 commits.
    const PUSHES: usize = 64;
    let before = store.group_commits();
    raw.send(&b"LPUSH p x\r\n".repeat(PUSHES)).await;
    for n in 1..=PUSHES {
        assert_eq!(raw.line().await, format!(":{n}"), "replies come in request order");
    }
    let commits = store.group_commits() - before;
    assert!(
        commits < PUSHES as u64 / 4,
        "{PUSHES} pipelined pushes took {commits} group commits"
    );

    // Deferred writes, immediate reads, errors and a protocol switch interleaved: every reply in order, each in the
    // protocol in force when its command ran.
    raw.send(
        b"JOB.PUSH q a\r\nLLEN q\r\nRPOP q\r\nJOB.ACK 00000000-0000-7000-8000-000000000000 1\r\nRPOP q\r\n\
          HELLO 3\r\nRPOP q\r\nRPOP p 2\r\nPING\r\n",
    )
    .await;
    assert_eq!(raw.reply().await, "$36", "JOB.PUSH answers the id");
    assert_eq!(raw.reply().await, ":1");
    assert_eq!(raw.line().await, "$1");
    assert_eq!(raw.line().await, "a");
    assert!(
        raw.reply().await.starts_with("-NOTFOUND"),
        "a bad ack is an error in its place"
    );
    assert_eq!(raw.reply().await, "$-1", "RESP2 null for an empty pop");
    assert!(raw.reply().await.starts_with('%'), "HELLO 3 answers a map");
    assert_eq!(raw.reply().await, "_", "RESP3 null after HELLO 3");
    assert_eq!(raw.reply().await, "*2", "RPOP p 2 pops two");
    assert_eq!(raw.reply().await, "+PONG");
    assert_eq!(server.broker.queue_stats("p")?.ready, PUSHES as u64 - 2);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn replies_before_a_blocking_command_are_not_held_back() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    raw.send(b"RPUSH a x\r\nBLPOP b 0\r\n").await;
    // The push's reply must arrive while the pop still waits; a server that kept it buffered would never send it.
    let first = tokio::time::timeout(Duration::from_secs(10), raw.line()).await?;
    assert_eq!(first, ":1");
    let mut other = server.client().await;
    let _: i64 = other.rpush("b", "y").await?;
    assert_eq!(raw.reply().await, "*2", "the pop is served once b has a job");
    server.stop().await;
    Ok(())
}

/// `INFO spool`'s `payload_bytes_held`.
async fn payload_memory(c: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("spool").query_async(c).await?;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("payload_bytes_held:"))
        .ok_or_else(|| anyhow::anyhow!("no payload_bytes_held in {info}"))?;
    Ok(line.trim().parse()?)
}

#[tokio::test]
async fn past_the_memory_budget_checkpointed_payloads_leave_memory_and_come_back_on_delivery() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Small segments, so that checkpoints happen within the test; no payload memory at all once checkpointed.
    let store = SledStore::open(SledConfig {
        segment_bytes: 64 * 1024,
        ..SledConfig::new(dir.path())
    })?;
    let config = EngineConfig {
        payload_memory_bytes: 0,
        ..EngineConfig::default()
    };
    let broker = Broker::open(Arc::new(store), Arc::new(SystemClock), config)?;
    let timers = tokio::spawn({
        let broker = broker.clone();
        async move { broker.run_timers().await }
    });
    let server = common::start_with(broker, RespConfig::default()).await;
    let mut c = server.client().await;

    const JOBS: usize = 2_000;
    let payload = |n: usize| format!("{n:05}-{}", "x".repeat(94));
    let mut pipe = redis::pipe();
    for n in 0..JOBS {
        pipe.lpush("q", payload(n)).ignore();
    }
    let () = pipe.query_async(&mut c).await?;
    let pushed = (JOBS * payload(0).len()) as u64;

    // The checkpointer folds each full 64 KiB segment into sled and reports its jobs; the timer task then drops their
    // payloads. Only the jobs of the segment still being written keep theirs.
    let mut held = payload_memory(&mut c).await?;
    for _ in 0..1_000 {
        if held < pushed / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        held = payload_memory(&mut c).await?;
    }
    assert!(held < pushed / 4, "{held} of {pushed} payload bytes still in memory");

    let mut popped: Vec<String> = Vec::new();
    for _ in 0..JOBS / 1_000 {
        let batch: Vec<String> = c.rpop("q", std::num::NonZeroUsize::new(1_000)).await?;
        popped.extend(batch);
    }
    assert_eq!(
        popped,
        (0..JOBS).map(payload).collect::<Vec<_>>(),
        "every payload read back, in order"
    );
    assert_eq!(payload_memory(&mut c).await?, 0);
    server.stop().await;
    timers.abort();
    Ok(())
}
