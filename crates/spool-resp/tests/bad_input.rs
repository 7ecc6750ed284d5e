//! Hostile and careless clients: malformed frames, absurd lengths, garbage, wrong commands and arguments, missing
//! authentication, clients that vanish while holding or waiting for jobs, too many clients, idle clients. Each gets a
//! clear error or a clean close, everyone else keeps being served, and no job is lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use spool_core::ManualClock;
use spool_resp::RespConfig;

/// Waits (on the server's own count, not a sleep) until `n` clients are blocked.
async fn until_blocked(c: &mut redis::aio::MultiplexedConnection, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query_async(c).await.expect("info");
        if info.contains(&want) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn protocol_errors_close_only_that_connection() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut bystander = server.client().await;
    let _: i64 = bystander.lpush("keep", "job").await?;
    let mut garbage = vec![0xffu8; 70 * 1024];
    garbage[0] = 0;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "oversized bulk",
            b"*2\r\n$8\r\nJOB.PUSH\r\n$3000000\r\n".to_vec(),
            "bulk length 3000000 exceeds",
        ),
        (
            "absurd array",
            b"*2147483647\r\n".to_vec(),
            "multibulk length 2147483647 exceeds",
        ),
        ("negative array", b"*-5\r\n".to_vec(), "invalid multibulk length"),
        ("negative bulk", b"*1\r\n$-3\r\n".to_vec(), "invalid bulk length"),
        ("non-numeric length", b"*x\r\n".to_vec(), "invalid multibulk length"),
        ("wrong element type", b"*1\r\n%1\r\n".to_vec(), "expected '$', got '%'"),
        // As in Redis, every argument is a bulk string: other kinds would escape the size limits, which count
        // bulk strings (`*10000` then 10,000 simple strings of 64 KiB was 655 MB buffered).
        ("nested arrays", b"*1\r\n".repeat(9), "expected '$', got '*'"),
        (
            "nested command word",
            b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "expected '$', got '*'",
        ),
        (
            "simple string argument",
            b"*1\r\n+PING\r\n".to_vec(),
            "expected '$', got '+'",
        ),
        (
            "integer argument",
            b"*2\r\n$4\r\nECHO\r\n:1\r\n".to_vec(),
            "expected '$', got ':'",
        ),
        ("garbage without newline", garbage, "too big inline request"),
    ];
    for (what, bytes, expect) in cases {
        let mut raw = server.raw().await;
        raw.send(&bytes).await;
        let line = raw.line().await;
        assert!(line.starts_with("-ERR Protocol error: "), "{what}: {line}");
        assert!(line.contains(expect), "{what}: {line}");
        assert!(raw.closed().await, "{what}: connection closed");
        let pong: String = redis::cmd("PING").query_async(&mut bystander).await?;
        assert_eq!(pong, "PONG", "{what}: others are still served");
    }
    let len: i64 = bystander.llen("keep").await?;
    assert_eq!(len, 1, "no job lost");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn command_errors_keep_the_connection() -> anyhow::Result<()> {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    for (request, expect) in [
        (&b"FLUSHALL\r\n"[..], "-ERR unknown command 'FLUSHALL', with args beginning with: "),
        (b"*2\r\n$3\r\nFOO\r\n$3\r\nbar\r\n", "-ERR unknown command 'FOO', with args beginning with: 'bar' "),
        (b"LPUSH q\r\n", "-ERR wrong number of arguments for 'lpush' command"),
        (b"JOB.GET\r\n", "-ERR wrong number of arguments for 'job.get' command"),
        (b"JOB.ACK a\r\n", "-ERR wrong number of arguments for 'job.ack' command"),
        (b"LRANGE q a b\r\n", "-ERR value is not an integer or out of range"),
        (b"BRPOP q soon\r\n", "-ERR timeout is not a float or out of range"),
        (b"BRPOP q -1\r\n", "-ERR timeout is negative"),
        (b"JOB.PUSH q p PRIORITY 12\r\n", "-INVALID priority must be 0 to 9, got 12"),
        (b"JOB.PUSH q p COLOUR red\r\n", "-ERR syntax error: unknown option 'COLOUR'"),
        (b"JOB.PUSH q p DELAY 5 AT 7\r\n", "-ERR syntax error: DELAY and AT are exclusive"),
        (b"JOB.PUSH q p LEASE 0\r\n", "-INVALID lease must be between 1 ms and 86400000 ms (1 day), got 0 ms"),
        (b"JOB.ACK not-an-id 1\r\n", "-INVALID \"not-an-id\" is not a job id (a UUID)"),
        (b"JOB.FETCH q COUNT 0\r\n", "-INVALID count must be between 1 and 1000, got 0"),
        (b"JOB.FETCH q a WEIGHTS 1\r\n", "-ERR wrong number of arguments for 'job.fetch' command"),
        (b"JOB.FETCH COUNT 1\r\n", "-ERR syntax error: JOB.FETCH needs at least one queue"),
        (b"LLEN bad!name\r\n", "-INVALID queue name \"bad!name\" contains '!'; allowed are ASCII letters, digits and _ - . :"),
        (b"HELLO x\r\n", "-ERR Protocol version is not an integer or out of range"),
        (b"AUTH secret\r\n", "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
    ] {
        assert_eq!(raw.ask(request).await, expect, "{}", String::from_utf8_lossy(request));
    }
    assert_eq!(raw.ask(b"PING\r\n").await, "+PONG");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn inline_partial_and_pipelined_requests() {
    let server = common::start(RespConfig::default()).await;
    let mut raw = server.raw().await;
    // Three requests in one write, two of them typed as a person would.
    raw.send(b"PING\r\nECHO \"hi there\"\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(raw.line().await, "+PONG");
    assert_eq!(raw.line().await, "$8");
    assert_eq!(raw.line().await, "hi there");
    assert_eq!(raw.line().await, "+PONG");
    // One request, one byte at a time.
    for byte in b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n" {
        raw.send(&[*byte]).await;
    }
    assert_eq!(raw.bytes(9).await, b"$3\r\nabc\r\n");
    // Blank lines are ignored, as by Redis.
    assert_eq!(raw.ask(b"\r\n\r\nPING\r\n").await, "+PONG");
    server.stop().await;
}

#[tokio::test]
async fn a_password_guards_everything_but_the_handshake() -> anyhow::Result<()> {
    let config = RespConfig {
        password: Some("s3cret".into()),
        ..RespConfig::default()
    };
    let server = common::start(config).await;
    let mut raw = server.raw().await;
    assert_eq!(raw.ask(b"LPUSH q x\r\n").await, "-NOAUTH Authentication required.");
    assert_eq!(raw.ask(b"JOB.FETCH q\r\n").await, "-NOAUTH Authentication required.");
    assert_eq!(raw.ask(b"PING\r\n").await, "+PONG");
    assert!(raw
        .ask(b"HELLO 3\r\n")
        .await
        .starts_with("-NOAUTH HELLO must be called"));
    assert_eq!(
        raw.ask(b"AUTH wrong\r\n").await,
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        raw.ask(b"AUTH admin s3cret\r\n").await,
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(raw.ask(b"AUTH s3cret\r\n").await, "+OK");
    assert_eq!(raw.ask(b"LPUSH q x\r\n").await, ":1");

    let mut other = server.raw().await;
    assert_eq!(other.ask(b"HELLO 3 AUTH default s3cret SETNAME w1\r\n").await, "%7");

    // The redis crate authenticates from the URL.
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut c = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let len: i64 = c.llen("q").await?;
    assert_eq!(len, 1);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_worker_that_vanishes_loses_no_job() -> anyhow::Result<()> {
    let clock = ManualClock::new(1_700_000_000_000);
    let broker = common::broker_with(Arc::new(clock.clone()));
    let server = common::start_with(broker.clone(), RespConfig::default()).await;
    let mut watcher = server.client().await;

    // A worker leases a job and disconnects without acking: the job returns when the lease runs out.
    let mut worker = server.raw().await;
    worker.send(b"JOB.PUSH q leased LEASE 1000\r\n").await;
    let id = {
        assert_eq!(worker.line().await, "$36");
        worker.line().await
    };
    assert_eq!(worker.ask(b"JOB.FETCH q\r\n").await, "*1");
    drop(worker);
    let stats = broker.queue_stats("q")?;
    assert_eq!((stats.ready, stats.leased), (0, 1));
    clock.advance(1_001);
    broker.tick();
    let stats = broker.queue_stats("q")?;
    assert_eq!((stats.leased, stats.retry), (0, 1), "the lapsed lease became a retry");
    // The first retry waits at most the default backoff's first step, 1 s.
    clock.advance(1_000);
    broker.tick();
    let jobs: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("JOB.FETCH").arg("q").query_async(&mut watcher).await?;
    assert_eq!(redis::from_redis_value::<String>(&jobs[0]["id"])?, id);
    assert_eq!(redis::from_redis_value::<i64>(&jobs[0]["attempt"])?, 2);

    // Clients that disconnect while blocked take nothing: the next push goes to someone who is still there.
    let mut fetcher = server.raw().await;
    fetcher.send(b"JOB.FETCH q2 TIMEOUT 600000\r\n").await;
    let mut popper = server.raw().await;
    popper.send(b"BRPOP q2 0\r\n").await;
    until_blocked(&mut watcher, 2).await;
    drop(fetcher);
    drop(popper);
    until_blocked(&mut watcher, 0).await;
    let _: i64 = watcher.lpush("q2", "precious").await?;
    let stats = broker.queue_stats("q2")?;
    assert_eq!((stats.ready, stats.leased), (1, 0));
    let got: Option<String> = watcher.rpop("q2", None).await?;
    assert_eq!(got.as_deref(), Some("precious"));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn clients_over_the_limit_are_refused_politely() -> anyhow::Result<()> {
    let config = RespConfig {
        max_connections: 2,
        ..RespConfig::default()
    };
    let server = common::start(config).await;
    let mut first = server.raw().await;
    assert_eq!(first.ask(b"PING\r\n").await, "+PONG");
    let mut second = server.raw().await;
    assert_eq!(second.ask(b"PING\r\n").await, "+PONG");
    let mut third = server.raw().await;
    assert_eq!(third.line().await, "-ERR max number of clients reached");
    assert!(third.closed().await);
    assert_eq!(first.ask(b"QUIT\r\n").await, "+OK");
    assert!(first.closed().await);
    // The slot frees once the server has finished with the first client; retry until it has.
    loop {
        let mut again = server.raw().await;
        again.send(b"PING\r\n").await;
        match again.line().await.as_str() {
            "+PONG" => break,
            "-ERR max number of clients reached" => tokio::task::yield_now().await,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(second.ask(b"PING\r\n").await, "+PONG");
    server.stop().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn idle_clients_are_closed_but_blocked_ones_are_not() {
    let config = RespConfig {
        idle_timeout: Some(Duration::from_secs(30)),
        ..RespConfig::default()
    };
    let server = common::start(config).await;
    let mut idle = server.raw().await;
    assert_eq!(idle.ask(b"PING\r\n").await, "+PONG");
    let mut blocked = server.raw().await;
    blocked.send(b"BLPOP q 60\r\n").await;
    let started = tokio::time::Instant::now();
    assert!(idle.closed().await);
    assert!(started.elapsed() >= Duration::from_secs(30));
    // The blocked client waits out its own 60 s timeout, and is answered.
    assert_eq!(blocked.line().await, "*-1");
    assert!(started.elapsed() >= Duration::from_secs(60));
    server.stop().await;
}
