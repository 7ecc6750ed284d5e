//! An in-process Spool RESP server on port 0, and raw-socket helpers for tests that speak bytes.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use spool_core::{Clock, SystemClock};
use spool_engine::{Broker, EngineConfig};
use spool_resp::RespConfig;
use spool_store::MemStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub addr: SocketAddr,
    pub broker: Broker,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

pub fn broker_with(clock: Arc<dyn Clock>) -> Broker {
    Broker::open(Arc::new(MemStore::new()), clock, EngineConfig::default()).expect("broker opens")
}

pub async fn start(config: RespConfig) -> Server {
    start_with(broker_with(Arc::new(SystemClock)), config).await
}

pub async fn start_with(broker: Broker, config: RespConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(spool_resp::serve(listener, broker.clone(), config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        broker,
        stop,
        task,
    }
}

impl Server {
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A fresh connection through the `redis` crate (RESP2).
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    /// A fresh connection through the `redis` crate that opens with `HELLO 3`.
    pub async fn client_resp3(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("{}?protocol=resp3", self.url()))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    pub async fn raw(&self) -> Raw {
        Raw(BufReader::new(TcpStream::connect(self.addr).await.expect("connect")))
    }

    /// Stops the listener and waits for it to close every connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("serve task").expect("serve result");
    }
}

/// A raw socket for tests that send malformed bytes.
pub struct Raw(pub BufReader<TcpStream>);

impl Raw {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).await.expect("write");
    }

    /// One reply line, without CRLF.
    pub async fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).await.expect("read");
        line.trim_end_matches("\r\n").to_string()
    }

    /// One whole reply, however nested; returns its first line (the header, or the whole of a simple reply).
    pub async fn reply(&mut self) -> String {
        let head = self.line().await;
        let n = head.get(1..).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
        match head.as_bytes().first() {
            Some(b'$' | b'=' | b'!') if n >= 0 => {
                self.bytes(n as usize + 2).await;
            }
            Some(b'*' | b'~' | b'>') => {
                for _ in 0..n {
                    Box::pin(self.reply()).await;
                }
            }
            Some(b'%') => {
                for _ in 0..2 * n {
                    Box::pin(self.reply()).await;
                }
            }
            _ => {}
        }
        head
    }

    /// Exactly `n` bytes.
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.0.read_exact(&mut buf).await.expect("read");
        buf
    }

    /// Sends a request and returns the first reply line.
    pub async fn ask(&mut self, bytes: &[u8]) -> String {
        self.send(bytes).await;
        self.line().await
    }

    /// Waits for the server to close the connection (after any pending bytes); true if it did. A reset counts as a
    /// close: a server that closes with unread request bytes makes the kernel send RST.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.0.read_to_end(&mut rest).await {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}
