//! A blocking pop whose job is taken while the server stops: the job's deletion is still being committed, and the
//! client must get the job, not an error, since the job exists nowhere else once taken.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use spool_core::SystemClock;
use spool_engine::{Broker, EngineConfig};
use spool_resp::RespConfig;
use spool_store::{CheckpointListener, Commit, MemStore, Mutation, Snapshot, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Completes one held commit.
type Release = oneshot::Sender<Result<(), StoreError>>;

/// A `MemStore` whose commits, while `hold` is set, resolve only when the test releases them.
#[derive(Debug, Default)]
struct HeldCommits {
    inner: MemStore,
    hold: Mutex<Option<mpsc::UnboundedSender<Release>>>,
}

impl Store for HeldCommits {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn read_payload(&self, id: &spool_core::JobId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_payload(id)
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        let applied = self.inner.submit(batch);
        match &*self.hold.lock().unwrap() {
            Some(held) => {
                let (tx, rx) = oneshot::channel();
                held.send(tx).unwrap();
                drop(applied);
                Commit::waiting(rx)
            }
            None => applied,
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn set_checkpoint_listener(&self, listener: CheckpointListener) {
        self.inner.set_checkpoint_listener(listener)
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn a_job_popped_while_the_server_stops_is_handed_over() {
    let store = Arc::new(HeldCommits::default());
    let broker = Broker::open(store.clone(), Arc::new(SystemClock), EngineConfig::default()).unwrap();
    let server = start_with(broker, RespConfig::default()).await;
    let mut producer = server.client().await;
    let _: i64 = redis::cmd("LPUSH")
        .arg("q")
        .arg("the-job")
        .query_async(&mut producer)
        .await
        .unwrap();

    let (held_tx, mut held) = mpsc::unbounded_channel();
    *store.hold.lock().unwrap() = Some(held_tx);
    let mut consumer = server.client().await;
    let popped = tokio::spawn(async move {
        redis::cmd("BRPOP")
            .arg("q")
            .arg(5)
            .query_async::<Option<(String, String)>>(&mut consumer)
            .await
    });
    // The pop has taken the job: its deletion is being committed.
    let commit = held.recv().await.unwrap();
    let stopped = tokio::spawn(server.stop());
    // Let the connection see the stop before the commit completes (the runtime runs one task at a time).
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    commit.send(Ok(())).unwrap();
    assert_eq!(
        popped.await.unwrap().unwrap(),
        Some(("q".to_string(), "the-job".to_string())),
        "the client gets the job it took"
    );
    stopped.await.unwrap();
}

#[tokio::test]
async fn a_blocking_timeout_too_long_for_the_clock_waits_without_end() {
    let server = start(RespConfig::default()).await;
    let mut consumer = server.client().await;
    let popped = tokio::spawn(async move {
        redis::cmd("BRPOP")
            .arg("q")
            .arg("10000000000000000000")
            .query_async::<Option<(String, String)>>(&mut consumer)
            .await
    });
    let mut producer = server.client().await;
    let _: i64 = redis::cmd("LPUSH")
        .arg("q")
        .arg("late")
        .query_async(&mut producer)
        .await
        .unwrap();
    assert_eq!(
        popped.await.unwrap().unwrap(),
        Some(("q".to_string(), "late".to_string()))
    );
    server.stop().await;
}
