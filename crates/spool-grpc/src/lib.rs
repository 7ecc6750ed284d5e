//! Spool's gRPC door: the `spool.v1.Spool` service (see `proto/spool/v1`), standard health checking
//! (`grpc.health.v1`) and server reflection, over one [`spool_engine::Broker`].
//!
//! The door is thin: each RPC validates and decodes its request (conversions live in `spool-proto`), makes one call
//! on the broker, and encodes the reply; engine errors become gRPC statuses carrying the stable code in the
//! `spool-error-code` metadata ([`status`]). The streaming `Consume` RPC is a small per-stream loop that holds the
//! worker's credits and calls `Broker::reserve` for as many jobs as it may still hold ([`consume`]). This crate must
//! never depend on the RESP or HTTP doors.
//!
//! Invariants: a refused call (bad token, bad input) changes nothing; once shutdown begins, health reports
//! NOT_SERVING first, then consume streams and long polls end with UNAVAILABLE, then the listener drains.

mod auth;
mod consume;
mod service;
pub mod status;

use std::future::Future;
use std::time::Duration;

use spool_engine::Broker;
use spool_proto::v1::spool_server::SpoolServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use auth::BearerAuth;
pub use service::SpoolService;

/// The longest long poll a `Reserve` may ask for, in ms (5 minutes): longer waits outlive proxies' idle timeouts.
pub const MAX_RESERVE_TIMEOUT_MS: u64 = 300_000;

/// Settings of the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// When set, every `spool.v1` call must carry `authorization: Bearer <token>`; others get UNAUTHENTICATED.
    /// Health and reflection stay open, so probes and tools need no secret. Default `None`.
    pub token: Option<String>,
    /// Largest request message in bytes; tonic refuses larger ones with OUT_OF_RANGE before they reach the engine.
    /// Keep it above the engine's payload limit, so an oversized payload gets the engine's RESOURCE_EXHAUSTED /
    /// `TOOBIG` instead. Default 4 MiB.
    pub max_message_bytes: usize,
    /// The engine's `max_batch`: the cap on consume credits and on list page sizes. Default 1,000.
    pub max_batch: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_message_bytes: 4 * 1024 * 1024,
            max_batch: 1_000,
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then reports NOT_SERVING, ends consume streams and long
/// polls with UNAVAILABLE, and waits for in-flight calls to finish.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: GrpcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // "" is the whole server (what Kubernetes probes ask about by default); the service name is for clients that
    // check the API they use.
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_serving::<SpoolServer<SpoolService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spool_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor sets decode");
    let (stop_tx, stop_rx) = watch::channel(false);
    let spool = SpoolServer::new(SpoolService::new(broker, stop_rx, config.max_batch))
        .max_decoding_message_size(config.max_message_bytes);
    let spool = InterceptedService::new(spool, BearerAuth::new(config.token));
    let signal = async move {
        shutdown.await;
        // Health first, so load balancers stop sending before anything is refused.
        reporter.set_service_status("", ServingStatus::NotServing).await;
        reporter.set_not_serving::<SpoolServer<SpoolService>>().await;
        let _ = stop_tx.send(true);
        tracing::info!("gRPC door shutting down");
    };
    tonic::transport::Server::builder()
        // A worker whose connection died without a FIN (a NAT or load balancer that forgot it) is found within
        // ~40 s, so its consume stream's task and buffered jobs go, and shutdown does not wait on it.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(reflection)
        .add_service(spool)
        // Our own listener bypasses the builder's socket options, so set TCP_NODELAY here: without it a small
        // response waits for the client's delayed ACK (~40 ms per unbatched fetch + ack, measured with spool-bench).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            signal,
        )
        .await
}
