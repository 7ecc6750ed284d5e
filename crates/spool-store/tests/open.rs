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
