//! The durable store: a write-ahead log for commits, sled for everything that outlives a log segment.
//!
//! Commits: callers hand batches to a channel; one writer thread drains everything waiting, appends it to the log
//! (`wal.rs`) as one checksummed record and `fdatasync`s once, then answers every caller (group commit: under load
//! one fsync answers hundreds of enqueues, so durable throughput grows with concurrency instead of being capped at the
//! disk's fsync rate). That is one `pwrite` and one `fdatasync` per commit, and no sled work on the commit path; the
//! `pwrite` usually lands on zeros written ahead (the spare segment), so the `fdatasync` flushes data only.
//!
//! Checkpoints: when a segment reaches its size limit the writer starts the next one and hands the full one to a
//! checkpointer thread, which folds it into sled — only the last write of each key, so a job pushed and acked within
//! one segment never reaches sled — then flushes sled, makes that flush survive a power cut, and deletes the
//! segment. sled 0.34.7 as published ends each log buffer's write in `sync_file_range`, which does not flush the
//! device's write cache or the file's metadata; Spool's `vendor/sled` syncs them with `fdatasync` instead, because
//! sled reuses the space of records it moved as soon as that write returns. Values too big for a sled segment go to
//! `blobs/<lsn>` files that sled never syncs at all; so after each sled flush the checkpointer also `fdatasync`s
//! sled's log file and any blob files written since (plus the blob directory). Only then may the segment go. Opening the store folds whatever
//! segments a crash left behind into sled before anything reads it, so `load` reads sled alone.
//!
//! Disk: the writer queues at most [`CHECKPOINT_QUEUE`] full segments and then waits; the checkpointer takes at
//! most `1 + CHECKPOINT_QUEUE` at a time. So the log never holds more than `2 × CHECKPOINT_QUEUE + 3` segments (the
//! active one, one the writer is waiting to hand over, the queue, and the checkpointer's), and sled holds the live
//! records.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spool_core::{Job, JobId, QueueName};
use tokio::sync::oneshot;

use crate::codec::{self, JOB_PREFIX, QUEUE_PREFIX, SCHEDULE_PREFIX, SCHEMAS_READ, SCHEMA_KEY, SCHEMA_VERSION};
use crate::wal::{self, Net, NetWrites, ReadError, RecordBuf, Segment};
use crate::{CheckpointListener, Commit, Durability, ListenerSlot, Mutation, QueueRecord, Snapshot, Store, StoreError};

/// Full log segments that may wait for the checkpointer before the writer stops taking commits.
pub const CHECKPOINT_QUEUE: usize = 2;
/// A group commit stops taking more batches once its record is this large, so one record never holds a huge run of
/// large payloads that every caller in it must wait to write.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// How long a group commit waits, at most, for as many callers as the previous one answered.
const GATHER_WINDOW: Duration = Duration::from_micros(200);
/// Keys per sled batch in a checkpoint.
const CHECKPOINT_BATCH: usize = 256;

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
    /// A write-ahead log segment is checkpointed into sled once it reaches this size. Default 32 MiB: larger
    /// segments let more short-lived jobs cancel out before sled sees them, and cost more disk and a longer
    /// recovery after a crash.
    pub segment_bytes: u64,
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
            segment_bytes: 32 * 1024 * 1024,
            max_group_mutations: 4_096,
        }
    }
}

enum Request {
    Write(Vec<Mutation>, oneshot::Sender<Result<(), StoreError>>),
    Flush(mpsc::SyncSender<Result<(), StoreError>>),
}

/// A caller waiting for its records (for a flush: everything written before it) to be durable.
enum Waiter {
    Commit(oneshot::Sender<Result<(), StoreError>>),
    Flush(mpsc::SyncSender<Result<(), StoreError>>),
}

impl Waiter {
    fn answer(self, result: Result<(), StoreError>) {
        // A caller that stopped waiting has nothing left to hear.
        match self {
            Waiter::Commit(tx) => drop(tx.send(result)),
            Waiter::Flush(tx) => drop(tx.send(result)),
        }
    }
}

fn answer_all(waiters: impl IntoIterator<Item = Waiter>, result: &Result<(), StoreError>) {
    for waiter in waiters {
        waiter.answer(result.clone());
    }
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
    commits: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    listener: ListenerSlot,
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
            // sled is written only by checkpoints, which flush (and fsync) it themselves; until a checkpoint is
            // durable its records are in the log, so sled's timer flush would only add unsynced writes.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_err(e.to_string()))?;

        let mut older_schema = None;
        match db.get(SCHEMA_KEY).map_err(|e| open_err(e.to_string()))? {
            Some(bytes) => {
                let found = codec::decode::<u32>(&bytes).map_err(|reason| StoreError::Corrupt {
                    path: path.clone(),
                    key: "schema".into(),
                    reason,
                })?;
                match found {
                    SCHEMA_VERSION => {}
                    older if SCHEMAS_READ.contains(&older) => older_schema = Some(older),
                    _ => {
                        return Err(StoreError::Schema {
                            path,
                            found,
                            supported: SCHEMA_VERSION,
                        })
                    }
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

        let wal_dir = path.join("wal");
        fs::create_dir_all(&wal_dir).map_err(|e| open_err(e.to_string()))?;
        let mut checkpoint = Checkpoint {
            syncer: FileSyncer::new(&path).map_err(|e| open_err(e.to_string()))?,
            db: db.clone(),
            path: path.clone(),
            wal_dir: wal_dir.clone(),
            listener: ListenerSlot::default(),
        };
        let listener = checkpoint.listener.clone();
        // Recovery: fold every segment the last run left (after a crash; a clean stop leaves none) into sled, so
        // that `load` reads one place. The newest may end in a torn write (see `wal::read_segment`).
        let leftover = wal::list_segments(&wal_dir).map_err(|e| open_err(e.to_string()))?;
        checkpoint.run(&leftover, true).map_err(|e| match e {
            StoreError::Write { reason, .. } => open_err(reason),
            other => other,
        })?;
        if let Some(older) = older_schema {
            checkpoint.mark_schema(older)?;
        }
        let segment_bytes = config.segment_bytes.max(1);
        wal::remove_partial_spare(&wal_dir).map_err(|e| open_err(e.to_string()))?;
        // The first segment too is written in place: a new directory pays for its spare here, once; a clean stop
        // leaves one for the next start.
        if !wal::has_spare(&wal_dir, segment_bytes) {
            if let Err(e) = wal::prepare_spare(&wal_dir, segment_bytes, &AtomicBool::new(false)) {
                tracing::warn!(error = %e, "cannot prepare a log segment; it will grow as it is written");
            }
        }
        let segment = Segment::start(&wal_dir, leftover.last().map_or(1, |seq| seq + 1), Some(segment_bytes))
            .map_err(|e| open_err(format!("cannot start a write-ahead log segment: {e}")))?;

        let poison: Poison = Arc::default();
        let (sealed_tx, sealed_rx) = mpsc::sync_channel(CHECKPOINT_QUEUE);
        let checkpointer = {
            let poison = poison.clone();
            std::thread::Builder::new()
                .name("spool-checkpoint".into())
                .spawn(move || checkpoint.serve(sealed_rx, &poison))
                .map_err(|e| open_err(format!("cannot start the checkpoint thread: {e}")))?
        };

        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            commits: commits.clone(),
            path: path.clone(),
            wal_dir,
            durability: config.durability,
            max_group: config.max_group_mutations.max(1),
            segment_bytes,
            rx,
            poison: poison.clone(),
            segment,
            sealed: sealed_tx,
            record: RecordBuf::new(),
            spare: None,
            closing: Arc::default(),
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
            commits,
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            listener,
        })
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Log records written so far: one per group commit, however many batches it answered.
    pub fn group_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn corrupt(&self, key: &[u8], reason: String) -> StoreError {
        corrupt(&self.path, key, reason)
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

impl SledStore {
    /// Every stored job, in key order. Start-up time is mostly this, so it runs on two threads: this one walks sled
    /// and copies raw records into chunks, a helper decodes each chunk while the next is read. Copying first also
    /// means the decoded jobs do not interleave on the heap with sled's short-lived read buffers, which would leave
    /// the heap fragmented (and the daemon's RSS higher) once those are freed.
    fn load_jobs(&self) -> Result<Vec<Arc<Job>>, StoreError> {
        struct Chunk {
            bytes: Vec<u8>,
            /// (end offset of the key, end offset of the value) per record.
            ends: Vec<(usize, usize)>,
        }
        // Whichever comes first: many small jobs, or a few large records (schema 1 ones hold their payloads).
        const CHUNK_RECORDS: usize = 16 * 1024;
        const CHUNK_BYTES: usize = 16 * 1024 * 1024;
        let (tx, rx) = mpsc::sync_channel::<Chunk>(2);
        std::thread::scope(|scope| {
            let decoder = scope.spawn(move || {
                let mut jobs = Vec::new();
                // One allocation per queue name rather than one per job (~32 bytes a job).
                let mut queues = HashSet::new();
                for chunk in rx {
                    let mut start = 0;
                    for &(key_end, value_end) in &chunk.ends {
                        let mut job = codec::decode_job(&chunk.bytes[key_end..value_end])
                            .map_err(|r| self.corrupt(&chunk.bytes[start..key_end], r))?;
                        match queues.get(&job.queue) {
                            Some(shared) => job.queue = QueueName::clone(shared),
                            None => {
                                queues.insert(job.queue.clone());
                            }
                        }
                        jobs.push(Arc::new(job));
                        start = value_end;
                    }
                }
                Ok::<_, StoreError>(jobs)
            });
            let mut chunk = Chunk {
                bytes: Vec::new(),
                ends: Vec::with_capacity(CHUNK_RECORDS),
            };
            let mut scanned = Ok(());
            for entry in self.db.scan_prefix([JOB_PREFIX]) {
                let (key, value) = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        scanned = Err(StoreError::Open {
                            path: self.path.clone(),
                            reason: e.to_string(),
                        });
                        break;
                    }
                };
                chunk.bytes.extend_from_slice(&key);
                let key_end = chunk.bytes.len();
                chunk.bytes.extend_from_slice(&value[..codec::job_fields_len(&value)]);
                chunk.ends.push((key_end, chunk.bytes.len()));
                if chunk.ends.len() == CHUNK_RECORDS || chunk.bytes.len() >= CHUNK_BYTES {
                    let full = std::mem::replace(
                        &mut chunk,
                        Chunk {
                            bytes: Vec::new(),
                            ends: Vec::with_capacity(CHUNK_RECORDS),
                        },
                    );
                    // The decoder only stops early on a corrupt record, which it reports below.
                    if tx.send(full).is_err() {
                        break;
                    }
                }
            }
            if !chunk.ends.is_empty() {
                let _ = tx.send(chunk);
            }
            drop(tx);
            let jobs = decoder.join().expect("job decoder thread panicked")?;
            scanned.map(|()| jobs)
        })
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let read_err = |e: sled::Error| StoreError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut snapshot = Snapshot {
            jobs: self.load_jobs()?,
            ..Snapshot::default()
        };
        for entry in self.db.scan_prefix([QUEUE_PREFIX]) {
            let (key, value) = entry.map_err(read_err)?;
            let record: QueueRecord = codec::decode(&value).map_err(|r| self.corrupt(&key, r))?;
            snapshot.queues.push(record);
        }
        for entry in self.db.scan_prefix([SCHEDULE_PREFIX]) {
            let (key, value) = entry.map_err(read_err)?;
            snapshot
                .schedules
                .push(codec::decode_schedule(&value).map_err(|r| self.corrupt(&key, r))?);
        }
        Ok(snapshot)
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        let (tx, rx) = oneshot::channel();
        match self.send(Request::Write(batch, tx)) {
            Ok(()) => Commit::waiting(rx),
            Err(e) => Commit::ready(Err(e)),
        }
    }

    fn set_checkpoint_listener(&self, listener: CheckpointListener) {
        self.listener.set(listener);
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Request::Flush(tx))?;
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn read_payload(&self, id: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
        // A job the engine holds without its payload has its whole record in sled: `load` reads sled after folding
        // the log into it, a checkpoint reports only jobs it put in sled whole, and a later put of such a job
        // leaves the payload as it was (a merge).
        let key = codec::job_key(id);
        let value = self.db.get(key).map_err(|e| StoreError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        value
            .map(|v| {
                codec::job_payload(&v)
                    .map(<[u8]>::to_vec)
                    .map_err(|r| self.corrupt(&key, r))
            })
            .transpose()
    }

    fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }
}

impl Drop for SledStore {
    /// Closing the channel lets the writer drain what is queued, sync once more, hand its last segment to the
    /// checkpointer and exit; joining both means the process does not exit with acknowledged-but-unsynced writes
    /// under `interval` or `none`, and the next start has no log to replay.
    fn drop(&mut self) {
        self.tx.take();
        for thread in [self.writer.take(), self.checkpointer.take()].into_iter().flatten() {
            let _ = thread.join();
        }
    }
}

struct Writer {
    commits: Arc<AtomicU64>,
    path: PathBuf,
    wal_dir: PathBuf,
    durability: Durability,
    max_group: usize,
    segment_bytes: u64,
    rx: Receiver<Request>,
    poison: Poison,
    segment: Segment,
    sealed: SyncSender<u64>,
    record: RecordBuf,
    /// The thread writing the spare for the next segment, if one is running.
    spare: Option<JoinHandle<()>>,
    /// Set at close: a spare still being written is abandoned.
    closing: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        self.spare = self.prepare_spare();
        let mut dirty = false;
        let mut last_group = 0;
        let mut last_sync = Instant::now();
        let mut waiters = Vec::new();
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

            let mut mutations = 0usize;
            let mut flush = false;
            let mut next = first;
            let mut gathered = false;
            while let Some(request) = next {
                match request {
                    Request::Write(ops, reply) => {
                        mutations += ops.len();
                        for op in ops {
                            self.record.push(op);
                        }
                        waiters.push(Waiter::Commit(reply));
                    }
                    Request::Flush(reply) => {
                        flush = true;
                        waiters.push(Waiter::Flush(reply));
                    }
                }
                next = if mutations < self.max_group && self.record.payload_len() < MAX_GROUP_BYTES {
                    match self.rx.try_recv() {
                        Ok(request) => Some(request),
                        // Callers answered by the last commit are likely to come straight back: waiting a moment for
                        // them turns a trickle of small commits (each an fsync) into fewer large ones. One sleep, not
                        // a wait on the channel, so that each arrival does not wake this thread.
                        Err(_) if self.durability == Durability::Always && !gathered && waiters.len() < last_group => {
                            gathered = true;
                            std::thread::sleep(GATHER_WINDOW);
                            self.rx.try_recv().ok()
                        }
                        Err(_) => None,
                    }
                } else {
                    None
                };
            }
            last_group = waiters.len();

            // After a failed write or sync the segment may end in a partial record, and anything appended behind it
            // would be dropped with it at recovery (or found corrupt): once poisoned, nothing more is written, and
            // every caller — including an empty batch used as a barrier, and a flush — hears the error.
            let poisoned = self.poison.lock().expect("poison lock").clone();
            if let Some(err) = poisoned {
                self.record.clear();
                answer_all(waiters.drain(..), &Err(err));
                // Records answered before the failure (`interval`, `none`) still get their sync, once: the failure
                // may be the checkpointer's, with the log sound. And the loop then waits without a timeout: with
                // `dirty` left set, an `interval` writer would wake at once, forever.
                if dirty {
                    dirty = false;
                    if let Err(e) = self.segment.sync() {
                        tracing::error!(error = %e, "cannot sync the log after the store failed");
                    }
                }
                continue;
            }
            let mut result = Ok(());
            if mutations > 0 {
                result = self.segment.append(self.record.finish()).map_err(|e| self.write_err(e));
                self.record.clear();
                self.commits.fetch_add(1, Ordering::Relaxed);
                dirty = true;
            }
            let sync_now = flush
                || match self.durability {
                    Durability::Always => mutations > 0,
                    Durability::Interval(period) => dirty && last_sync.elapsed() >= period,
                    Durability::None => false,
                };
            if result.is_ok() && sync_now && dirty {
                result = self.segment.sync().map_err(|e| self.write_err(e));
                dirty = false;
                last_sync = Instant::now();
            }
            if let Err(e) = &result {
                self.fail(e);
            }
            answer_all(waiters.drain(..), &result);
            // Rotated only after answering: these callers' records are durable whatever happens to the hand-off.
            if result.is_ok() && self.segment.len() >= self.segment_bytes {
                match self.rotate() {
                    Ok(()) => dirty = false,
                    Err(e) => self.fail(&e),
                }
            }
        }
        // Closing: the last segment goes to the checkpointer like a full one, so a clean stop leaves no log behind
        // (and the spare for the next start, if it was complete).
        self.closing.store(true, Ordering::Relaxed);
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
        if self.poison.lock().expect("poison lock").is_some() {
            tracing::error!("the store failed earlier; the log will be replayed at the next start");
        } else if let Err(e) = self.segment.seal().map_err(|e| self.write_err(e)) {
            self.fail(&e);
        } else if self.sealed.send(self.segment.seq).is_err() {
            tracing::error!("the checkpointer stopped; the log will be replayed at the next start");
        }
    }

    /// Seals the active segment (cut to its records and synced in full, so that damage found in it later is
    /// corruption and not a torn write) and starts the next: from the spare if it is ready, else as a file that grows
    /// as it is written — commits never wait for the spare's zeros. Waits while the checkpointer is
    /// [`CHECKPOINT_QUEUE`] segments behind: that backpressure is what bounds the log on disk.
    fn rotate(&mut self) -> Result<(), StoreError> {
        self.segment.seal().map_err(|e| self.write_err(e))?;
        let spare_ready = self.spare.as_ref().is_none_or(JoinHandle::is_finished);
        if spare_ready {
            if let Some(spare) = self.spare.take() {
                let _ = spare.join();
            }
        }
        let next = Segment::start(
            &self.wal_dir,
            self.segment.seq + 1,
            spare_ready.then_some(self.segment_bytes),
        )
        .map_err(|e| self.write_err(e))?;
        if self.spare.is_none() {
            self.spare = self.prepare_spare();
        }
        let full = std::mem::replace(&mut self.segment, next);
        self.sealed
            .send(full.seq)
            .map_err(|_| self.write_err("the checkpointer stopped"))
    }

    /// Writes the next segment's spare on a thread of its own (it is a segment's worth of zeros and a sync), so that
    /// a rotation does not hold up commits. Without a spare the next segment is grown as it is written: slower
    /// syncs, nothing lost.
    fn prepare_spare(&self) -> Option<JoinHandle<()>> {
        if wal::has_spare(&self.wal_dir, self.segment_bytes) {
            return None;
        }
        let (dir, bytes, closing) = (self.wal_dir.clone(), self.segment_bytes, self.closing.clone());
        std::thread::Builder::new()
            .name("spool-wal-spare".into())
            .spawn(move || match wal::prepare_spare(&dir, bytes, &closing) {
                Err(e) if !closing.load(Ordering::Relaxed) => {
                    tracing::warn!(error = %e, "cannot prepare the next log segment; it will grow as it is written");
                }
                _ => {}
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the thread that prepares log segments"))
            .ok()
    }

    fn fail(&self, e: &StoreError) {
        tracing::error!(error = %e, "store write failed; refusing further writes");
        *self.poison.lock().expect("poison lock") = Some(e.clone());
    }

    fn write_err(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Folds log segments into sled.
struct Checkpoint {
    db: sled::Db,
    syncer: FileSyncer,
    path: PathBuf,
    wal_dir: PathBuf,
    listener: ListenerSlot,
}

impl Checkpoint {
    /// Checkpoints segments as the writer seals them, several at once when it has fallen behind (fewer sled flushes,
    /// and more writes cancel out).
    fn serve(mut self, sealed: Receiver<u64>, poison: &Poison) {
        while let Ok(first) = sealed.recv() {
            let seqs: Vec<u64> = std::iter::once(first)
                .chain(sealed.try_iter().take(CHECKPOINT_QUEUE))
                .collect();
            if let Err(e) = self.run(&seqs, false) {
                tracing::error!(error = %e, "checkpoint failed; refusing further writes");
                *poison.lock().expect("poison lock") = Some(e);
                return;
            }
        }
    }

    /// Applies the net writes of `seqs` (oldest first) to sled as one batch, makes it durable, then deletes the
    /// segments. Safe to repeat after a crash at any point: segments are deleted oldest first, only after sled holds
    /// them durably, and re-applying a segment's last writes gives the same result.
    fn run(&mut self, seqs: &[u64], newest_may_be_torn: bool) -> Result<(), StoreError> {
        let mut net = NetWrites::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let torn_ok = newest_may_be_torn && i + 1 == seqs.len();
            wal::read_segment(&self.wal_dir, seq, torn_ok, &mut net).map_err(|e| match e {
                ReadError::Io(e) => self.write_err(e),
                ReadError::Corrupt { offset, reason } => StoreError::Corrupt {
                    path: wal::segment_path(&self.wal_dir, seq),
                    key: format!("record at byte {offset}"),
                    reason,
                },
            })?;
        }
        // Jobs whose whole record (payload included) this checkpoint puts in sled, for the listener if there is one
        // (there is none during recovery at open).
        let stored: Vec<JobId> = match self.listener.is_set() {
            true => net
                .iter()
                .filter(|(key, value)| key.first() == Some(&JOB_PREFIX) && !matches!(value, Net::Delete))
                .filter_map(|(key, _)| key[1..].try_into().ok().map(JobId::from_bytes))
                .collect(),
            false => Vec::new(),
        };
        // Applied in small batches, not one: the checkpoint need not be atomic (the segments stay until sled holds
        // all of them durably, and replaying them is idempotent), and sled holds a whole batch, and the garbage it
        // leaves, in memory until the batch ends.
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        for (key, value) in net {
            match value {
                Net::Put(value) => batch.insert(key, value),
                // Most deletes are of jobs put in the same segments, which sled never saw: skip them rather than
                // have sled log a removal of nothing.
                Net::Delete => {
                    if !self.db.contains_key(&key).map_err(|e| self.write_err(e))? {
                        continue;
                    }
                    batch.remove(key);
                }
                Net::Merge(update) => {
                    let stored = self.db.get(&key).map_err(|e| self.write_err(e))?;
                    let merged = stored
                        .ok_or_else(|| "a job record to merge is not in sled".to_string())
                        .and_then(|stored| codec::merge_job(&update, &stored))
                        .map_err(|r| corrupt(&self.path, &key, r))?;
                    batch.insert(key, merged);
                }
            }
            in_batch += 1;
            if in_batch == CHECKPOINT_BATCH {
                self.db
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(|e| self.write_err(e))?;
                in_batch = 0;
            }
        }
        self.db.apply_batch(batch).map_err(|e| self.write_err(e))?;
        self.db.flush().map_err(|e| self.write_err(e))?;
        self.syncer.sync().map_err(|e| self.write_err(e))?;
        // One directory sync per removal: POSIX does not order unlinks on disk, and a newer segment gone while an
        // older one survives would replay the older writes over sled's newer state.
        for &seq in seqs {
            fs::remove_file(wal::segment_path(&self.wal_dir, seq))
                .and_then(|()| File::open(&self.wal_dir)?.sync_all())
                .map_err(|e| self.write_err(e))?;
        }
        self.listener.notify(&stored);
        Ok(())
    }

    /// Marks a directory of an older schema as this build's, durably, before anything is written to it: its records
    /// stay as they are (this build reads them, see `SCHEMAS_READ`), and a build that knows only the older schema
    /// refuses it from now on.
    fn mark_schema(&mut self, older: u32) -> Result<(), StoreError> {
        self.db
            .insert(SCHEMA_KEY, codec::encode(&SCHEMA_VERSION))
            .map_err(|e| self.write_err(e))?;
        self.db.flush().map_err(|e| self.write_err(e))?;
        self.syncer.sync().map_err(|e| self.write_err(e))?;
        tracing::info!(path = %self.path.display(), older, schema = SCHEMA_VERSION, "store schema marked as this build's (records unchanged)");
        Ok(())
    }

    fn write_err(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Makes what sled wrote survive a power cut: `fdatasync` of the log file, and `fsync` of blob files sled created
/// since the last call (sled writes blobs without any sync) and of their directory. Runs once per checkpoint.
struct FileSyncer {
    log: File,
    blobs_dir: PathBuf,
    blob_high_water: u64,
}

impl FileSyncer {
    fn new(path: &Path) -> std::io::Result<Self> {
        // sled writes `conf` without a sync when it creates it, and refuses to open a `conf` it cannot read: sync its
        // contents. The directory entries of `db`, `conf`, `blobs/` and `wal/` were just created; sync the directory
        // once so they survive too, and the parent's, in which the directory itself may just have been created.
        File::open(path.join("conf"))?.sync_all()?;
        File::open(path)?.sync_all()?;
        // The parent may be one the daemon can write into but not read (a bare `/var/lib`-style mount point, say):
        // a failure there is worth a warning, not a refusal to start.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = File::open(parent).and_then(|dir| dir.sync_all()) {
                tracing::warn!(dir = %parent.display(), error = %e, "cannot sync the data directory's parent");
            }
        }
        Ok(Self {
            log: File::open(path.join("db"))?,
            blobs_dir: path.join("blobs"),
            blob_high_water: 0,
        })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        // Listed every time rather than when the directory's mtime moves: mtime moves once per kernel tick, and two
        // checkpoints within one tick would skip the second one's blobs.
        let entries = match fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut newest = self.blob_high_water;
        for entry in entries {
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
        if newest > self.blob_high_water {
            File::open(&self.blobs_dir)?.sync_all()?;
            self.blob_high_water = newest;
        }
        Ok(())
    }
}

fn corrupt(path: &Path, key: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
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
