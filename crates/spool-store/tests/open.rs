//! Opening a data directory: fresh, reopened, and the ways it can be wrong. Each bad directory must be refused with
//! an error that names its path, never silently opened as an empty store.

use std::sync::Arc;
use std::time::Duration;

use spool_core::{Job, JobId, JobState, Priority, QueueName, RetryPolicy};
use spool_store::{Mutation, SledConfig, SledStore, Store, StoreError};

fn job(now: u64) -> Job {
    Job {
        id: JobId::generate(now),
        queue: QueueName::new("default").unwrap(),
        payload: b"hello".to_vec(),
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
        unique_key: None,
        unique_until: None,
        headers: Default::default(),
        last_error: None,
        state: JobState::Ready,
        lease: None,
        dead_at: None,
    }
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
    assert_eq!(snapshot.jobs, vec![b]);
    assert!(store.disk_bytes() > 0);
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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
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
    // The crash also tore a write that was never answered.
    let segment = std::fs::read_dir(copy.join("wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut torn = std::fs::read(&segment).unwrap();
    torn.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, b'P']);
    std::fs::write(&segment, torn).unwrap();

    let recovered = SledStore::open(SledConfig::new(&copy)).unwrap();
    let jobs = recovered.load().unwrap().jobs;
    assert_eq!(
        jobs,
        vec![b],
        "the later commit's delete and put both replayed; the torn record dropped"
    );
    assert_eq!(
        std::fs::read_dir(copy.join("wal")).unwrap().count(),
        1,
        "the old segment is folded into sled"
    );
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
