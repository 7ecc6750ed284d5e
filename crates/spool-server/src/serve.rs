//! `spool serve`: open the store, build the broker, start the doors, and shut down in order on SIGINT or SIGTERM.
//!
//! Shutdown order, and why: (1) tell every door (the gRPC door first reports NOT_SERVING to health checks, so load
//! balancers and probes stop sending before anything is refused) to stop accepting and to finish the command it is running (blocked
//! clients are told `SHUTDOWN`), and wait for them, so every reply that goes out is for a completed write; (2) shut
//! the broker down: refuse any write still arriving, stop the timer task, flush and fsync the store; (3) drop the
//! store, whose writer thread syncs once more before the process exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spool_core::SystemClock;
use spool_engine::Broker;
use spool_grpc::GrpcConfig;
use spool_resp::RespConfig;
use spool_store::{SledStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;

/// Runs the daemon until a signal, then shuts down in order.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let workers = cfg.server.workers();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("spool-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(cfg, workers))
}

/// `workers`: the runtime's worker threads, as started (logged, not read from the CPU count again).
async fn serve(cfg: Config, workers: usize) -> anyhow::Result<()> {
    let engine_config = cfg.engine_config().map_err(anyhow::Error::msg)?;
    let store_config = cfg.store_config();
    let data_dir = store_config.path.clone();
    // Opening sled scans its log; keep that off the async workers.
    let store = tokio::task::spawn_blocking(move || SledStore::open(store_config))
        .await
        .context("store open task")??;
    let store: Arc<dyn Store> = Arc::new(store);
    let broker = Broker::open(store.clone(), Arc::new(SystemClock), engine_config)?;
    let (jobs, queues) = broker.totals();
    tracing::info!(
        data_dir = %data_dir.display(),
        jobs,
        queues,
        durability = ?cfg.storage.durability,
        workers,
        "spool started"
    );

    let timers = tokio::spawn({
        let broker = broker.clone();
        async move { broker.run_timers().await }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Schedules are applied before any door opens, so a bad one (say, an unknown queue) stops start-up.
    let scheduler = spool_scheduler::Scheduler::new(broker.clone(), Arc::new(SystemClock));
    let applied = scheduler
        .apply_config(cfg.schedule_defs().map_err(anyhow::Error::msg)?)
        .await
        .context("applying [[schedules]]")?;
    tracing::info!(
        created = applied.created.len(),
        changed = applied.changed.len(),
        removed = applied.removed.len(),
        unchanged = applied.unchanged.len(),
        "schedules applied"
    );
    let scheduler_task = tokio::spawn(scheduler.run(stop_signal(stop_rx.clone())));
    let mut doors = JoinSet::new();
    start_doors(&cfg, &broker, &stop_rx, &mut doors).await?;

    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutting down");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(result) = doors.join_next().await {
            match result {
                Ok(Err(e)) => tracing::warn!(error = %e, "a door ended with an error"),
                Err(e) => tracing::warn!(error = %e, "a door panicked"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("doors did not finish within 10 s; closing them");
        doors.abort_all();
    }
    // The scheduler stops with the doors: a firing in progress finishes its commit before the store is flushed.
    scheduler_task.await.context("scheduler task")?;
    // The flush blocks on the store's writer thread; keep it off the async workers.
    let flushed = tokio::task::spawn_blocking({
        let broker = broker.clone();
        move || broker.shutdown()
    })
    .await
    .context("shutdown task")?;
    timers.await.context("timer task")?;
    flushed.context("final flush of the store")?;
    drop(broker);
    // The last reference to the store: dropping it joins the writer thread after its final sync.
    drop(store);
    tracing::info!("spool stopped");
    Ok(())
}

/// Binds every enabled listener before returning (so a port clash fails start-up, not later) and runs each in a
/// task that ends when `stop` turns true.
async fn start_doors(
    cfg: &Config,
    broker: &Broker,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if cfg.resp.enabled {
        let listener = TcpListener::bind(cfg.resp.listen)
            .await
            .with_context(|| format!("cannot listen for RESP on {} (resp.listen)", cfg.resp.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "RESP listener ready");
        let r = &cfg.resp;
        let resp_config = RespConfig {
            max_connections: r.max_connections,
            idle_timeout: (!r.idle_timeout.is_zero()).then_some(r.idle_timeout),
            // One token for every door: RESP takes it as its AUTH password unless it has a password of its own.
            password: [&r.password, &cfg.auth.token]
                .into_iter()
                .find(|p| !p.is_empty())
                .cloned(),
            max_bulk_bytes: r.max_bulk_bytes,
            max_array_len: r.max_array_len,
            max_inline_bytes: r.max_inline_bytes,
        };
        let (broker, stop) = (broker.clone(), stop_signal(stop.clone()));
        tasks.spawn(async move {
            spool_resp::serve(listener, broker, resp_config, stop)
                .await
                .context("RESP listener")
        });
    }
    if cfg.grpc.enabled {
        let listener = TcpListener::bind(cfg.grpc.listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {} (grpc.listen)", cfg.grpc.listen))?;
        tracing::info!(addr = %listener.local_addr()?, auth = !cfg.auth.token.is_empty(), "gRPC listener ready");
        let grpc_config = GrpcConfig {
            token: (!cfg.auth.token.is_empty()).then(|| cfg.auth.token.clone()),
            max_message_bytes: cfg.grpc.max_message_bytes,
            max_batch: cfg.limits.max_batch,
        };
        let (broker, stop) = (broker.clone(), stop_signal(stop.clone()));
        tasks.spawn(async move {
            spool_grpc::serve(listener, broker, grpc_config, stop)
                .await
                .context("gRPC listener")
        });
    }
    Ok(())
}

/// A future that resolves once `stop` turns true (or its sender is gone).
async fn stop_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves to the name of the first SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
