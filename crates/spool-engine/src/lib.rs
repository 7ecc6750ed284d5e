//! Spool's engine: the one async API that every door (RESP, gRPC, HTTP) calls, and the only place with business
//! logic. A [`Broker`] owns the in-memory state (ready sets, timers, leases, unique keys), writes every change through
//! a [`Store`], and answers a caller only once its change is as durable as the store's policy promises.
//!
//! Invariants: the state and the store see changes in the same order (mutations are submitted while the state lock is
//! held); an operation that reports success to a producer or an acking worker has had its write committed; time comes
//! only from the injected [`Clock`], so tests drive leases, delays and expiry by hand. This crate must never depend on
//! a protocol crate.

mod config;
mod schedules;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use spool_core::{
    Clock, ErrorCode, Job, JobId, QueueName, Schedule, ScheduleDef, ScheduleOrigin, SpoolError, TimestampMs,
};
use spool_store::{Commit, Store, StoreError};
use tokio::sync::{oneshot, Notify};

pub use config::{EngineConfig, QueueSettings, MAX_LEASE_MS};
pub use schedules::{FireOutcome, FiringInfo, PutMode, PutOutcome, RunOutcome, ScheduleInfo};
pub use state::{Enqueued, NewJob};

use state::{Effects, State};

/// What a failed job should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Retry after the job's backoff (dead-lettered if attempts are exhausted).
    Retry,
    /// Retry after this many ms (dead-lettered if attempts are exhausted).
    RetryAfter(u64),
    /// Dead-letter now, whatever the attempts left.
    Dead,
}

/// An end of a queue's line of ready jobs, in reservation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum End {
    /// The job reserved next (highest priority, oldest). Redis's right end for `RPOP`.
    Next,
    /// The job reserved last (lowest priority, newest). Redis's left end for `LPOP`.
    #[default]
    Last,
}

/// What reserve does with the jobs it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Lease them: the worker must ack, or they come back (at-least-once). The default.
    #[default]
    Lease,
    /// Delete them durably before returning (a Redis list pop: at-most-once, since a crash after the delete loses
    /// the job).
    Pop,
}

/// How reserve chooses among several queues.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReserveOrder {
    /// The first queue in the caller's list that has a ready job (default).
    #[default]
    Strict,
    /// A random non-empty queue, chosen with these weights (parallel to the queue list; missing weights count 1).
    Weighted(Vec<u32>),
}

/// The result of a write already applied to the broker's state, with the commit that makes it durable. The state
/// (and every other client) sees the write at once; whoever answers the client that asked for it must wait for
/// [`Applied::durable`] first, or "nothing lost" is broken.
#[derive(Debug)]
#[must_use = "a write's reply must wait for its commit"]
pub struct Applied<T> {
    value: T,
    /// The write's own commit (none when nothing was written).
    commit: Option<Commit>,
    /// An empty batch submitted after it, when the answer also depends on an earlier write that may still be in
    /// flight (a duplicate unique key's holder).
    barrier: Option<Commit>,
}

impl<T> Applied<T> {
    /// A result with no write to wait for.
    pub fn done(value: T) -> Self {
        Applied {
            value,
            commit: None,
            barrier: None,
        }
    }

    /// Waits until the write is durable as configured, then yields its result; a storage failure fails it.
    pub async fn durable(self) -> Result<T, SpoolError> {
        for commit in [self.commit, self.barrier].into_iter().flatten() {
            commit.await.map_err(storage_error)?;
        }
        Ok(self.value)
    }

    /// Transforms the result, keeping the commit it waits for.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Applied<U> {
        Applied {
            value: f(self.value),
            commit: self.commit,
            barrier: self.barrier,
        }
    }
}

/// A reservation request.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// Queues to take from.
    pub queues: Vec<String>,
    /// How to choose among them.
    pub order: ReserveOrder,
    /// Most jobs to return (at least 1).
    pub count: usize,
    /// How long to wait for a first job; zero returns at once.
    pub timeout: Duration,
    /// Lease (default) or pop.
    pub delivery: Delivery,
    /// Which end of each queue's line to take from (default: the next job).
    pub end: End,
}

impl ReserveRequest {
    /// A leasing reservation of up to `count` jobs from `queues` in strict order, waiting up to `timeout`.
    pub fn new(queues: Vec<String>, count: usize, timeout: Duration) -> Self {
        Self {
            queues,
            order: ReserveOrder::Strict,
            count,
            timeout,
            delivery: Delivery::Lease,
            end: End::Next,
        }
    }
}

/// Which dead jobs an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadSelector {
    /// One job, by id.
    One(JobId),
    /// Every dead job of a queue.
    Queue(QueueName),
    /// Every dead job.
    All,
}

/// A queue's counts and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub name: QueueName,
    /// Whether reservations are suspended.
    pub paused: bool,
    /// Jobs waiting to be reserved.
    pub ready: u64,
    /// Delayed jobs not yet due.
    pub scheduled: u64,
    /// Jobs reserved under a live lease.
    pub leased: u64,
    /// Failed jobs waiting out their backoff.
    pub retry: u64,
    /// Jobs in the dead-letter queue.
    pub dead: u64,
    /// How long the oldest ready job has waited, in ms.
    pub oldest_ready_age_ms: Option<u64>,
    /// Jobs enqueued since start.
    pub enqueued_total: u64,
    /// Jobs acked since start.
    pub acked_total: u64,
    /// Failures (nacks and lease expiries) since start.
    pub failed_total: u64,
    /// Jobs dropped unrun because they expired, since start.
    pub expired_total: u64,
    /// Jobs moved to the dead-letter queue since start.
    pub dead_lettered_total: u64,
}

/// A handle to the broker; cheap to clone, shared by every door.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<Locked>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Wakes the timer task when a timer earlier than the one it sleeps for is set.
    timer_changed: Notify,
    /// Wakes the scheduler when a schedule is created, changed, enabled or deleted.
    schedules_changed: Notify,
    shutting_down: AtomicBool,
    shutdown: Notify,
    /// Jobs the store's checkpoints reported, for the timer task to release their payloads (see
    /// `State::release_payloads`). The store's listener holds this and not the broker, so that a checkpoint never
    /// holds the last reference to the broker (and so to the store whose thread it runs on).
    checkpointed: Arc<Checkpointed>,
}

#[derive(Debug, Default)]
struct Checkpointed {
    ids: Mutex<Vec<JobId>>,
    wake: Notify,
}

impl Checkpointed {
    /// At most this many ids wait (16 MiB); past it a checkpoint's jobs keep their payloads in memory, which costs
    /// only memory, and only when nothing releases them (a broker without a timer task).
    const MAX_PENDING: usize = 1 << 20;

    fn push(&self, ids: &[JobId]) {
        let mut pending = self.ids.lock().expect("checkpointed ids lock");
        let room = Self::MAX_PENDING.saturating_sub(pending.len());
        pending.extend_from_slice(&ids[..ids.len().min(room)]);
        drop(pending);
        self.wake.notify_one();
    }
}

/// The state plus the reservers waiting for a job, under one lock so that "a job became ready" and "wake a waiter"
/// cannot race.
#[derive(Debug)]
struct Locked {
    state: State,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    queues: Vec<QueueName>,
    wake: oneshot::Sender<()>,
}

pub(crate) fn storage_error(e: StoreError) -> SpoolError {
    SpoolError::new(ErrorCode::Storage, e.to_string())
}

impl Broker {
    /// Loads the store and builds a broker over it. Spawns nothing; call [`Broker::run_timers`] in a task to have
    /// timers fire on their own (tests with a manual clock call [`Broker::tick`] instead).
    pub fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: EngineConfig) -> Result<Self, SpoolError> {
        for settings in config.queues.values().chain([&config.queue_defaults]) {
            settings.validate()?;
        }
        let snapshot = store.load().map_err(storage_error)?;
        let jobs = snapshot.jobs.len();
        let state = State::restore(config, snapshot, store.clone());
        tracing::info!(jobs, "broker state restored");
        let checkpointed = Arc::new(Checkpointed::default());
        store.set_checkpoint_listener(Box::new({
            let checkpointed = checkpointed.clone();
            move |ids| checkpointed.push(ids)
        }));
        let broker = Broker {
            inner: Arc::new(Inner {
                state: Mutex::new(Locked {
                    state,
                    waiters: Vec::new(),
                }),
                store,
                clock,
                timer_changed: Notify::new(),
                schedules_changed: Notify::new(),
                shutting_down: AtomicBool::new(false),
                shutdown: Notify::new(),
                checkpointed,
            }),
        };
        // Jobs that were due while the broker was down (delays, retries, expiries) are handled now, before any door
        // opens, so the first reserve sees them.
        broker.tick();
        Ok(broker)
    }

    fn now(&self) -> TimestampMs {
        self.inner.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding the lock would leave the state half-changed; poisoning is the right signal, and
        // continuing would risk acknowledging writes that never happened.
        self.inner.state.lock().expect("broker state lock poisoned")
    }

    /// Runs `op` on the state under the lock, after firing due timers, then submits its writes and wakes waiters —
    /// all before the lock is released, so the store sees writes in state order. Returns the op's result and the
    /// commit to await (if any write was made).
    fn apply<T>(&self, op: impl FnOnce(&mut State, TimestampMs, &mut Effects) -> T) -> (T, Option<Commit>) {
        self.apply_locked(|locked, now, fx| op(&mut locked.state, now, fx))
    }

    /// [`Broker::apply`] with access to the waiter list too (for a reserver that must register before unlocking).
    fn apply_locked<T>(&self, op: impl FnOnce(&mut Locked, TimestampMs, &mut Effects) -> T) -> (T, Option<Commit>) {
        let now = self.now();
        let mut locked = self.lock();
        let before = locked.state.next_due();
        let mut fx = Effects::default();
        locked.state.run_due(now, &mut fx);
        let out = op(&mut locked, now, &mut fx);
        let commit = (!fx.writes.is_empty()).then(|| self.inner.store.submit(std::mem::take(&mut fx.writes)));
        for queue in fx.readied {
            wake_one(&mut locked.waiters, &queue);
        }
        let after = locked.state.next_due();
        drop(locked);
        if after.is_some() && (before.is_none() || after < before) {
            self.inner.timer_changed.notify_one();
        }
        (out, commit)
    }

    /// Like [`Broker::apply`] for operations that change durable state: refuses during shutdown, and returns the
    /// result with the commit it must wait for.
    fn write_applied<T>(
        &self,
        op: impl FnOnce(&mut State, TimestampMs, &mut Effects) -> Result<T, SpoolError>,
    ) -> Result<Applied<T>, SpoolError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(SpoolError::new(ErrorCode::ShuttingDown, "the broker is shutting down"));
        }
        let (value, commit) = self.apply(op);
        Ok(Applied {
            value: value?,
            commit,
            barrier: None,
        })
    }

    /// [`Broker::write_applied`], answering only after the writes are committed.
    async fn write<T>(
        &self,
        op: impl FnOnce(&mut State, TimestampMs, &mut Effects) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        self.write_applied(op)?.durable().await
    }

    /// Enqueues one job; answers once it is durable.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, SpoolError> {
        let mut out = self.enqueue_batch(vec![job]).await?;
        Ok(out.pop().expect("one job in, one result out"))
    }

    /// Enqueues jobs atomically (all or none); answers once they are durable. A job whose unique key is held
    /// returns the holder's id with `duplicate` set — and that answer too waits until the holder is durable.
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, SpoolError> {
        self.apply_enqueue_batch(jobs)?.durable().await
    }

    /// [`Broker::enqueue_batch`] without the wait: the jobs are in the state (and may be handed out) at once, and
    /// the producer must not hear OK before [`Applied::durable`] says so. A door that pipelines uses this to put a
    /// client's whole pipeline into one group commit.
    pub fn apply_enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Applied<Vec<Enqueued>>, SpoolError> {
        if jobs.is_empty() {
            return Ok(Applied::done(Vec::new()));
        }
        let mut applied = self.write_applied(|state, now, fx| state.enqueue(now, jobs, fx))?;
        if applied.value.iter().any(|e| e.duplicate) {
            // The holder's enqueue may still be in flight. An empty batch commits after every batch before it,
            // including that one; the batch's own commit is still waited for too.
            applied.barrier = Some(self.inner.store.submit(Vec::new()));
        }
        Ok(applied)
    }

    /// Enqueues jobs (all to `queue`) like [`Broker::apply_enqueue_batch`] and returns the queue's ready length
    /// after them, read under the same lock: the reply of a Redis `LPUSH`.
    pub fn apply_push(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Applied<u64>, SpoolError> {
        self.write_applied(|state, now, fx| {
            state.enqueue(now, jobs, fx)?;
            state.ready_len(queue)
        })
    }

    /// Leases (or pops) up to `count` jobs from the queues, waiting up to `timeout` for the first one. Returns an
    /// empty list on timeout or shutdown. A pop's jobs are returned once their deletion is durable.
    pub async fn reserve(&self, req: ReserveRequest) -> Result<Vec<Job>, SpoolError> {
        self.reserve_applied(req).await?.durable().await
    }

    /// [`Broker::reserve`] without the wait for a pop's commit. Dropping the future while it waits for a job takes
    /// nothing; once it has returned, the jobs are taken, and a pop's exist nowhere else: a door that stops waiting
    /// for the client (it left, the server stops) must still hand them over, after [`Applied::durable`].
    pub async fn reserve_applied(&self, req: ReserveRequest) -> Result<Applied<Vec<Job>>, SpoolError> {
        let queues = Self::reserve_queues(&self.lock().state, &req)?;
        let lease = req.delivery == Delivery::Lease;
        // A timeout too long to add to the clock (a client's `BRPOP q 1e19`) waits without end.
        let deadline = tokio::time::Instant::now().checked_add(req.timeout);
        loop {
            if self.inner.shutting_down.load(Ordering::Acquire) {
                return Ok(Applied::done(Vec::new()));
            }
            let ((jobs, waiting), commit) = self.apply_locked(|locked, now, fx| {
                let jobs = locked
                    .state
                    .reserve(now, &queues, &req.order, req.end, lease, req.count, fx);
                // A wake-up names one queue, but a reserver woken for it may take from another of its queues (strict
                // order), or fewer jobs than are ready: whoever waits on a queue that still has jobs is woken too.
                // Not after a failure: the job that failed (a payload that cannot be read back) is still ready, and
                // every waiter woken for it would only fail in turn.
                if jobs.is_ok() {
                    wake_for_ready(locked, &queues);
                }
                // Checked under the lock that `shutdown` clears the waiters under, so none registers after it.
                if self.inner.shutting_down.load(Ordering::Acquire) {
                    return (jobs, None);
                }
                // Registering under the same lock that found nothing means no job can become ready unseen.
                let waiting = (jobs.as_ref().is_ok_and(Vec::is_empty) && !req.timeout.is_zero()).then(|| {
                    let (tx, rx) = oneshot::channel();
                    // Reservers that timed out or were cancelled leave closed waiters behind; drop them here so a
                    // queue that never gets a job does not collect them forever.
                    locked.waiters.retain(|w| !w.wake.is_closed());
                    locked.waiters.push(Waiter {
                        queues: queues.clone(),
                        wake: tx,
                    });
                    Woken {
                        broker: self,
                        queues: &queues,
                        rx,
                    }
                });
                (jobs, waiting)
            });
            let Some(mut woken) = waiting else {
                // Leases are not stored (see `state`): the writes here are a pop's deletes and expiries found on the
                // way. Only a pop must wait for them, since its jobs exist nowhere else once it answers.
                return jobs.map(|value| Applied {
                    value,
                    commit: commit.filter(|_| !lease),
                    barrier: None,
                });
            };
            let timed_out = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Woken because a job became ready in one of our queues (or shutdown): loop and try to take it.
                _ = &mut woken.rx => {}
                _ = timed_out => return Ok(Applied::done(Vec::new())),
            }
        }
    }

    /// Pops up to `req.count` jobs without waiting for one (`req.timeout` is ignored) or for the commit of their
    /// deletion (see [`Broker::apply_enqueue_batch`]): a popped job exists nowhere else, so its payload must not be
    /// handed over before [`Applied::durable`].
    pub fn apply_pop(&self, req: ReserveRequest) -> Result<Applied<Vec<Job>>, SpoolError> {
        // Checked and taken under one lock: this is the hot path of Redis list consumers.
        let (value, commit) = self.apply(|state, now, fx| {
            let queues = Self::reserve_queues(state, &req)?;
            if self.inner.shutting_down.load(Ordering::Acquire) {
                return Ok(Vec::new());
            }
            state.reserve(now, &queues, &req.order, req.end, false, req.count, fx)
        });
        Ok(Applied {
            value: value?,
            commit,
            barrier: None,
        })
    }

    /// Checks a reservation's queues, count and weights; returns the queues' names.
    fn reserve_queues(state: &State, req: &ReserveRequest) -> Result<Vec<QueueName>, SpoolError> {
        let queues = req
            .queues
            .iter()
            .map(|q| state.lookup_queue(q))
            .collect::<Result<Vec<_>, _>>()?;
        let max_batch = state.max_batch();
        if queues.is_empty() {
            return Err(SpoolError::invalid("reserve needs at least one queue"));
        }
        if req.count == 0 || req.count > max_batch {
            return Err(SpoolError::invalid(format!(
                "count must be between 1 and {max_batch}, got {}",
                req.count
            )));
        }
        if let ReserveOrder::Weighted(w) = &req.order {
            if w.len() != queues.len() {
                return Err(SpoolError::invalid(format!(
                    "{} weights given for {} queues",
                    w.len(),
                    queues.len()
                )));
            }
        }
        Ok(queues)
    }

    /// Completes a leased job; answers once the completion is durable, so an acked job never comes back.
    pub async fn ack(&self, id: JobId, token: u64) -> Result<(), SpoolError> {
        self.write(|state, _, fx| state.ack(&id, token, fx)).await
    }

    /// Completes many leased jobs with one commit; each gets its own result (a stale token fails only that job).
    pub async fn ack_many(&self, acks: &[(JobId, u64)]) -> Result<Vec<Result<(), SpoolError>>, SpoolError> {
        self.apply_ack_many(acks)?.durable().await
    }

    /// [`Broker::ack_many`] without the wait (see [`Broker::apply_enqueue_batch`]).
    pub fn apply_ack_many(&self, acks: &[(JobId, u64)]) -> Result<Applied<Vec<Result<(), SpoolError>>>, SpoolError> {
        self.write_applied(|state, _, fx| Ok(acks.iter().map(|(id, token)| state.ack(id, *token, fx)).collect()))
    }

    /// Fails a leased job (retry with backoff, retry after a delay, or dead-letter).
    pub async fn nack(
        &self,
        id: JobId,
        token: u64,
        action: NackAction,
        error: Option<String>,
    ) -> Result<(), SpoolError> {
        if let NackAction::RetryAfter(ms) = action {
            if ms > MAX_LEASE_MS * 365 {
                return Err(SpoolError::invalid(format!("retry delay of {ms} ms is too long")));
            }
        }
        self.write(|state, now, fx| state.nack(now, &id, token, action, error, fx))
            .await
    }

    /// Extends a lease (a worker's heartbeat) to `lease_ms` from now, or the job's lease length; returns the new
    /// end of the lease. Not written to the store: after a restart every lease is void anyway.
    pub async fn extend(&self, id: JobId, token: u64, lease_ms: Option<u64>) -> Result<TimestampMs, SpoolError> {
        self.write(|state, now, fx| state.extend(now, &id, token, lease_ms, fx))
            .await
    }

    /// Deletes a job that is not yet reserved.
    pub async fn cancel(&self, id: JobId) -> Result<(), SpoolError> {
        self.write(|state, _, fx| state.cancel(&id, fx)).await
    }

    /// A copy of a job (with its payload), or `NOTFOUND`.
    pub fn get(&self, id: JobId) -> Result<Job, SpoolError> {
        let (job, _) = self.apply(|state, _, _| state.get(&id).map(|job| state.with_payload(job)));
        job.unwrap_or_else(|| Err(SpoolError::not_found(format!("no job {id}"))))
    }

    /// A queue's ready jobs (a Redis list's length), or `NOTFOUND`.
    pub fn ready_len(&self, queue: &str) -> Result<u64, SpoolError> {
        self.apply(|state, _, _| state.ready_len(queue)).0
    }

    /// Stats of one queue.
    pub fn queue_stats(&self, queue: &str) -> Result<QueueStats, SpoolError> {
        let (stats, _) = self.apply(|state, now, _| {
            let name = state.known_queue(queue)?;
            Ok::<_, SpoolError>(state.queue_stats(now, &name).expect("known queue"))
        });
        stats
    }

    /// Stats of every queue, by name.
    pub fn list_queues(&self) -> Vec<QueueStats> {
        let (stats, _) = self.apply(|state, now, _| {
            state
                .queue_names()
                .iter()
                .filter_map(|q| state.queue_stats(now, q))
                .collect()
        });
        stats
    }

    /// Up to `limit` ready jobs of a queue in reservation order counted from `end`, after skipping `offset`;
    /// nothing changes.
    pub fn peek(&self, queue: &str, end: End, offset: usize, limit: usize) -> Result<Vec<Job>, SpoolError> {
        let (jobs, _) = self.apply(|state, _, _| {
            let name = state.lookup_queue(queue)?;
            state
                .peek_ready(&name, end, offset, limit)
                .into_iter()
                .map(|job| state.with_payload(job))
                .collect()
        });
        jobs
    }

    /// Suspends reservations from a queue (enqueues still land). Returns whether anything changed.
    pub async fn pause(&self, queue: &str) -> Result<bool, SpoolError> {
        self.set_paused(queue, true).await
    }

    /// Resumes a paused queue. Returns whether anything changed.
    pub async fn resume(&self, queue: &str) -> Result<bool, SpoolError> {
        self.set_paused(queue, false).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, SpoolError> {
        self.write(|state, _, fx| {
            let name = state.lookup_queue(queue)?;
            Ok(state.set_paused(&name, paused, fx))
        })
        .await
    }

    /// Deletes the queue's ready, scheduled and retrying jobs; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u64, SpoolError> {
        self.write(|state, _, fx| {
            let name = state.lookup_queue(queue)?;
            Ok(state.purge(&name, fx))
        })
        .await
    }

    /// Dead jobs in the order they died (optionally of one queue), after the cursor `after`, at most `limit`.
    pub fn dead_list(&self, queue: Option<&str>, after: Option<JobId>, limit: usize) -> Result<Vec<Job>, SpoolError> {
        let (jobs, _) = self.apply(|state, _, _| {
            let queue = queue.map(QueueName::new).transpose()?;
            state
                .dead_list(queue.as_ref(), after, limit)
                .into_iter()
                .map(|job| state.with_payload(job))
                .collect()
        });
        jobs
    }

    /// Puts dead jobs back in their queues with fresh attempts; returns how many.
    pub async fn dead_replay(&self, selector: DeadSelector) -> Result<u64, SpoolError> {
        self.write(|state, now, fx| state.dead_replay(now, &selector, fx)).await
    }

    /// Deletes dead jobs; returns how many.
    pub async fn dead_purge(&self, selector: DeadSelector) -> Result<u64, SpoolError> {
        self.write(|state, _, fx| state.dead_purge(&selector, fx)).await
    }

    // ---- schedules ----

    async fn schedule_write<T>(
        &self,
        op: impl FnOnce(&mut State, TimestampMs, &mut Effects) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        let out = self.write(op).await?;
        self.inner.schedules_changed.notify_one();
        Ok(out)
    }

    /// Creates or replaces a schedule (see [`PutMode`]); answers once it is durable. Checks the trigger, the
    /// policies, the target queue and the job options against this broker; errors name the field.
    pub async fn schedule_put(&self, def: ScheduleDef, mode: PutMode) -> Result<PutOutcome, SpoolError> {
        self.schedule_write(|state, now, fx| state.schedule_put(now, def, mode, fx))
            .await
    }

    /// Deletes a schedule. `by` is who asks: the API may not delete a schedule of the config file.
    pub async fn schedule_delete(&self, name: &str, by: ScheduleOrigin) -> Result<(), SpoolError> {
        self.schedule_write(|state, _, fx| state.schedule_delete(name, by, fx))
            .await
    }

    /// Enables or disables a schedule; returns whether anything changed. Ticks that fall while a schedule is
    /// disabled are never owed: enabling starts counting from now.
    pub async fn schedule_set_enabled(&self, name: &str, enabled: bool) -> Result<bool, SpoolError> {
        self.schedule_write(|state, now, fx| state.schedule_set_enabled(now, name, enabled, fx))
            .await
    }

    /// Fires one tick of a schedule: enqueues its job and records the tick as fired, in **one store batch**, and
    /// answers once both are durable. A tick at or before the stored progress does nothing
    /// ([`FireOutcome::AlreadyFired`]), so replays after a crash, a clock step or a second scheduler cannot double a
    /// run. `missed_before` is how many earlier ticks the catch-up policy dropped (recorded in the history).
    pub async fn schedule_fire(
        &self,
        name: &str,
        tick: TimestampMs,
        missed_before: u64,
    ) -> Result<FireOutcome, SpoolError> {
        self.write(|state, now, fx| state.schedule_fire(now, name, tick, missed_before, fx))
            .await
    }

    /// Records `count` missed ticks up to `through` without firing them (the catch-up policy dropped them).
    pub async fn schedule_miss(&self, name: &str, through: TimestampMs, count: u64) -> Result<bool, SpoolError> {
        self.write(|state, now, fx| state.schedule_miss(now, name, through, count, fx))
            .await
    }

    /// Enqueues a schedule's job now (trigger-now), whether or not it is enabled; its ticks are unaffected.
    pub async fn schedule_trigger(&self, name: &str) -> Result<JobId, SpoolError> {
        self.write(|state, now, fx| state.schedule_trigger(now, name, fx)).await
    }

    /// One schedule with its next tick and history (newest first, with each job's outcome), or `NOTFOUND`.
    pub fn schedule_get(&self, name: &str) -> Result<ScheduleInfo, SpoolError> {
        let locked = self.lock();
        let schedule = locked
            .state
            .schedules
            .get(name)
            .ok_or_else(|| SpoolError::not_found(format!("no schedule {name}")))?;
        Ok(locked.state.schedule_info(schedule))
    }

    /// Every schedule, by name, with next ticks and histories.
    pub fn schedule_list(&self) -> Vec<ScheduleInfo> {
        let locked = self.lock();
        locked
            .state
            .schedules
            .values()
            .map(|s| locked.state.schedule_info(s))
            .collect()
    }

    /// Every stored schedule (definition and progress), for the scheduler.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.lock().state.schedules.values().cloned().collect()
    }

    /// Resolves when a schedule was created, changed, enabled or deleted since the last call (the scheduler's
    /// cue to recompute its next wake-up).
    pub async fn schedules_changed(&self) {
        self.inner.schedules_changed.notified().await
    }

    /// Fires every timer that is due now (promotions, expiries, lost leases). The timer task calls this; so do
    /// tests that move a manual clock.
    pub fn tick(&self) {
        let (_, commit) = self.apply(|_, _, _| ());
        // Timer writes (a lost lease's retry, an expiry) answer no caller; they are ordered like every other write.
        drop(commit);
        self.release_checkpointed();
    }

    /// Drops the payloads of jobs the store's checkpoints reported, while over the memory budget
    /// (`EngineConfig::payload_memory_bytes`), a chunk per lock so that clients wait little.
    fn release_checkpointed(&self) {
        let ids = std::mem::take(&mut *self.inner.checkpointed.ids.lock().expect("checkpointed ids lock"));
        for chunk in ids.chunks(1_024) {
            if !self.lock().state.release_payloads(chunk) {
                break;
            }
        }
    }

    /// Total live jobs and queues (for logs and INFO).
    pub fn totals(&self) -> (usize, usize) {
        self.lock().state.counts()
    }

    /// Bytes of job payloads held in memory (for INFO): those of jobs received since start, up to the budget once
    /// their jobs are checkpointed, and those read back for delivery.
    pub fn payload_bytes_held(&self) -> usize {
        self.lock().state.payload_bytes()
    }

    /// Fires timers as they fall due until shutdown. Sleeps until the earliest timer, and wakes early when an
    /// earlier one is set; the sleep is capped so a wall-clock step is noticed within a second.
    pub async fn run_timers(&self) {
        loop {
            self.tick();
            let wait = {
                let next = self.lock().state.next_due();
                let now = self.now();
                next.map_or(1_000, |due| due.saturating_sub(now).clamp(1, 1_000))
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = self.inner.timer_changed.notified() => {}
                _ = self.inner.checkpointed.wake.notified() => {}
                _ = self.inner.shutdown.notified() => return,
            }
            if self.inner.shutting_down.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Begins shutdown: new writes are refused with `SHUTDOWN`, blocked reservers return empty, the timer task
    /// stops. Then flushes the store so everything acknowledged is on disk.
    pub fn shutdown(&self) -> Result<(), SpoolError> {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.shutdown.notify_waiters();
        for waiter in self.lock().waiters.drain(..) {
            let _ = waiter.wake.send(());
        }
        self.inner.store.flush().map_err(storage_error)
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }
}

/// A reserver's place among the waiters. Dropped after a wake-up arrived but before the reserver looked (its client
/// left, its deadline passed in the same instant), it hands the wake-up on: otherwise a job could sit ready while
/// another reserver of its queue sleeps.
struct Woken<'a> {
    broker: &'a Broker,
    queues: &'a [QueueName],
    rx: oneshot::Receiver<()>,
}

impl Drop for Woken<'_> {
    fn drop(&mut self) {
        if self.rx.try_recv().is_ok() {
            wake_for_ready(&mut self.broker.lock(), self.queues);
        }
    }
}

/// Wakes a waiter of each of `queues` that a reservation would find a job in now.
fn wake_for_ready(locked: &mut Locked, queues: &[QueueName]) {
    for queue in queues.iter().filter(|q| locked.state.has_ready(q)) {
        wake_one(&mut locked.waiters, queue);
    }
}

/// Wakes the longest-waiting reserver interested in `queue`. A waiter whose reserve was cancelled (its receiver is
/// gone) is skipped, so the wake-up reaches someone who will take the job.
fn wake_one(waiters: &mut Vec<Waiter>, queue: &QueueName) {
    while let Some(pos) = waiters.iter().position(|w| w.queues.contains(queue)) {
        let waiter = waiters.remove(pos);
        if waiter.wake.send(()).is_ok() {
            return;
        }
    }
}
