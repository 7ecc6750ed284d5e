//! CI smoke test: the bench against an in-process Spool (RESP and gRPC doors on port 0, a broker over a durable
//! `SledStore` in a temporary directory) in each mode and pattern it supports against Spool. It asserts that no job is lost or
//! duplicated and no command fails — never speed, which CI machines cannot promise.

use std::sync::Arc;

use clap::Parser;
use spool_bench::{run, Options};
use spool_core::SystemClock;
use spool_engine::{Broker, EngineConfig};
use spool_store::{SledConfig, SledStore, Store};
use tokio::net::TcpListener;

async fn bench(addr: &str, args: &[&str]) -> spool_bench::Report {
    let mut argv = vec!["spool-bench", "--server", addr];
    argv.extend(args);
    let report = run(&Options::parse_from(argv)).await.expect("bench runs");
    println!("{}", report.summary());
    assert_eq!(report.lost, 0, "{args:?}: lost jobs");
    assert_eq!(report.duplicates, 0, "{args:?}: duplicates");
    assert_eq!(report.errors, 0, "{args:?}: errors {:?}", report.error_samples);
    assert!(report.ok, "{args:?}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_lost_in_any_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(SledConfig::new(dir.path())).expect("store opens"));
    let broker = Broker::open(store, Arc::new(SystemClock), EngineConfig::default()).expect("broker opens");
    // Delayed and nacked jobs come due on the timer task, as in the daemon.
    let timers = tokio::spawn({
        let broker = broker.clone();
        async move { broker.run_timers().await }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spool_resp::serve(listener, broker.clone(), Default::default(), async {
        let _ = stopped.await;
    }));
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = format!("http://{}", grpc_listener.local_addr().expect("addr"));
    let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tokio::spawn(spool_grpc::serve(
        grpc_listener,
        broker.clone(),
        Default::default(),
        async {
            let _ = grpc_stopped.await;
        },
    ));

    let e2e = bench(&addr, &["--mode", "e2e", "-c", "4", "--jobs", "2000", "--queues", "2"]).await;
    assert_eq!(e2e.received, 2000);
    bench(
        &addr,
        &["--mode", "e2e", "-c", "4", "-b", "20", "-P", "2", "--jobs", "4000"],
    )
    .await;
    bench(&addr, &["--mode", "enqueue", "-c", "4", "-b", "10", "--jobs", "2000"]).await;
    bench(&addr, &["--mode", "consume", "-c", "2", "-b", "100", "--jobs", "3000"]).await;
    let mixed = bench(
        &addr,
        &[
            "--mode",
            "mixed",
            "-c",
            "4",
            "--jobs",
            "1000",
            "--delay-ms",
            "50",
            "--retry-delay-ms",
            "50",
        ],
    )
    .await;
    assert!(
        mixed.nacks > 0 && mixed.delayed_pushes > 0,
        "mixed mode delays and retries some jobs"
    );
    bench(
        &addr,
        &["--mode", "e2e", "--pattern", "list", "-c", "4", "--jobs", "2000"],
    )
    .await;
    bench(
        &addr,
        &[
            "--mode",
            "e2e",
            "--pattern",
            "list",
            "-c",
            "2",
            "-b",
            "50",
            "--jobs",
            "2000",
        ],
    )
    .await;
    bench(
        &addr,
        &["--mode", "e2e", "-c", "2", "--jobs", "500", "--backlog", "1000"],
    )
    .await;

    let g = ["--pattern", "grpc", "--grpc", grpc.as_str()];
    bench(
        &addr,
        &[&g[..], &["--mode", "e2e", "-c", "2", "-b", "20", "--jobs", "1000"]].concat(),
    )
    .await;
    bench(
        &addr,
        &[&g[..], &["--mode", "mixed", "-c", "2", "-b", "10", "--jobs", "200"]].concat(),
    )
    .await;

    let _ = stop.send(());
    let _ = grpc_stop.send(());
    server.await.expect("serve task").expect("serve");
    grpc_server.await.expect("grpc serve task").expect("grpc serve");
    broker.shutdown().expect("shutdown");
    timers.await.expect("timer task");
}
