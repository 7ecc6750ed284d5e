//! Opening a data directory: fresh, reopened, and the ways it can be wrong. Each bad directory must be refused with
//! an error that names its path, never silently opened as an empty store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spool_core::{Job, JobId, JobState, Priority, QueueName, RetryPolicy};
use spool_store::{Mutation, SledConfig, SledStore, Store, StoreError};

fn job(now: u64) -> Job {
    Job {
        id: JobId::generate(now),
        queue: QueueName::new("default").unwrap(),
        payload: b"hello".to_vec(),
        payload_loaded: true,
        priority: Priority::DEFAULT,
        created_at: now,
        enqueued_at: now,
        seq: 1,
        run_at: None,
        expires_at: None,
        attempts: 0,
        max_attempts: 3,
        lease_ms: 1_000,
        retry: RetryPolicy::default(),
        state: JobState::Ready,
        lease: None,
        extra: None,
    }
}

/// `open_after_drop` for sled itself.
fn sled_after_drop(path: &std::path::Path) -> sled::Db {
    for _ in 0..2_000 {
        match sled::open(path) {
            Err(sled::Error::Io(e)) if e.to_string().contains("lock") => std::thread::sleep(Duration::from_millis(5)),
            other => return other.unwrap(),
        }
    }
    panic!("sled lock never released");
}

/// Opens the store, waiting out the lock that sled's threads hold a moment after the previous store in this process
/// was dropped (a real restart is a new process, so it never waits). Gives up after 10 s.
fn open_after_drop(config: SledConfig) -> Result<SledStore, StoreError> {
    for _ in 0..2_000 {
        match SledStore::open(config.clone()) {
            Err(StoreError::Open { reason, .. }) if reason.contains("lock") => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other,
        }
    }
    panic!("store lock never released");
}

#[tokio::test]
async fn committed_jobs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = SledConfig::new(dir.path().join("data"));
    let (a, b) = (job(1_700_000_000_000), job(1_700_000_000_001));
    {
        let store = SledStore::open(config.clone()).unwrap();
        store
            .submit(vec![
                Mutation::PutJob(Arc::new(a.clone())),
                Mutation::PutJob(Arc::new(b.clone())),
            ])
            .await
            .unwrap();
        store.submit(vec![Mutation::DeleteJob(a.id)]).await.unwrap();
    }
    let store = open_after_drop(config).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(with_payloads(&store, snapshot.jobs), vec![b]);
    assert_eq!(
        store.read_payload(&a.id).unwrap(),
        None,
        "an acked job's payload goes with it"
    );
    assert!(store.disk_bytes() > 0);
}

/// `jobs` as `load` gave them (no payloads), with their payloads read back.
fn with_payloads(store: &SledStore, jobs: Vec<Arc<Job>>) -> Vec<Job> {
    jobs.into_iter()
        .map(|job| {
            let mut job = Arc::unwrap_or_clone(job);
            assert!(
                !job.payload_loaded && job.payload.is_empty(),
                "loaded with its payload: {job:?}"
            );
            job.payload = store.read_payload(&job.id).unwrap().expect("stored payload");
            job.payload_loaded = true;
            job
        })
        .collect()
}

#[tokio::test]
async fn a_put_without_the_payload_keeps_the_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = SledConfig::new(&data);
    let (a, c) = (job(1_700_000_000_000), job(1_700_000_000_001));
    let put_a = vec![Mutation::PutJob(Arc::new(a.clone()))];
    drop_after(SledStore::open(config.clone()).unwrap(), put_a).await;

    // What the engine writes when a job it holds without its payload changes state (a retry, say) is a merge: `a`'s
    // is resolved against its record in sled, `c`'s against the put of `c` earlier in the same log.
    let retried = |mut job: Job| {
        job.payload = Vec::new();
        job.payload_loaded = false;
        job.attempts = 1;
        job.state = JobState::Retry;
        Mutation::PutJob(Arc::new(job))
    };
    let store = open_after_drop(config.clone()).unwrap();
    let held_a = Arc::unwrap_or_clone(store.load().unwrap().jobs.remove(0));
    store.submit(vec![Mutation::PutJob(Arc::new(c.clone()))]).await.unwrap();
    store.submit(vec![retried(held_a), retried(c.clone())]).await.unwrap();
    // A copy taken now is what a crash leaves: the merges are in the log only.
    let crash = dir.path().join("crash");
    copy_dir(&data, &crash);
    let log_mid_run = dir.path().join("log");
    copy_dir(&data.join("wal"), &log_mid_run);
    drop(store);

    let check = |store: &SledStore, what: &str| {
        let jobs = with_payloads(store, store.load().unwrap().jobs);
        assert_eq!(jobs.len(), 2, "{what}");
        for (stored, put) in jobs.iter().zip([&a, &c]) {
            assert_eq!(stored.payload, put.payload, "{what}");
            assert_eq!((stored.attempts, stored.state), (1, JobState::Retry), "{what}");
        }
    };
    check(
        &open_after_drop(config.clone()).unwrap(),
        "folded by the checkpoint at a clean stop",
    );
    check(
        &open_after_drop(SledConfig::new(&crash)).unwrap(),
        "folded by recovery after a crash",
    );
    // A checkpoint that crashed after writing sled but before deleting its segments runs again at the next open:
    // the merges meet records that already hold them.
    copy_dir(&log_mid_run, &data.join("wal"));
    check(&open_after_drop(config).unwrap(), "folded twice");
}

async fn drop_after(store: SledStore, batch: Vec<Mutation>) {
    store.submit(batch).await.unwrap();
}

/// A job record as schema 1 wrote it: the payload inside, third. Spelled out here, not derived from `Job`, so that
/// the test holds the reader to the layout that was actually on disk.
#[derive(serde::Serialize)]
struct JobV1<'a> {
    id: JobId,
    queue: &'a QueueName,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
    priority: Priority,
    created_at: u64,
    enqueued_at: u64,
    seq: u64,
    run_at: Option<u64>,
    expires_at: Option<u64>,
    attempts: u32,
    max_attempts: u32,
    lease_ms: u64,
    retry: RetryPolicy,
    unique_key: Option<&'a str>,
    unique_until: Option<u64>,
    headers: &'a std::collections::BTreeMap<String, String>,
    last_error: Option<&'a str>,
    state: JobState,
    lease: Option<spool_core::Lease>,
    dead_at: Option<u64>,
}

fn v1_record(j: &Job) -> Vec<u8> {
    let v1 = JobV1 {
        id: j.id,
        queue: &j.queue,
        payload: &j.payload,
        priority: j.priority,
        created_at: j.created_at,
        enqueued_at: j.enqueued_at,
        seq: j.seq,
        run_at: j.run_at,
        expires_at: j.expires_at,
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        lease_ms: j.lease_ms,
        retry: j.retry,
        unique_key: j.unique_key(),
        unique_until: j.unique_until(),
        headers: j.headers(),
        last_error: j.last_error(),
        state: j.state,
        lease: j.lease,
        dead_at: j.dead_at(),
    };
    let mut record = vec![1];
    record.extend(postcard::to_allocvec(&v1).unwrap());
    record
}

#[tokio::test]
async fn a_schema_1_directory_is_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = job(1_700_000_000_000);
    a.payload = vec![0xAB; 300];
    a.update_extra(|e| {
        e.unique_key = Some("k".into());
        e.headers.insert("h".into(), "v".into());
    });
    a.run_at = Some(1_700_000_009_000);
    let b = job(1_700_000_000_001);
    {
        let db = sled::open(&data).unwrap();
        db.insert(b"mschema", [vec![1], postcard::to_allocvec(&1u32).unwrap()].concat())
            .unwrap();
        for j in [&a, &b] {
            db.insert([&b"j"[..], j.id.as_bytes()].concat(), v1_record(j)).unwrap();
        }
        db.flush().unwrap();
    }
    let store = open_after_drop(SledConfig::new(&data)).unwrap();
    let loaded = store.load().unwrap().jobs;
    // A version 1 record changed without its payload (a merge) keeps that payload.
    let mut dead = Arc::unwrap_or_clone(loaded[0].clone());
    dead.state = JobState::Dead;
    store.submit(vec![Mutation::PutJob(Arc::new(dead))]).await.unwrap();
    assert_eq!(with_payloads(&store, loaded), vec![a.clone(), b.clone()]);
    drop(store);
    let schema = sled_after_drop(&data).get(b"mschema").unwrap().unwrap();
    assert_eq!(&schema[..], &[1, 3], "marked schema 3 (value version 1, postcard 3)");
    let again = open_after_drop(SledConfig::new(&data)).unwrap();
    a.state = JobState::Dead;
    assert_eq!(
        with_payloads(&again, again.load().unwrap().jobs),
        vec![a, b],
        "opened as schema 3"
    );
}

#[test]
fn garbage_store_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("db"), vec![0xA5; 64 * 1024]).unwrap();
    let err = SledStore::open(SledConfig::new(&data)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&data.display().to_string()) && text.contains("corrupt"),
        "{text}"
    );
    // sled rewrites the log's header while opening, before we can refuse; the directory must stay refused anyway,
    // never become an empty store on the next start.
    let again = open_after_drop(SledConfig::new(&data)).unwrap_err();
    assert!(matches!(again, StoreError::Corrupt { .. }), "{again}");
}

#[test]
fn a_file_where_the_directory_should_be_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = SledStore::open(SledConfig::new(&file)).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = SledConfig::new(dir.path().join("data"));
    let _first = SledStore::open(config.clone()).unwrap();
    let err = SledStore::open(config).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
}

/// Copies a directory the store is running in. A file that vanishes between the listing and the copy (the spare
/// being renamed into place by the store's background thread) is skipped: a crash at that moment would not have it
/// either.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            match std::fs::copy(entry.path(), target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                copied => {
                    copied.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn a_directory_copied_mid_run_recovers_committed_writes_from_the_log() {
    // A copy taken while the store runs is what a crash leaves: commits are in the log, not yet in sled.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (job(1_700_000_000_000), job(1_700_000_000_001));
    let store = SledStore::open(SledConfig::new(dir.path().join("data"))).unwrap();
    store.submit(vec![Mutation::PutJob(Arc::new(a.clone()))]).await.unwrap();
    store
        .submit(vec![Mutation::PutJob(Arc::new(b.clone())), Mutation::DeleteJob(a.id)])
        .await
        .unwrap();
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("data"), &copy);
    drop(store);
    // The crash also tore a write that was never answered: its first bytes landed right after the last record,
    // over the zeros the segment was prepared with.
    let segment = log_segments(&copy.join("wal")).pop().expect("a log segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = records_end(&bytes);
    bytes[end..end + 9].copy_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, b'P']);
    std::fs::write(&segment, bytes).unwrap();

    let recovered = SledStore::open(SledConfig::new(&copy)).unwrap();
    let jobs = with_payloads(&recovered, recovered.load().unwrap().jobs);
    assert_eq!(
        jobs,
        vec![b],
        "the later commit's delete and put both replayed; the torn record dropped"
    );
    assert_eq!(
        log_segments(&copy.join("wal")).len(),
        1,
        "the old segment is folded into sled"
    );
}

/// The log segments in `dir` (not the spare), in log order.
fn log_segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    segments
}

/// Where a segment's records end: walks their headers (`[length: u32 LE][crc32: u32 LE]`) to the first zero length.
fn records_end(segment: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            return at;
        }
        at += 8 + len;
    }
}

#[tokio::test]
async fn a_clean_stop_leaves_a_spare_segment_and_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SledConfig::new(dir.path().join("data"));
    config.segment_bytes = 64 * 1024;
    let wal = config.path.join("wal");
    let store = SledStore::open(config.clone()).unwrap();
    let active = log_segments(&wal).pop().expect("the active segment");
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        config.segment_bytes,
        "the first segment is the spare prepared at open, written in place"
    );
    let a = job(1_700_000_000_000);
    store.submit(vec![Mutation::PutJob(Arc::new(a.clone()))]).await.unwrap();
    // The spare for the next segment is written on a thread of its own (a clean stop abandons one still being
    // written), so wait for it: this is the one a rotation, or here the next start, takes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !wal.join("next.spare").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare was prepared for the next segment"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(store);

    assert!(
        log_segments(&wal).is_empty(),
        "the last segment is checkpointed at a clean stop"
    );
    let names: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["next.spare".to_string()]);
    let spare = std::fs::read(wal.join("next.spare")).unwrap();
    assert_eq!(spare.len() as u64, config.segment_bytes);
    assert!(spare.iter().all(|&b| b == 0), "a spare holds nothing");

    let store = SledStore::open(config).unwrap();
    assert_eq!(with_payloads(&store, store.load().unwrap().jobs), vec![a]);
}

#[test]
fn a_damaged_older_log_segment_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(SledStore::open(SledConfig::new(&data)).unwrap());
    // Only the newest segment may end in a torn write; damage in an older one is corruption.
    std::fs::write(data.join("wal/00000000000000000007.wal"), [0xff; 20]).unwrap();
    std::fs::write(data.join("wal/00000000000000000008.wal"), []).unwrap();
    let err = open_after_drop(SledConfig::new(&data)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("00000000000000000007.wal"), "{err}");
    assert!(err.to_string().contains("byte 0"), "{err}");
}
