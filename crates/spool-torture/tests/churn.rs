//! Churn test: a broker that keeps a steady backlog while hundreds of thousands of jobs pass through it must not
//! grow its data directory without bound. Every job is one put and one delete in the store, so a log-structured
//! store that does not reclaim the space of deleted records fills the disk of a daemon that is, to its operator,
//! holding only a thousand jobs. Here every write goes first to the write-ahead log, whose segments are checkpointed
//! into sled and deleted as they fill: the test uses small segments so that it crosses dozens of checkpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spool_core::{JobOptions, ManualClock};
use spool_engine::{Broker, EngineConfig, NewJob, ReserveRequest};
use spool_store::{Durability, SledConfig, SledStore, Store, CHECKPOINT_QUEUE};

/// Jobs always waiting in the queue.
const BACKLOG: usize = 1_000;
const PAYLOAD_BYTES: usize = 200;
/// Jobs pushed (and acked) per step: one enqueue batch, one reservation, one `ack_many`.
const STEP: usize = 1_000;
/// Jobs pushed through in all.
const TOTAL: usize = 300_000;
/// The data directory is measured after this many jobs.
const SAMPLE_EVERY: usize = 20_000;
/// Write-ahead log segment size for this run (the default is 32 MiB): ~13,000 jobs' puts and deletes each.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// The live data is ~1,000 jobs of ~300 bytes, well under a megabyte, but sled works in 512 KiB segments and keeps
/// several in use (it settles between 3.5 and 8.5 MiB here). The log adds its active segment, the spare for the next
/// one and the full ones not yet checkpointed: with one producer the checkpointer keeps up, so that is the active one
/// and the spare plus at most the writer's queue. A store that reclaimed nothing would hold the ~100 MB of writes this
/// run makes, so this bound is what catches steady (linear) growth.
const MAX_BYTES: u64 = 10 * 1024 * 1024 + (CHECKPOINT_QUEUE as u64 + 2) * SEGMENT_BYTES;
/// How much larger the last third's peak may be than the middle third's. Samples swing with no trend (the log fills
/// and empties a segment at a time, sled grows and shrinks a segment at a time as it cleans); a store whose growth
/// sped up would exceed 2.
const MAX_GROWTH: f64 = 2.0;

#[tokio::test]
async fn disk_use_levels_off_under_churn() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SledConfig::new(dir.path());
    // What the store writes and keeps does not depend on whether each commit is fsynced: fsync only moves pages
    // already written from the cache to the device. `None` skips the per-commit fsync, and the explicit flush before
    // each sample syncs the log, so the measurement is the same as with `always` at a fraction of the run time.
    config.durability = Durability::None;
    config.segment_bytes = SEGMENT_BYTES;
    let store = Arc::new(SledStore::open(config).expect("open store"));
    // Time never needs to move: no job is delayed, leased past its lease, or expires.
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = Broker::open(store.clone(), clock, EngineConfig::default()).expect("open broker");

    let batch = || {
        (0..STEP)
            .map(|_| NewJob {
                queue: "default".into(),
                payload: vec![b'x'; PAYLOAD_BYTES],
                options: JobOptions::default(),
                position: Default::default(),
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..BACKLOG / STEP {
        broker.enqueue_batch(batch()).await.expect("fill the backlog");
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    for step in 1..=TOTAL / STEP {
        broker.enqueue_batch(batch()).await.expect("enqueue");
        let jobs = broker
            .reserve(ReserveRequest::new(vec!["default".into()], STEP, Duration::ZERO))
            .await
            .expect("reserve");
        assert_eq!(jobs.len(), STEP);
        let acks: Vec<_> = jobs.iter().map(|j| (j.id, j.lease.expect("leased").token)).collect();
        for result in broker.ack_many(&acks).await.expect("ack") {
            result.expect("ack one");
        }
        if (step * STEP).is_multiple_of(SAMPLE_EVERY) {
            store.flush().expect("flush");
            samples.push((step * STEP, store.disk_bytes()));
        }
    }
    assert_eq!(broker.totals().0, BACKLOG);

    println!(
        "churn: {TOTAL} jobs through a backlog of {BACKLOG} in {:.1} s; data directory after every {SAMPLE_EVERY} jobs:",
        started.elapsed().as_secs_f64()
    );
    for (jobs, bytes) in &samples {
        println!(
            "  {jobs:>7} jobs: {:>6.2} MiB ({bytes} bytes)",
            *bytes as f64 / 1048576.0
        );
    }
    let third = samples.len() / 3;
    let max = |s: &[(usize, u64)]| s.iter().map(|&(_, b)| b).max().expect("samples");
    let middle = max(&samples[third..2 * third]);
    let last = max(&samples[2 * third..]);
    assert!(
        last as f64 <= middle as f64 * MAX_GROWTH,
        "the data directory keeps growing: max {middle} bytes in the middle third, {last} in the last"
    );
    assert!(
        last <= MAX_BYTES,
        "the data directory holds {last} bytes for ~{BACKLOG} jobs"
    );
}
