//! An in-process gRPC door on port 0 over a broker with a `MemStore`, and a client connected to it.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use spool_client::Client;
use spool_core::{Clock, ManualClock};
use spool_engine::{Broker, EngineConfig};
use spool_grpc::GrpcConfig;
use spool_store::MemStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fixed start time, so lease ends are easy to read in failures.
pub const T0: u64 = 1_700_000_000_000;

pub struct Server {
    pub addr: SocketAddr,
    pub broker: Broker,
    pub clock: ManualClock,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

pub fn broker_with(clock: Arc<dyn Clock>, config: EngineConfig) -> Broker {
    Broker::open(Arc::new(MemStore::new()), clock, config).expect("broker opens")
}

/// A server whose broker runs on a manual clock (time moves only through `server.clock` and `broker.tick()`).
pub async fn start() -> Server {
    start_with(EngineConfig::default(), GrpcConfig::default()).await
}

pub async fn start_with(engine: EngineConfig, config: GrpcConfig) -> Server {
    let clock = ManualClock::new(T0);
    let broker = broker_with(Arc::new(clock.clone()), engine);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(spool_grpc::serve(listener, broker.clone(), config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        broker,
        clock,
        stop,
        task,
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.url()).await.expect("connect")
    }

    /// Moves time forward and fires what fell due.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
        self.broker.tick();
    }

    /// Begins shutdown without waiting for it (tests then watch what clients see).
    pub fn begin_stop(self) -> JoinHandle<Result<(), tonic::transport::Error>> {
        let _ = self.stop.send(());
        self.task
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(self) {
        self.begin_stop().await.expect("serve task").expect("serve result");
    }
}
