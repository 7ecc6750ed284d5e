//! The sled-backed store, with group commit and an fsync that survives a power cut.
//!
//! Why the extra syncing: sled 0.34.7's `flush()` ends in `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, which
//! pushes pages to the device but does not flush the device's write cache or the file's metadata, so a power cut can
//! still lose a flushed write. And values too big for a segment go to `blobs/<lsn>` files that sled never syncs at
//! all. After each sled flush the writer therefore `fdatasync`s the log file and any blob files written since the last
//! sync (plus the blob directory, so their names survive too).
//!
//! Why one writer thread: group commit. Callers hand batches to a channel; the writer drains everything waiting,
//! applies it as one sled batch, flushes and syncs once, then answers every caller. Under load one fsync answers
//! hundreds of enqueues, so durable throughput grows with concurrency instead of being capped at the disk's fsync rate.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use spool_core::Job;
use tokio::sync::oneshot;

use crate::codec::{self, JOB_PREFIX, QUEUE_PREFIX, SCHEDULE_PREFIX, SCHEMA_KEY, SCHEMA_VERSION};
use crate::{Commit, Durability, Mutation, QueueRecord, Snapshot, Store, StoreError};

/// How to open a [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// The data directory; created if missing.
    pub path: PathBuf,
    /// When a commit counts as done. Default: [`Durability::Always`].
    pub durability: Durability,
    /// sled's page cache, in bytes. Default 64 MiB: sled's own default is 1 GiB (reported to reach ~1.4 GB of RSS), while the
    /// engine keeps its hot indexes in memory anyway and reads the store only at start-up.
    pub cache_bytes: u64,
    /// The most mutations one group commit applies; more wait for the next. Default 4,096: bounds the latency the
    /// first caller in a group pays for the callers who joined after it.
    pub max_group_mutations: usize,
}

impl SledConfig {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Always,
            cache_bytes: 64 * 1024 * 1024,
            max_group_mutations: 4_096,
        }
    }
}

enum Request {
    Write(Vec<Mutation>, Option<oneshot::Sender<Result<(), StoreError>>>),
    Flush(mpsc::SyncSender<Result<(), StoreError>>),
}

/// Shared between the writer thread and submitters: once a write fails, every later write fails fast.
type Poison = Arc<Mutex<Option<StoreError>>>;

/// A durable store in a sled database.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    durability: Durability,
    tx: Option<Sender<Request>>,
    poison: Poison,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Write(batch, _) => write!(f, "Write({} mutations)", batch.len()),
            Request::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `config.path`. Fails with an error naming the path if the directory cannot be
    /// created or written, is locked by another process, is corrupt, or holds a schema this build does not know.
    pub fn open(config: SledConfig) -> Result<Self, StoreError> {
        let path = config.path.clone();
        let open_err = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        fs::create_dir_all(&path).map_err(|e| open_err(e.to_string()))?;
        // sled opens an unwritable directory read-only without complaint and fails only at the first write, so check
        // up front that the daemon can write here.
        let probe = path.join(".spool-write-probe");
        fs::write(&probe, b"probe")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| open_err(format!("directory is not writable: {e}")))?;

        // sled treats a log it cannot parse as an empty database and carries on, which would silently start the
        // broker with nothing in it. Spool writes and syncs its schema record the first time it opens a directory,
        // so a log that already has bytes but yields no schema record is unreadable, and we refuse it.
        let had_log = fs::metadata(path.join("db")).is_ok_and(|m| m.len() > 0);
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_bytes)
            .mode(sled::Mode::LowSpace)
            // We flush (and fsync) ourselves after each group commit or interval; sled's timer flush would only add
            // unsynced flushes. With `none` durability sled's own 500 ms flush is the whole policy.
            .flush_every_ms(match config.durability {
                Durability::None => Some(500),
                _ => None,
            })
            .open()
            .map_err(|e| open_err(e.to_string()))?;

        match db.get(SCHEMA_KEY).map_err(|e| open_err(e.to_string()))? {
            Some(bytes) => {
                let found = codec::decode::<u32>(&bytes).map_err(|reason| StoreError::Corrupt {
                    path: path.clone(),
                    key: "schema".into(),
                    reason,
                })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path,
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                if had_log || !db.is_empty() {
                    return Err(StoreError::Corrupt {
                        path,
                        key: "schema".into(),
                        reason: "the store has data but no readable schema record: it is corrupt, or not a Spool \
                                 data directory"
                            .into(),
                    });
                }
                db.insert(SCHEMA_KEY, codec::encode(&SCHEMA_VERSION))
                    .map_err(|e| open_err(e.to_string()))?;
            }
        }

        let mut syncer = FileSyncer::new(&path).map_err(|e| open_err(e.to_string()))?;
        db.flush().map_err(|e| open_err(e.to_string()))?;
        syncer.sync().map_err(|e| open_err(e.to_string()))?;

        let (tx, rx) = mpsc::channel();
        let poison: Poison = Arc::default();
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            durability: config.durability,
            max_group: config.max_group_mutations.max(1),
            rx,
            poison: poison.clone(),
            syncer,
        };
        let writer = std::thread::Builder::new()
            .name("spool-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;

        Ok(Self {
            db,
            path,
            durability: config.durability,
            tx: Some(tx),
            poison,
            writer: Some(writer),
        })
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn corrupt(&self, key: &[u8], reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        if let Some(err) = self.poison.lock().expect("poison lock").clone() {
            return Err(err);
        }
        self.tx
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(request)
            .map_err(|_| StoreError::Closed)
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let read_err = |e: sled::Error| StoreError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut snapshot = Snapshot::default();
        for entry in self.db.scan_prefix([JOB_PREFIX]) {
            let (key, value) = entry.map_err(read_err)?;
            let job: Job = codec::decode(&value).map_err(|r| self.corrupt(&key, r))?;
            snapshot.jobs.push(job);
        }
        for entry in self.db.scan_prefix([QUEUE_PREFIX]) {
            let (key, value) = entry.map_err(read_err)?;
            let record: QueueRecord = codec::decode(&value).map_err(|r| self.corrupt(&key, r))?;
            snapshot.queues.push(record);
        }
        for entry in self.db.scan_prefix([SCHEDULE_PREFIX]) {
            let (key, value) = entry.map_err(read_err)?;
            snapshot
                .schedules
                .push(codec::decode(&value).map_err(|r| self.corrupt(&key, r))?);
        }
        Ok(snapshot)
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        let (tx, rx) = oneshot::channel();
        match self.send(Request::Write(batch, Some(tx))) {
            Ok(()) => Commit::waiting(rx),
            Err(e) => Commit::ready(Err(e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Flush(tx))?;
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }
}

impl Drop for SledStore {
    /// Closing the channel lets the writer drain what is queued, sync once more and exit; joining it means the
    /// process does not exit with acknowledged-but-unsynced writes under `interval` or `none`.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Writer {
    db: sled::Db,
    path: PathBuf,
    durability: Durability,
    max_group: usize,
    rx: Receiver<Request>,
    poison: Poison,
    syncer: FileSyncer,
}

impl Writer {
    fn run(mut self) {
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let mut waiting = Vec::new();
        let mut flushes = Vec::new();
        loop {
            let first = match self.durability {
                Durability::Interval(period) if dirty => {
                    match self.rx.recv_timeout(period.saturating_sub(last_sync.elapsed())) {
                        Ok(request) => Some(request),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match self.rx.recv() {
                    Ok(request) => Some(request),
                    Err(_) => break,
                },
            };

            let mut batch = sled::Batch::default();
            let mut mutations = 0usize;
            let mut next = first;
            while let Some(request) = next {
                match request {
                    Request::Write(ops, reply) => {
                        mutations += ops.len();
                        for op in ops {
                            apply(&mut batch, op);
                        }
                        if let Some(reply) = reply {
                            waiting.push(reply);
                        }
                    }
                    Request::Flush(reply) => flushes.push(reply),
                }
                next = if mutations < self.max_group {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }

            let mut result = Ok(());
            if mutations > 0 {
                result = self.db.apply_batch(batch).map_err(|e| self.write_err(e.to_string()));
                dirty = true;
            }
            let sync_now = !flushes.is_empty()
                || match self.durability {
                    Durability::Always => mutations > 0,
                    Durability::Interval(period) => dirty && last_sync.elapsed() >= period,
                    Durability::None => false,
                };
            if result.is_ok() && sync_now && dirty {
                result = self.sync();
                dirty = false;
                last_sync = Instant::now();
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "store write failed; refusing further writes");
                *self.poison.lock().expect("poison lock") = Some(e.clone());
            }
            for reply in waiting.drain(..) {
                let _ = reply.send(result.clone());
            }
            for reply in flushes.drain(..) {
                let _ = reply.send(result.clone());
            }
        }
        if dirty {
            if let Err(e) = self.sync() {
                tracing::error!(error = %e, "final store sync failed");
            }
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.write_err(e.to_string()))?;
        self.syncer.sync().map_err(|e| self.write_err(e.to_string()))
    }

    fn write_err(&self, reason: String) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            reason,
        }
    }
}

fn apply(batch: &mut sled::Batch, op: Mutation) {
    match op {
        Mutation::PutJob(job) => batch.insert(&codec::job_key(&job.id), codec::encode(&*job)),
        Mutation::DeleteJob(id) => batch.remove(&codec::job_key(&id)),
        Mutation::PutQueue(record) => batch.insert(codec::queue_key(record.name.as_str()), codec::encode(&record)),
        Mutation::PutSchedule(schedule) => {
            batch.insert(codec::schedule_key(&schedule.def.name), codec::encode(&*schedule))
        }
        Mutation::DeleteSchedule(name) => batch.remove(codec::schedule_key(&name)),
    }
}

/// Makes what sled wrote survive a power cut: `fdatasync` of the log file, and `fsync` of blob files sled created
/// since the last call (sled writes blobs without any sync) and of their directory.
struct FileSyncer {
    log: File,
    blobs_dir: PathBuf,
    blobs_seen: Option<SystemTime>,
    blob_high_water: u64,
}

impl FileSyncer {
    fn new(path: &Path) -> std::io::Result<Self> {
        // The directory entries of `db`, `conf` and `blobs/` were just created by sled; sync the directory once so
        // they survive too.
        File::open(path)?.sync_all()?;
        Ok(Self {
            log: File::open(path.join("db"))?,
            blobs_dir: path.join("blobs"),
            blobs_seen: None,
            blob_high_water: 0,
        })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        // A stat per commit is cheap; the directory scan runs only when the blob directory changed.
        let modified = fs::metadata(&self.blobs_dir).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified != self.blobs_seen {
            let mut newest = self.blob_high_water;
            for entry in fs::read_dir(&self.blobs_dir)? {
                let entry = entry?;
                let Some(lsn) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                    continue;
                };
                if lsn > self.blob_high_water {
                    match File::open(entry.path()) {
                        Ok(f) => f.sync_all()?,
                        // sled may already have garbage-collected it; nothing to sync then.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    newest = newest.max(lsn);
                }
            }
            File::open(&self.blobs_dir)?.sync_all()?;
            self.blob_high_water = newest;
            self.blobs_seen = modified;
        }
        Ok(())
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
