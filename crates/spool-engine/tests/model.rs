//! Model-based test: random operation sequences, including restarts, applied both to the real broker and to a plain
//! model of the documented semantics; after every step the answers and every queue's counts must agree.
//!
//! The model is deliberately naive (maps and linear scans) so that it is obviously right where the engine is clever
//! (ready sets, timer indexes, dedup table). Randomness is kept out of what is compared: jobs carry a retry policy
//! without jitter, and lease tokens, which are random, are learnt from the broker's reserve answers. The model's
//! restart follows the design in `state.rs`: what survives is each job as of its last stored write (enqueue, nack,
//! lease expiry, replay) — reservations, extends and promotions are not written.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::T0;
use proptest::prelude::*;
use spool_core::{ErrorCode, Jitter, JobId, JobOptions, JobState, ManualClock, Priority, QueueName, RetryPolicy};
use spool_engine::{Broker, DeadSelector, End, EngineConfig, NackAction, NewJob, QueueSettings, ReserveRequest};
use spool_store::{MemStore, Store};

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const LEASE_MS: u64 = 1_000;
const POLICY: RetryPolicy = RetryPolicy {
    initial_ms: 300,
    multiplier: 2.0,
    max_ms: 2_000,
    jitter: Jitter::None,
};

/// The model's own reading of `POLICY`: the delay after failure number `failures`.
fn backoff_ms(failures: u32) -> u64 {
    (300u64 << (failures.saturating_sub(1).min(10))).min(2_000)
}

/// A job to enqueue, in terms both the broker and the model understand.
#[derive(Debug, Clone)]
struct Spec {
    queue: usize,
    priority: u8,
    delay_ms: Option<u64>,
    /// (key number, unique_ttl_ms)
    unique: Option<(u8, Option<u64>)>,
    max_attempts: u32,
    /// Join the front of the line (`End::Next`) instead of the back.
    front: bool,
}

impl Spec {
    fn unique_key(&self) -> Option<String> {
        self.unique.map(|(k, _)| format!("key{k}"))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Spec),
    Reserve {
        queues: Vec<usize>,
        count: usize,
    },
    /// `pick` chooses among every lease ever handed out, so stale tokens are exercised as often as live ones.
    Ack {
        pick: usize,
    },
    Nack {
        pick: usize,
        action: NackAction,
    },
    Extend {
        pick: usize,
        lease_ms: Option<u64>,
    },
    /// `pick` chooses among every job ever created.
    Cancel {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    ReplayAll,
    Pause {
        queue: usize,
    },
    Resume {
        queue: usize,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let enqueue = (
        0..3usize,
        0..3u8,
        prop::option::weighted(0.3, 0..2_500u64),
        prop::option::weighted(0.4, (0..3u8, prop::option::weighted(0.3, 0..3_000u64))),
        1..=3u32,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(queue, priority, delay_ms, unique, max_attempts, front)| {
            Op::Enqueue(Spec {
                queue,
                priority,
                delay_ms,
                unique,
                max_attempts,
                front,
            })
        });
    let reserve = (
        prop::sample::subsequence(vec![0usize, 1, 2], 1..=3).prop_shuffle(),
        1..=3usize,
    )
        .prop_map(|(queues, count)| Op::Reserve { queues, count });
    let action = prop_oneof![
        Just(NackAction::Retry),
        Just(NackAction::Dead),
        prop_oneof![Just(0u64), 1..2_500u64].prop_map(NackAction::RetryAfter),
    ];
    prop_oneof![
        5 => enqueue,
        4 => reserve,
        3 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => (any::<usize>(), action).prop_map(|(pick, action)| Op::Nack { pick, action }),
        1 => (any::<usize>(), prop::option::of(1..3_000u64)).prop_map(|(pick, lease_ms)| Op::Extend { pick, lease_ms }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        3 => prop_oneof![1..400u64, 400..3_000u64].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ReplayAll),
        1 => (0..3usize).prop_map(|queue| Op::Pause { queue }),
        1 => (0..3usize).prop_map(|queue| Op::Resume { queue }),
        1 => Just(Op::Restart),
    ]
}

/// A job as the model sees it.
#[derive(Debug, Clone)]
struct MJob {
    queue: usize,
    priority: u8,
    /// Line order within a priority level; only comparisons matter, so the model's numbers need not match the engine's.
    seq: i64,
    state: JobState,
    run_at: Option<u64>,
    attempts: u32,
    max_attempts: u32,
    /// (token, expires_at) while leased.
    lease: Option<(u64, u64)>,
    dead_at: Option<u64>,
    unique_key: Option<String>,
    unique_until: Option<u64>,
}

/// What the model expects an enqueue to do.
enum Expect {
    New,
    Duplicate(JobId),
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    jobs: BTreeMap<JobId, MJob>,
    /// The store: each job as of its last write.
    stored: BTreeMap<JobId, MJob>,
    /// Unique key → the job holding it.
    unique: HashMap<String, JobId>,
    /// Pausing is written when it changes, so this is both the live and the stored state.
    paused: [bool; 3],
    next_seq: i64,
    front_seq: i64,
}

impl Model {
    fn persist(&mut self, id: JobId) {
        self.stored.insert(id, self.jobs[&id].clone());
    }

    fn delete(&mut self, id: JobId) {
        let job = self.jobs.remove(&id).expect("deleting a live job");
        self.release_unique(id, &job);
        self.stored.remove(&id);
    }

    fn release_unique(&mut self, id: JobId, job: &MJob) {
        if let Some(key) = &job.unique_key {
            if self.unique.get(key) == Some(&id) {
                self.unique.remove(key);
            }
        }
    }

    /// The live job validly holding `key`, if any.
    fn holder(&self, key: &str) -> Option<JobId> {
        let id = *self.unique.get(key)?;
        let job = self.jobs.get(&id)?;
        (job.state != JobState::Dead && job.unique_until.is_none_or(|u| u > self.now)).then_some(id)
    }

    fn check_enqueue(&self, spec: &Spec) -> Expect {
        match spec.unique_key().and_then(|k| self.holder(&k)) {
            Some(holder) => Expect::Duplicate(holder),
            None => Expect::New,
        }
    }

    fn insert_new(&mut self, id: JobId, spec: &Spec) {
        let run_at = spec.delay_ms.filter(|&d| d > 0).map(|d| self.now + d);
        let seq = if spec.front {
            self.front_seq -= 1;
            self.front_seq
        } else {
            self.next_seq += 1;
            self.next_seq
        };
        let unique_key = spec.unique_key();
        if let Some(key) = &unique_key {
            self.unique.insert(key.clone(), id);
        }
        let job = MJob {
            queue: spec.queue,
            priority: spec.priority,
            seq,
            state: if run_at.is_some() {
                JobState::Scheduled
            } else {
                JobState::Ready
            },
            run_at,
            attempts: 0,
            max_attempts: spec.max_attempts,
            lease: None,
            dead_at: None,
            unique_key,
            unique_until: spec.unique.and_then(|(_, ttl)| ttl).map(|t| self.now + t),
        };
        self.jobs.insert(id, job);
        self.persist(id);
    }

    /// Leases up to `count` jobs: the first listed, unpaused queue with a ready job, its highest priority, then
    /// lowest sequence. Tokens are filled in from the broker's answer by `set_token`.
    fn reserve(&mut self, queues: &[usize], count: usize) -> Vec<JobId> {
        let mut out = Vec::new();
        while out.len() < count {
            let best = queues.iter().filter(|&&q| !self.paused[q]).find_map(|&q| {
                self.jobs
                    .iter()
                    .filter(|(_, j)| j.queue == q && j.state == JobState::Ready)
                    .min_by_key(|(_, j)| (std::cmp::Reverse(j.priority), j.seq))
                    .map(|(id, _)| *id)
            });
            let Some(id) = best else { break };
            let job = self.jobs.get_mut(&id).expect("chosen job");
            job.attempts += 1;
            job.state = JobState::Leased;
            job.lease = Some((0, self.now + LEASE_MS));
            out.push(id);
        }
        out
    }

    fn set_token(&mut self, id: JobId, token: u64) {
        let lease = self
            .jobs
            .get_mut(&id)
            .and_then(|j| j.lease.as_mut())
            .expect("just leased");
        lease.0 = token;
    }

    fn check_lease(&self, id: JobId, token: u64) -> Result<(), ErrorCode> {
        let job = self.jobs.get(&id).ok_or(ErrorCode::NotFound)?;
        match job.lease {
            Some((t, _)) if job.state == JobState::Leased && t == token => Ok(()),
            _ => Err(ErrorCode::LeaseLost),
        }
    }

    fn ack(&mut self, id: JobId, token: u64) -> Result<(), ErrorCode> {
        self.check_lease(id, token)?;
        self.delete(id);
        Ok(())
    }

    fn nack(&mut self, id: JobId, token: u64, action: NackAction) -> Result<(), ErrorCode> {
        self.check_lease(id, token)?;
        self.fail(id, action);
        Ok(())
    }

    fn fail(&mut self, id: JobId, action: NackAction) {
        let now = self.now;
        let mut job = self.jobs.remove(&id).expect("failing a live job");
        job.lease = None;
        let exhausted = job.attempts >= job.max_attempts;
        let delay = match action {
            NackAction::Dead => None,
            _ if exhausted => None,
            NackAction::Retry => Some(backoff_ms(job.attempts)),
            NackAction::RetryAfter(ms) => Some(ms),
        };
        match delay {
            None => {
                job.state = JobState::Dead;
                job.dead_at = Some(now);
                job.run_at = None;
                self.release_unique(id, &job);
            }
            Some(delay) => {
                self.next_seq += 1;
                job.seq = self.next_seq;
                (job.state, job.run_at) = if delay == 0 {
                    (JobState::Ready, None)
                } else {
                    (JobState::Retry, Some(now + delay))
                };
            }
        }
        self.jobs.insert(id, job);
        self.persist(id);
    }

    fn extend(&mut self, id: JobId, token: u64, lease_ms: Option<u64>) -> Result<u64, ErrorCode> {
        self.check_lease(id, token)?;
        let expires_at = self.now + lease_ms.unwrap_or(LEASE_MS);
        self.jobs.get_mut(&id).expect("leased job").lease = Some((token, expires_at));
        Ok(expires_at)
    }

    fn cancel(&mut self, id: JobId) -> Result<(), ErrorCode> {
        let job = self.jobs.get(&id).ok_or(ErrorCode::NotFound)?;
        if matches!(job.state, JobState::Leased | JobState::Dead) {
            return Err(ErrorCode::WrongState);
        }
        self.delete(id);
        Ok(())
    }

    /// Fires due timers in (due, id) order, as the engine's timer index does: promotions and lost leases.
    fn run_due(&mut self) {
        loop {
            let due = self
                .jobs
                .iter()
                .filter_map(|(id, j)| {
                    let at = match j.state {
                        JobState::Scheduled | JobState::Retry => j.run_at,
                        JobState::Leased => j.lease.map(|(_, e)| e),
                        JobState::Ready | JobState::Dead => None,
                    }?;
                    (at <= self.now).then_some((at, *id))
                })
                .min();
            let Some((_, id)) = due else { break };
            let job = self.jobs.get_mut(&id).expect("due job");
            if job.state == JobState::Leased {
                self.fail(id, NackAction::Retry);
            } else {
                job.state = JobState::Ready;
                job.run_at = None;
            }
        }
    }

    /// Replays every dead job, in the order they died, to the back of its queue's line with fresh attempts. A
    /// replayed job whose unique key another live job holds meanwhile gives the key up: two live holders of one key
    /// would make "which one dedups" depend on the order a restart happens to load them.
    fn replay_all(&mut self) -> u64 {
        let mut dead: Vec<(u64, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Dead)
            .map(|(id, j)| (j.dead_at.expect("dead job has dead_at"), *id))
            .collect();
        dead.sort();
        for &(_, id) in &dead {
            let key = self.jobs[&id].unique_key.clone();
            let keep_key = match &key {
                Some(k) => {
                    let free = self.holder(k).is_none();
                    if free {
                        self.unique.insert(k.clone(), id);
                    }
                    free
                }
                None => true,
            };
            self.next_seq += 1;
            let job = self.jobs.get_mut(&id).expect("dead job");
            job.state = JobState::Ready;
            job.attempts = 0;
            job.dead_at = None;
            job.run_at = None;
            job.seq = self.next_seq;
            if !keep_key {
                job.unique_key = None;
                job.unique_until = None;
            }
            self.persist(id);
        }
        dead.len() as u64
    }

    fn set_paused(&mut self, queue: usize, paused: bool) -> bool {
        let changed = self.paused[queue] != paused;
        self.paused[queue] = paused;
        changed
    }

    /// Memory is lost; the store is what remains. Nothing was stored while leased, so every job comes back as of its
    /// last write, and whatever fell due meanwhile fires as the broker opens. Unique holders are unchanged: every
    /// holder is a live job, and every live job is stored.
    fn restart(&mut self) {
        self.jobs = self.stored.clone();
        self.run_due();
    }

    fn counts(&self, queue: usize) -> (u64, u64, u64, u64, u64) {
        let mut c = (0, 0, 0, 0, 0);
        for j in self.jobs.values().filter(|j| j.queue == queue) {
            match j.state {
                JobState::Ready => c.0 += 1,
                JobState::Scheduled => c.1 += 1,
                JobState::Leased => c.2 += 1,
                JobState::Retry => c.3 += 1,
                JobState::Dead => c.4 += 1,
            }
        }
        c
    }
}

/// Where the broker under test keeps its jobs, and how it comes back after a restart.
enum Backend {
    /// A restart is a new broker on the same in-memory store.
    Mem(MemStore),
    /// A restart drops the broker and the store (syncing it), then opens the directory again.
    Sled(tempfile::TempDir),
}

impl Backend {
    fn open(&self, clock: &ManualClock) -> Broker {
        let store: Arc<dyn Store> = match self {
            Backend::Mem(store) => Arc::new(store.clone()),
            Backend::Sled(dir) => Arc::new(common::open_sled(dir.path())),
        };
        let config = EngineConfig {
            queues: QUEUES
                .iter()
                .map(|q| (QueueName::new(q).unwrap(), QueueSettings::default()))
                .collect(),
            ..EngineConfig::default()
        };
        Broker::open(store, Arc::new(clock.clone()), config).expect("open broker")
    }
}

async fn run(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(T0);
    let mut broker = backend.open(&clock);
    let mut model = Model {
        now: T0,
        ..Model::default()
    };
    // Every job ever created, and every lease ever handed out: ops pick from these, live or not.
    let mut known: Vec<JobId> = Vec::new();
    let mut leases: Vec<(JobId, u64)> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Enqueue(spec) => {
                let new = NewJob {
                    queue: QUEUES[spec.queue].into(),
                    payload: format!("job {step}").into_bytes(),
                    options: JobOptions {
                        priority: Some(Priority::new(spec.priority.into()).unwrap()),
                        delay_ms: spec.delay_ms,
                        max_attempts: Some(spec.max_attempts),
                        lease_ms: Some(LEASE_MS),
                        retry: Some(POLICY),
                        unique_key: spec.unique_key(),
                        unique_ttl_ms: spec.unique.and_then(|(_, ttl)| ttl),
                        ..JobOptions::default()
                    },
                    position: if spec.front { End::Next } else { End::Last },
                };
                let got = broker.enqueue(new).await.expect("a valid enqueue succeeds");
                match model.check_enqueue(&spec) {
                    Expect::Duplicate(holder) => {
                        prop_assert!(got.duplicate, "step {step}: expected a duplicate of {holder}");
                        prop_assert_eq!(got.id, holder, "step {}: wrong holder", step);
                    }
                    Expect::New => {
                        prop_assert!(!got.duplicate, "step {step}: unexpected duplicate of {}", got.id);
                        model.insert_new(got.id, &spec);
                        known.push(got.id);
                    }
                }
            }
            Op::Reserve { queues, count } => {
                let names = queues.iter().map(|&q| QUEUES[q].to_string()).collect();
                let got = broker
                    .reserve(ReserveRequest::new(names, count, Duration::ZERO))
                    .await
                    .expect("a valid reserve succeeds");
                let expected = model.reserve(&queues, count);
                let got_ids: Vec<JobId> = got.iter().map(|j| j.id).collect();
                prop_assert_eq!(&got_ids, &expected, "step {}: reserved different jobs", step);
                for job in got {
                    let token = job.lease.expect("leased job has a lease").token;
                    model.set_token(job.id, token);
                    leases.push((job.id, token));
                }
            }
            Op::Ack { pick } => {
                let Some(&(id, token)) = leases.get(pick % leases.len().max(1)) else {
                    continue;
                };
                let got = broker.ack(id, token).await.map_err(|e| e.code);
                prop_assert_eq!(got, model.ack(id, token), "step {}: ack {}", step, id);
            }
            Op::Nack { pick, action } => {
                let Some(&(id, token)) = leases.get(pick % leases.len().max(1)) else {
                    continue;
                };
                let got = broker.nack(id, token, action, None).await.map_err(|e| e.code);
                prop_assert_eq!(got, model.nack(id, token, action), "step {}: nack {}", step, id);
            }
            Op::Extend { pick, lease_ms } => {
                let Some(&(id, token)) = leases.get(pick % leases.len().max(1)) else {
                    continue;
                };
                let got = broker.extend(id, token, lease_ms).await.map_err(|e| e.code);
                prop_assert_eq!(got, model.extend(id, token, lease_ms), "step {}: extend {}", step, id);
            }
            Op::Cancel { pick } => {
                let Some(&id) = known.get(pick % known.len().max(1)) else {
                    continue;
                };
                let got = broker.cancel(id).await.map_err(|e| e.code);
                prop_assert_eq!(got, model.cancel(id), "step {}: cancel {}", step, id);
            }
            Op::Advance { ms } => {
                clock.advance(ms);
                model.now += ms;
                broker.tick();
                model.run_due();
            }
            Op::ReplayAll => {
                let got = broker.dead_replay(DeadSelector::All).await.expect("replay");
                prop_assert_eq!(got, model.replay_all(), "step {}: replayed", step);
            }
            Op::Pause { queue } => {
                let got = broker.pause(QUEUES[queue]).await.expect("pause");
                prop_assert_eq!(got, model.set_paused(queue, true), "step {}: pause", step);
            }
            Op::Resume { queue } => {
                let got = broker.resume(QUEUES[queue]).await.expect("resume");
                prop_assert_eq!(got, model.set_paused(queue, false), "step {}: resume", step);
            }
            Op::Restart => {
                drop(broker);
                broker = backend.open(&clock);
                model.restart();
            }
        }
        check(&broker, &model, &known, step)?;
    }
    Ok(())
}

/// Compares everything observable: each queue's counts and pause flag, and each job ever created.
fn check(broker: &Broker, model: &Model, known: &[JobId], step: usize) -> Result<(), TestCaseError> {
    for (q, name) in QUEUES.iter().enumerate() {
        let s = broker.queue_stats(name).expect("configured queue");
        prop_assert_eq!(
            (s.ready, s.scheduled, s.leased, s.retry, s.dead),
            model.counts(q),
            "step {}: counts of {}",
            step,
            name
        );
        prop_assert_eq!(s.paused, model.paused[q], "step {}: paused {}", step, name);
    }
    for id in known {
        let got = broker
            .get(*id)
            .ok()
            .map(|j| (j.state, j.attempts, j.run_at, j.lease.map(|l| l.expires_at)));
        let want = model
            .jobs
            .get(id)
            .map(|j| (j.state, j.attempts, j.run_at, j.lease.map(|(_, e)| e)));
        prop_assert_eq!(got, want, "step {}: job {}", step, id);
    }
    Ok(())
}

fn block_on(f: impl std::future::Future<Output = Result<(), TestCaseError>>) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn broker_on_mem_store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..250)) {
        block_on(run(Backend::Mem(MemStore::new()), ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn broker_on_sled_store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..200)) {
        block_on(run(Backend::Sled(tempfile::tempdir().expect("temp dir")), ops))?;
    }
}
