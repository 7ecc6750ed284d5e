//! The broker's in-memory state and its transitions: every job, the ready sets, timers, unique keys and counters.
//!
//! Everything here is synchronous and takes `now` as an argument, so it runs the same under a real or a manual clock.
//! Each transition returns the [`Mutation`]s that make it durable; the caller submits them to the store in the same
//! critical section, which keeps the store's order identical to the order of events in memory.
//!
//! What is written, and what is not: a job is written when it is enqueued, when it fails (nack or lease expiry),
//! when it dies or is replayed, and deleted when it is acked, cancelled, purged or expires. Reservations, lease
//! extensions and the promotion of due jobs to ready are *not* written: after a restart a job that was leased is
//! simply ready again (at-least-once), and a stored job whose `run_at` has passed is promoted on the first tick. That
//! keeps a job's whole life at two writes — one put, one delete — when it succeeds first time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::Rng;
use spool_core::{
    ErrorCode, Job, JobExtra, JobId, JobOptions, JobState, Lease, Priority, QueueName, Schedule, SpoolError,
    TimestampMs,
};
use spool_store::{Mutation, QueueRecord, Snapshot, Store};

use crate::config::{check_lease_ms, check_max_attempts, EngineConfig, QueueSettings};
use crate::{storage_error, DeadSelector, End, NackAction, QueueStats, ReserveOrder};

/// Ready jobs of one queue: one FIFO (by enqueue sequence) per priority level.
#[derive(Debug, Default)]
struct ReadySet {
    by_priority: [BTreeMap<u64, JobId>; 10],
    len: usize,
}

impl ReadySet {
    fn insert(&mut self, job: &Job) {
        if self.by_priority[job.priority.get() as usize]
            .insert(job.seq, job.id)
            .is_none()
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, job: &Job) {
        if self.by_priority[job.priority.get() as usize].remove(&job.seq).is_some() {
            self.len -= 1;
        }
    }

    /// The next job to hand out: highest priority, then lowest sequence.
    fn first(&self) -> Option<JobId> {
        self.by_priority
            .iter()
            .rev()
            .find_map(|fifo| fifo.values().next().copied())
    }

    /// The job that would be reserved last: lowest priority, then highest sequence.
    fn last(&self) -> Option<JobId> {
        self.by_priority
            .iter()
            .find_map(|fifo| fifo.values().next_back().copied())
    }

    /// The jobs among which is the one that has waited longest, whatever its priority. No index by age is needed
    /// (it would cost a tree entry per ready job): jobs entering at the back get growing sequence numbers above
    /// [`SEQ_ORIGIN`] as time passes, jobs pushed to the front get falling ones below it, so in each priority's FIFO
    /// the longest-waiting job is the first of the back part or the last of the front part. This assumes the wall
    /// clock does not step backwards; if it does, `oldest_ready_age_ms` can read low until those jobs leave.
    fn oldest_candidates(&self) -> impl Iterator<Item = JobId> + '_ {
        self.by_priority.iter().flat_map(|fifo| {
            let back = fifo.range(SEQ_ORIGIN..).next();
            let front = fifo.range(..SEQ_ORIGIN).next_back();
            back.into_iter().chain(front).map(|(_, id)| *id)
        })
    }

    /// Jobs in reservation order, from `end`.
    fn iter(&self, end: End) -> Box<dyn Iterator<Item = JobId> + '_> {
        match end {
            End::Next => Box::new(self.by_priority.iter().rev().flat_map(|fifo| fifo.values().copied())),
            End::Last => Box::new(self.by_priority.iter().flat_map(|fifo| fifo.values().rev().copied())),
        }
    }
}

/// A queue's live state.
#[derive(Debug)]
struct Queue {
    settings: QueueSettings,
    paused: bool,
    ready: ReadySet,
    scheduled: usize,
    leased: usize,
    retry: usize,
    dead: usize,
    counters: Counters,
}

/// Totals since the broker started (not durable: they are for rates and dashboards).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub enqueued: u64,
    pub acked: u64,
    pub failed: u64,
    pub expired: u64,
    pub dead_lettered: u64,
}

impl Queue {
    fn new(settings: QueueSettings) -> Self {
        Self {
            paused: settings.paused,
            settings,
            ready: ReadySet::default(),
            scheduled: 0,
            leased: 0,
            retry: 0,
            dead: 0,
            counters: Counters::default(),
        }
    }
}

/// A request to enqueue one job, as the doors decode it.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// Target queue name (validated here).
    pub queue: String,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// Options; unset ones take the queue's defaults.
    pub options: JobOptions,
    /// Where the job joins its priority level: at the back of the line (`Last`, the default) or at the front
    /// (`Next`, what Redis's `RPUSH` does to a list consumed with `RPOP`).
    pub position: End,
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id: a new one, or, for a duplicate unique key, the id of the live job holding that key.
    pub id: JobId,
    /// True when no new job was created because the unique key was held.
    pub duplicate: bool,
}

#[derive(Debug)]
pub(crate) struct State {
    config: EngineConfig,
    /// Behind a pointer: hashbrown rounds its table up to a power of two of slots, each the size of an entry, so
    /// inline 300-byte jobs would cost up to twice that per job in empty slots (~650 MB of table for a million jobs).
    /// An `Arc` because the store's writer holds the same job until it has encoded it: a put shares the job rather
    /// than copying it, and a change made meanwhile copies it then (`Arc::make_mut`).
    jobs: HashMap<JobId, Arc<Job>>,
    queues: BTreeMap<QueueName, Queue>,
    /// (due time, job): scheduled/retry jobs at `run_at`, leased jobs at lease end, ready jobs at `expires_at`.
    timers: BTreeSet<(TimestampMs, JobId)>,
    /// Dead jobs by the time they died, for listing in order.
    dead: BTreeSet<(TimestampMs, JobId)>,
    unique: HashMap<String, JobId>,
    /// Sequence numbers grow from the middle of the range both ways: `next_seq` for the back of the line,
    /// `front_seq` for jobs that jump it, so either end is O(log n) and the order survives restarts.
    next_seq: u64,
    front_seq: u64,
    /// Schedules by name (their operations live in `schedules.rs`).
    pub(crate) schedules: BTreeMap<String, Schedule>,
    /// Read here only for the payloads of jobs loaded without them (see `Job::payload_loaded`); writes go out
    /// through `Effects`.
    store: Arc<dyn Store>,
    /// Bytes of the payloads held in `jobs`, kept by `index` and `unindex`.
    payload_bytes: usize,
}

/// What a transition did, beyond its return value: writes to submit and queues that gained ready jobs.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub writes: Vec<Mutation>,
    pub readied: Vec<QueueName>,
}

/// Where sequence numbers start: the middle of the range, leaving 2^63 numbers each way.
const SEQ_ORIGIN: u64 = 1 << 63;

fn wrong_lease(job: &Job, token: u64) -> SpoolError {
    let now = match job.state {
        JobState::Leased => "leased under another token".to_string(),
        other => other.as_str().to_string(),
    };
    SpoolError::new(
        ErrorCode::LeaseLost,
        format!("lease token {token} of job {} is stale: the job is now {now}", job.id),
    )
}

impl State {
    /// Rebuilds the state from what the store holds.
    pub fn restore(config: EngineConfig, snapshot: Snapshot, store: Arc<dyn Store>) -> Self {
        let mut state = State {
            queues: config
                .queues
                .iter()
                .map(|(name, settings)| (name.clone(), Queue::new(settings.clone())))
                .collect(),
            config,
            jobs: HashMap::with_capacity(snapshot.jobs.len()),
            timers: BTreeSet::new(),
            dead: BTreeSet::new(),
            unique: HashMap::new(),
            next_seq: SEQ_ORIGIN,
            front_seq: SEQ_ORIGIN,
            schedules: BTreeMap::new(),
            store,
            payload_bytes: 0,
        };
        for schedule in snapshot.schedules {
            state.schedules.insert(schedule.def.name.clone(), schedule);
        }
        for record in snapshot.queues {
            state.queue_mut_or_create(&record.name).paused = record.paused;
        }
        for mut job in snapshot.jobs {
            // Leases are never stored, but a record written by another version might say so: such a job is ready.
            if job.state == JobState::Leased {
                let job = Arc::make_mut(&mut job);
                job.state = JobState::Ready;
                job.lease = None;
            }
            state.next_seq = state.next_seq.max(job.seq);
            state.front_seq = state.front_seq.min(job.seq);
            if job.state != JobState::Dead {
                if let Some(key) = job.unique_key() {
                    // Two live jobs can share a key when the first one's `unique_until` passed and a later job took
                    // the key over. The later job's claim always ends later (or never), so the longest claim is the
                    // holder; taking the first job loaded would hand the key back to an expired claim and let a
                    // duplicate in after every restart.
                    let claim_end = |j: &Job| j.unique_until().unwrap_or(TimestampMs::MAX);
                    let outlasted = state
                        .unique
                        .get(key)
                        .and_then(|id| state.jobs.get(id))
                        .is_some_and(|holder| claim_end(holder) >= claim_end(&job));
                    if !outlasted {
                        state.unique.insert(key.to_owned(), job.id);
                    }
                }
            }
            state.queue_mut_or_create(&job.queue);
            state.index(&job);
            state.jobs.insert(job.id, job);
        }
        state
    }

    fn queue_mut_or_create(&mut self, name: &QueueName) -> &mut Queue {
        let defaults = &self.config.queue_defaults;
        self.queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(defaults.clone()))
    }

    fn queue_mut(&mut self, name: &QueueName) -> &mut Queue {
        self.queue_mut_or_create(name)
    }

    /// Resolves a queue name for a request; unknown names fail unless `create` and auto-creation allow them.
    pub fn lookup_queue(&self, name: &str) -> Result<QueueName, SpoolError> {
        let name = QueueName::new(name)?;
        if self.queues.contains_key(&name) || self.config.auto_create_queues {
            Ok(name)
        } else {
            Err(SpoolError::new(
                ErrorCode::UnknownQueue,
                format!("queue {name} does not exist and auto-creation is off"),
            ))
        }
    }

    fn timer_of(job: &Job) -> Option<TimestampMs> {
        match job.state {
            // A job that expires before it is due goes at its expiry, releasing its unique key then, not at its run.
            JobState::Scheduled | JobState::Retry => match (job.run_at, job.expires_at) {
                (Some(run), Some(expiry)) => Some(run.min(expiry)),
                (run, _) => run,
            },
            JobState::Leased => job.lease.map(|l| l.expires_at),
            JobState::Ready => job.expires_at,
            JobState::Dead => None,
        }
    }

    /// Adds `job` to the indexes of its state. Every state change is `unindex`, change, `index`.
    fn index(&mut self, job: &Job) {
        if job.payload_loaded {
            self.payload_bytes += job.payload.len();
        }
        if let Some(due) = Self::timer_of(job) {
            self.timers.insert((due, job.id));
        }
        if job.state == JobState::Dead {
            self.dead.insert((job.dead_at().unwrap_or(0), job.id));
        }
        let queue = self.queue_mut(&job.queue);
        match job.state {
            JobState::Scheduled => queue.scheduled += 1,
            JobState::Ready => queue.ready.insert(job),
            JobState::Leased => queue.leased += 1,
            JobState::Retry => queue.retry += 1,
            JobState::Dead => queue.dead += 1,
        }
    }

    fn unindex(&mut self, job: &Job) {
        if job.payload_loaded {
            self.payload_bytes -= job.payload.len();
        }
        if let Some(due) = Self::timer_of(job) {
            self.timers.remove(&(due, job.id));
        }
        if job.state == JobState::Dead {
            self.dead.remove(&(job.dead_at().unwrap_or(0), job.id));
        }
        let queue = self.queue_mut(&job.queue);
        match job.state {
            JobState::Scheduled => queue.scheduled -= 1,
            JobState::Ready => queue.ready.remove(job),
            JobState::Leased => queue.leased -= 1,
            JobState::Retry => queue.retry -= 1,
            JobState::Dead => queue.dead -= 1,
        }
    }

    /// Takes a job out of every index and the map (to change or delete it).
    fn take(&mut self, id: &JobId) -> Option<Arc<Job>> {
        let job = self.jobs.remove(id)?;
        self.unindex(&job);
        Some(job)
    }

    /// Puts back a job [`State::take`] took, in the place its `seq` gives it, without noting it as newly ready.
    fn untake(&mut self, job: Arc<Job>) {
        self.index(&job);
        self.jobs.insert(job.id, job);
    }

    /// Puts a changed job back, noting a newly ready one.
    fn put(&mut self, job: Arc<Job>, fx: &mut Effects) {
        self.index(&job);
        if job.state == JobState::Ready {
            fx.readied.push(job.queue.clone());
        }
        self.jobs.insert(job.id, job);
    }

    fn release_unique(&mut self, job: &Job) {
        if let Some(key) = job.unique_key() {
            if self.unique.get(key) == Some(&job.id) {
                self.unique.remove(key);
            }
        }
    }

    /// Deletes a job for good (acked, cancelled, purged, expired).
    fn delete(&mut self, job: &Job, fx: &mut Effects) {
        self.release_unique(job);
        fx.writes.push(Mutation::DeleteJob(job.id));
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A sequence number at `end` of every line: the back (`Last`) or the front (`Next`).
    fn seq_at(&mut self, end: End) -> u64 {
        match end {
            End::Last => self.next_seq(),
            End::Next => {
                self.front_seq -= 1;
                self.front_seq
            }
        }
    }

    // ---- enqueue ----

    /// Validates and creates jobs; all or none (a batch with one bad job creates nothing).
    pub fn enqueue(
        &mut self,
        now: TimestampMs,
        batch: Vec<NewJob>,
        fx: &mut Effects,
    ) -> Result<Vec<Enqueued>, SpoolError> {
        if batch.len() > self.config.max_batch {
            return Err(SpoolError::new(
                ErrorCode::TooBig,
                format!(
                    "batch of {} jobs exceeds the limit of {}",
                    batch.len(),
                    self.config.max_batch
                ),
            ));
        }
        let mut prepared = Vec::with_capacity(batch.len());
        for (i, new) in batch.into_iter().enumerate() {
            let position = new.position;
            let job = self.prepare(now, new).map_err(|e| {
                if prepared.is_empty() && i == 0 {
                    e
                } else {
                    SpoolError::new(e.code, format!("job {i} of the batch: {}", e.message))
                }
            })?;
            prepared.push((job, position));
        }
        let mut out = Vec::with_capacity(prepared.len());
        for (mut job, position) in prepared {
            if let Some(existing) = self.holder_of_unique(now, &job) {
                out.push(Enqueued {
                    id: existing,
                    duplicate: true,
                });
                continue;
            }
            if !self.queues.contains_key(&job.queue) {
                self.queue_mut_or_create(&job.queue);
                let paused = self.queues[&job.queue].paused;
                fx.writes.push(Mutation::PutQueue(QueueRecord {
                    name: job.queue.clone(),
                    paused,
                }));
            }
            job.seq = self.seq_at(position);
            if let Some(key) = job.unique_key() {
                self.unique.insert(key.to_owned(), job.id);
            }
            self.queue_mut(&job.queue).counters.enqueued += 1;
            out.push(Enqueued {
                id: job.id,
                duplicate: false,
            });
            let job = Arc::new(job);
            fx.writes.push(Mutation::PutJob(job.clone()));
            self.put(job, fx);
        }
        Ok(out)
    }

    fn holder_of_unique(&self, now: TimestampMs, job: &Job) -> Option<JobId> {
        let holder = self.jobs.get(self.unique.get(job.unique_key()?)?)?;
        let held = holder.state != JobState::Dead && holder.unique_until().is_none_or(|until| until > now);
        held.then_some(holder.id)
    }

    pub(crate) fn prepare(&self, now: TimestampMs, new: NewJob) -> Result<Job, SpoolError> {
        let queue = self.lookup_queue(&new.queue)?;
        if new.payload.len() > self.config.max_payload_bytes {
            return Err(SpoolError::new(
                ErrorCode::TooBig,
                format!(
                    "payload of {} bytes exceeds the limit of {} bytes",
                    new.payload.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        let defaults = self
            .queues
            .get(&queue)
            .map(|q| &q.settings)
            .unwrap_or(&self.config.queue_defaults);
        let o = new.options;
        let lease_ms = o.lease_ms.unwrap_or(defaults.lease_ms);
        check_lease_ms(lease_ms)?;
        let max_attempts = o.max_attempts.unwrap_or(defaults.max_attempts);
        check_max_attempts(max_attempts)?;
        let retry = o.retry.unwrap_or(defaults.retry);
        retry.validate()?;
        if let Some(key) = &o.unique_key {
            if key.is_empty() || key.len() > 512 {
                return Err(SpoolError::invalid("unique key must be 1 to 512 bytes"));
            }
        }
        let run_at = o
            .run_at
            .or(o.delay_ms.map(|d| now.saturating_add(d)))
            .filter(|&t| t > now);
        let expires_at = o.expires_at.or(o.ttl_ms.map(|t| now.saturating_add(t)));
        if let Some(exp) = expires_at {
            if exp <= run_at.unwrap_or(now) {
                return Err(SpoolError::invalid(
                    "expiry must be after the time the job becomes ready",
                ));
            }
        }
        Ok(Job {
            id: JobId::generate(now),
            queue,
            payload: new.payload,
            payload_loaded: true,
            priority: o.priority.unwrap_or(Priority::DEFAULT),
            created_at: now,
            enqueued_at: now,
            seq: 0,
            run_at,
            expires_at,
            attempts: 0,
            max_attempts,
            lease_ms,
            retry,
            state: if run_at.is_some() {
                JobState::Scheduled
            } else {
                JobState::Ready
            },
            lease: None,
            extra: JobExtra {
                unique_until: o
                    .unique_key
                    .as_ref()
                    .and(o.unique_ttl_ms)
                    .map(|t| now.saturating_add(t)),
                unique_key: o.unique_key,
                headers: o.headers,
                last_error: None,
                dead_at: None,
            }
            .boxed(),
        })
    }

    // ---- reserve ----

    /// Takes up to `count` ready jobs from `queues` (names already resolved), from `end` of each queue's line. With
    /// `lease` each job is leased; without, it is deleted (a list pop: at-most-once).
    #[allow(clippy::too_many_arguments)]
    pub fn reserve(
        &mut self,
        now: TimestampMs,
        queues: &[QueueName],
        order: &ReserveOrder,
        end: End,
        lease: bool,
        count: usize,
        fx: &mut Effects,
    ) -> Result<Vec<Job>, SpoolError> {
        let mut out = Vec::new();
        let mut taken_bytes = 0;
        let mut rng = rand::thread_rng();
        while out.len() < count {
            let candidates = queues.iter().enumerate().filter(|(_, q)| self.has_ready(q));
            let picked = match order {
                ReserveOrder::Strict => candidates.map(|(_, q)| q).next(),
                ReserveOrder::Weighted(weights) => {
                    let weighted: Vec<(&QueueName, u32)> = candidates
                        .map(|(i, q)| (q, weights.get(i).copied().unwrap_or(1).max(1)))
                        .collect();
                    let total: u64 = weighted.iter().map(|(_, w)| u64::from(*w)).sum();
                    let mut roll = if total > 0 { rng.gen_range(0..total) } else { 0 };
                    weighted
                        .into_iter()
                        .find(|(_, w)| {
                            let hit = roll < u64::from(*w);
                            roll = roll.saturating_sub(u64::from(*w));
                            hit
                        })
                        .map(|(q, _)| q)
                }
            };
            let Some(queue) = picked.cloned() else { break };
            let ready = &self.queues[&queue].ready;
            let id = match end {
                End::Next => ready.first(),
                End::Last => ready.last(),
            }
            .expect("candidate queue has a ready job");
            let mut slot = self.take(&id).expect("ready job is in the map");
            if slot.expires_at.is_some_and(|e| e <= now) {
                self.queue_mut(&queue).counters.expired += 1;
                self.delete(&slot, fx);
                continue;
            }
            // Checked here, not only inside: `make_mut` copies a job the store's writer still holds.
            let loaded = match slot.payload_loaded {
                true => Ok(()),
                false => self.load_payload(Arc::make_mut(&mut slot)),
            };
            if let Err(e) = loaded {
                // Put back at the other end of its line, in memory only (its stored record is left as it is): at
                // this end it would fail every reservation from the queue and hold up the jobs behind it. What was
                // already taken is handed out (a pop's jobs are deleted already); the error reaches the caller when
                // it is all there is.
                tracing::error!(job = %slot.id, error = %e.message, "cannot read a job's payload back");
                let other_end = match end {
                    End::Next => End::Last,
                    End::Last => End::Next,
                };
                Arc::make_mut(&mut slot).seq = self.seq_at(other_end);
                // Not `put`: the job is not newly ready, and a reserver woken for it would only fail too.
                self.untake(slot);
                if out.is_empty() {
                    return Err(e);
                }
                break;
            }
            // An answer holds at most `max_reserve_bytes` of payloads (always one job): a client refuses a message
            // over its limit, and jobs leased into a refused answer would burn an attempt each without being run.
            if !out.is_empty() && taken_bytes + slot.payload.len() > self.config.max_reserve_bytes {
                self.untake(slot);
                break;
            }
            taken_bytes += slot.payload.len();
            if !lease {
                self.queue_mut(&queue).counters.acked += 1;
                self.delete(&slot, fx);
                out.push(Arc::unwrap_or_clone(slot));
                continue;
            }
            let job = Arc::make_mut(&mut slot);
            job.attempts += 1;
            job.state = JobState::Leased;
            job.lease = Some(Lease {
                token: rng.gen_range(1..=u64::MAX),
                expires_at: now.saturating_add(job.lease_ms),
            });
            out.push(job.clone());
            self.put(slot, fx);
        }
        Ok(out)
    }

    /// A copy of `job` with its payload, read back from the store if the job was loaded without it.
    pub fn with_payload(&self, job: &Job) -> Result<Job, SpoolError> {
        let mut job = job.clone();
        self.load_payload(&mut job)?;
        Ok(job)
    }

    /// Reads `job`'s payload back from the store unless it holds it already.
    fn load_payload(&self, job: &mut Job) -> Result<(), SpoolError> {
        if !job.payload_loaded {
            job.payload = self
                .store
                .read_payload(&job.id)
                .map_err(storage_error)?
                .ok_or_else(|| {
                    SpoolError::new(
                        ErrorCode::Storage,
                        format!("the payload of job {} is missing from the store", job.id),
                    )
                })?;
            job.payload_loaded = true;
        }
        Ok(())
    }

    fn leased(&mut self, id: &JobId, token: u64) -> Result<Arc<Job>, SpoolError> {
        let job = self
            .jobs
            .get(id)
            .ok_or_else(|| SpoolError::not_found(format!("no job {id}")))?;
        match job.lease {
            Some(lease) if job.state == JobState::Leased && lease.token == token => {}
            _ => return Err(wrong_lease(job, token)),
        }
        Ok(self.take(id).expect("job just seen"))
    }

    /// Completes a leased job.
    pub fn ack(&mut self, id: &JobId, token: u64, fx: &mut Effects) -> Result<(), SpoolError> {
        let job = self.leased(id, token)?;
        self.queue_mut(&job.queue).counters.acked += 1;
        self.delete(&job, fx);
        Ok(())
    }

    /// Fails a leased job: retry after backoff or a given delay, or dead-letter it.
    pub fn nack(
        &mut self,
        now: TimestampMs,
        id: &JobId,
        token: u64,
        action: NackAction,
        error: Option<String>,
        fx: &mut Effects,
    ) -> Result<(), SpoolError> {
        let job = self.leased(id, token)?;
        let reason = error.unwrap_or_else(|| "failed (nack)".into());
        self.fail(now, job, action, reason, fx);
        Ok(())
    }

    /// Sends a job that failed (nack or lease expiry) to retry or to the dead-letter queue.
    fn fail(&mut self, now: TimestampMs, mut slot: Arc<Job>, action: NackAction, reason: String, fx: &mut Effects) {
        let job = Arc::make_mut(&mut slot);
        self.queue_mut(&job.queue).counters.failed += 1;
        job.lease = None;
        let exhausted = job.attempts >= job.max_attempts;
        let delay_ms = match action {
            NackAction::Dead => None,
            _ if exhausted => None,
            NackAction::Retry => Some(
                job.retry
                    .delay(job.attempts, rand::thread_rng().gen::<f64>())
                    .as_millis() as u64,
            ),
            NackAction::RetryAfter(ms) => Some(ms),
        };
        match delay_ms {
            None => {
                let error = if exhausted && action != NackAction::Dead {
                    format!("{reason} (attempts exhausted: {}/{})", job.attempts, job.max_attempts)
                } else {
                    reason
                };
                job.update_extra(|e| {
                    e.last_error = Some(error);
                    e.dead_at = Some(now);
                });
                job.state = JobState::Dead;
                job.run_at = None;
                self.queue_mut(&job.queue).counters.dead_lettered += 1;
                self.release_unique(job);
            }
            Some(delay) => {
                job.update_extra(|e| e.last_error = Some(reason));
                job.seq = self.next_seq();
                job.enqueued_at = now;
                if delay == 0 {
                    job.state = JobState::Ready;
                    job.run_at = None;
                } else {
                    job.state = JobState::Retry;
                    job.run_at = Some(now.saturating_add(delay));
                }
            }
        }
        fx.writes.push(Mutation::PutJob(slot.clone()));
        self.put(slot, fx);
    }

    /// Extends a lease to `lease_ms` (or the job's lease length) from now; returns the new end.
    pub fn extend(
        &mut self,
        now: TimestampMs,
        id: &JobId,
        token: u64,
        lease_ms: Option<u64>,
        fx: &mut Effects,
    ) -> Result<TimestampMs, SpoolError> {
        if let Some(ms) = lease_ms {
            check_lease_ms(ms)?;
        }
        let mut slot = self.leased(id, token)?;
        let expires_at = now.saturating_add(lease_ms.unwrap_or(slot.lease_ms));
        Arc::make_mut(&mut slot).lease = Some(Lease { token, expires_at });
        self.put(slot, fx);
        Ok(expires_at)
    }

    /// Deletes a job that is not leased and not dead.
    pub fn cancel(&mut self, id: &JobId, fx: &mut Effects) -> Result<(), SpoolError> {
        let job = self
            .jobs
            .get(id)
            .ok_or_else(|| SpoolError::not_found(format!("no job {id}")))?;
        if matches!(job.state, JobState::Leased | JobState::Dead) {
            return Err(SpoolError::new(
                ErrorCode::WrongState,
                format!("job {id} is {} and cannot be cancelled", job.state.as_str()),
            ));
        }
        let job = self.take(id).expect("job just seen");
        self.delete(&job, fx);
        Ok(())
    }

    pub fn get(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id).map(|job| &**job)
    }

    // ---- timers ----

    /// The earliest pending timer.
    pub fn next_due(&self) -> Option<TimestampMs> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires every timer due at `now`: promotes scheduled and retrying jobs, expires stale ready jobs, and fails
    /// jobs whose lease ran out.
    pub fn run_due(&mut self, now: TimestampMs, fx: &mut Effects) {
        while let Some(&(due, id)) = self.timers.first() {
            if due > now {
                break;
            }
            let mut job = self.take(&id).expect("timer refers to a live job");
            match job.state {
                JobState::Scheduled | JobState::Retry if job.expires_at.is_some_and(|e| e <= now) => {
                    self.queue_mut(&job.queue).counters.expired += 1;
                    self.delete(&job, fx);
                }
                JobState::Scheduled | JobState::Retry => {
                    let promoted = Arc::make_mut(&mut job);
                    promoted.state = JobState::Ready;
                    promoted.run_at = None;
                    self.put(job, fx);
                }
                JobState::Ready => {
                    self.queue_mut(&job.queue).counters.expired += 1;
                    self.delete(&job, fx);
                }
                JobState::Leased => {
                    self.fail(now, job, NackAction::Retry, "lease expired".into(), fx);
                }
                JobState::Dead => unreachable!("dead jobs have no timer"),
            }
        }
    }

    // ---- queues ----

    pub fn queue_stats(&self, now: TimestampMs, name: &QueueName) -> Option<QueueStats> {
        let q = self.queues.get(name)?;
        let oldest = q
            .ready
            .oldest_candidates()
            .filter_map(|id| self.get(&id))
            .min_by_key(|job| job.enqueued_at);
        Some(QueueStats {
            name: name.clone(),
            paused: q.paused,
            ready: q.ready.len as u64,
            scheduled: q.scheduled as u64,
            leased: q.leased as u64,
            retry: q.retry as u64,
            dead: q.dead as u64,
            oldest_ready_age_ms: oldest.map(|j| now.saturating_sub(j.enqueued_at)),
            enqueued_total: q.counters.enqueued,
            acked_total: q.counters.acked,
            failed_total: q.counters.failed,
            expired_total: q.counters.expired,
            dead_lettered_total: q.counters.dead_lettered,
        })
    }

    /// Whether a reservation from `name` would find a job now (it has ready jobs and is not paused).
    pub fn has_ready(&self, name: &QueueName) -> bool {
        self.queues.get(name).is_some_and(|q| !q.paused && q.ready.len > 0)
    }

    pub fn queue_names(&self) -> Vec<QueueName> {
        self.queues.keys().cloned().collect()
    }

    /// A queue's ready jobs, without the rest of [`State::queue_stats`] (the reply to every Redis `LPUSH`).
    pub fn ready_len(&self, name: &str) -> Result<u64, SpoolError> {
        let name = QueueName::new(name)?;
        self.queues
            .get(&name)
            .map(|q| q.ready.len as u64)
            .ok_or_else(|| SpoolError::not_found(format!("no queue {name}")))
    }

    pub fn known_queue(&self, name: &str) -> Result<QueueName, SpoolError> {
        let name = QueueName::new(name)?;
        if self.queues.contains_key(&name) {
            Ok(name)
        } else {
            Err(SpoolError::not_found(format!("no queue {name}")))
        }
    }

    pub fn set_paused(&mut self, name: &QueueName, paused: bool, fx: &mut Effects) -> bool {
        let queue = self.queue_mut(name);
        let changed = queue.paused != paused;
        queue.paused = paused;
        if changed {
            fx.writes.push(Mutation::PutQueue(QueueRecord {
                name: name.clone(),
                paused,
            }));
            if !paused {
                fx.readied
                    .extend(std::iter::repeat_n(name.clone(), self.queues[name].ready.len));
            }
        }
        changed
    }

    /// Deletes every ready, scheduled and retrying job of the queue (leased jobs are in flight and stay).
    pub fn purge(&mut self, name: &QueueName, fx: &mut Effects) -> u64 {
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| &j.queue == name && matches!(j.state, JobState::Ready | JobState::Scheduled | JobState::Retry))
            .map(|j| j.id)
            .collect();
        for id in &ids {
            let job = self.take(id).expect("listed job");
            self.delete(&job, fx);
        }
        ids.len() as u64
    }

    /// Up to `limit` ready jobs of a queue in reservation order from `end`, skipping `offset` (a peek).
    pub fn peek_ready(&self, name: &QueueName, end: End, offset: usize, limit: usize) -> Vec<&Job> {
        self.queues
            .get(name)
            .map(|q| {
                q.ready
                    .iter(end)
                    .skip(offset)
                    .take(limit)
                    .filter_map(|id| self.get(&id))
                    .collect()
            })
            .unwrap_or_default()
    }

    // ---- dead letters ----

    fn dead_ids(&self, selector: &DeadSelector) -> Result<Vec<JobId>, SpoolError> {
        Ok(match selector {
            DeadSelector::One(id) => match self.jobs.get(id) {
                Some(job) if job.state == JobState::Dead => vec![*id],
                Some(job) => {
                    return Err(SpoolError::new(
                        ErrorCode::WrongState,
                        format!("job {id} is {}, not dead", job.state.as_str()),
                    ))
                }
                None => return Err(SpoolError::not_found(format!("no job {id}"))),
            },
            DeadSelector::Queue(queue) => self
                .dead
                .iter()
                .filter(|(_, id)| self.jobs.get(id).is_some_and(|j| &j.queue == queue))
                .map(|(_, id)| *id)
                .collect(),
            DeadSelector::All => self.dead.iter().map(|(_, id)| *id).collect(),
        })
    }

    /// Dead jobs in the order they died, optionally of one queue, after `after` (a cursor), at most `limit`.
    pub fn dead_list(&self, queue: Option<&QueueName>, after: Option<JobId>, limit: usize) -> Vec<&Job> {
        let start = after
            .and_then(|id| self.jobs.get(&id))
            .filter(|j| j.state == JobState::Dead)
            .map(|j| (j.dead_at().unwrap_or(0), j.id));
        let range = match start {
            Some(from) => self
                .dead
                .range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded)),
            None => self.dead.range(..),
        };
        range
            .filter_map(|(_, id)| self.get(id))
            .filter(|j| queue.is_none_or(|q| &j.queue == q))
            .take(limit)
            .collect()
    }

    /// Puts dead jobs back in their queues with a fresh set of attempts. A job whose unique key another live job
    /// took while it was dead gives the key up.
    pub fn dead_replay(
        &mut self,
        now: TimestampMs,
        selector: &DeadSelector,
        fx: &mut Effects,
    ) -> Result<u64, SpoolError> {
        let ids = self.dead_ids(selector)?;
        for id in &ids {
            let mut slot = self.take(id).expect("dead job listed");
            let job = Arc::make_mut(&mut slot);
            job.state = JobState::Ready;
            job.attempts = 0;
            job.update_extra(|e| e.dead_at = None);
            job.run_at = None;
            job.seq = self.next_seq();
            job.enqueued_at = now;
            // A replayed job must not outlive its original expiry check: it was explicitly asked for again.
            job.expires_at = None;
            // The job takes its key back unless another live job holds it by now; then it gives the key up (and the
            // write records that), since a restart could not tell which of two live holders of a key was the real one.
            if self.holder_of_unique(now, job).is_some() {
                job.update_extra(|e| {
                    e.unique_key = None;
                    e.unique_until = None;
                });
            } else if let Some(key) = job.unique_key() {
                self.unique.insert(key.to_owned(), job.id);
            }
            fx.writes.push(Mutation::PutJob(slot.clone()));
            self.put(slot, fx);
        }
        Ok(ids.len() as u64)
    }

    /// Deletes dead jobs for good.
    pub fn dead_purge(&mut self, selector: &DeadSelector, fx: &mut Effects) -> Result<u64, SpoolError> {
        let ids = self.dead_ids(selector)?;
        for id in &ids {
            let job = self.take(id).expect("dead job listed");
            self.delete(&job, fx);
        }
        Ok(ids.len() as u64)
    }

    pub fn max_batch(&self) -> usize {
        self.config.max_batch
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.jobs.len(), self.queues.len())
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Drops from memory, while more than the configured bytes of payloads are held, the payloads of `ids`: jobs
    /// whose records the store's checkpoint now holds whole, so that `read_payload` finds them (the payload of a job
    /// never changes, and only deleting the job removes its record).
    /// Returns whether more than the budget is still held.
    pub fn release_payloads(&mut self, ids: &[JobId]) -> bool {
        for id in ids {
            if self.payload_bytes <= self.config.payload_memory_bytes {
                return false;
            }
            // A job the store's writer still holds (a put not yet encoded) is left alone: changing it would copy it,
            // payload and all, only to drop the payload.
            if let Some(job) = self.jobs.get_mut(id).and_then(Arc::get_mut) {
                if job.payload_loaded {
                    self.payload_bytes -= job.payload.len();
                    job.payload = Vec::new();
                    job.payload_loaded = false;
                }
            }
        }
        self.payload_bytes > self.config.payload_memory_bytes
    }
}
