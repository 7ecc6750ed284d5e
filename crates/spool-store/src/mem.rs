//! A store in memory: the model the sled store must agree with, and the backend of engine unit tests.
//! "Durable" here means "survives a simulated restart": a restart in tests builds a new engine on the same `MemStore`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spool_core::{Job, JobId, Schedule};

use crate::{CheckpointListener, Commit, ListenerSlot, Mutation, QueueRecord, Snapshot, Store, StoreError};

#[derive(Debug, Default)]
struct Inner {
    /// Jobs without their payloads, which live apart, so that engine tests restarting on a `MemStore` load jobs the
    /// way the daemon does.
    jobs: BTreeMap<JobId, Job>,
    payloads: BTreeMap<JobId, Vec<u8>>,
    queues: BTreeMap<String, QueueRecord>,
    schedules: BTreeMap<String, Schedule>,
}

/// An in-memory store; clones share the same contents.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    listener: ListenerSlot,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Does what a sled store's checkpoint tells its listener: every stored job's payload is readable now. (Here
    /// they always are; tests call this to drive the engine's side.)
    pub fn checkpoint(&self) {
        let ids: Vec<JobId> = self.lock().payloads.keys().copied().collect();
        self.listener.notify(&ids);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("mem store lock")
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let inner = self.lock();
        Ok(Snapshot {
            jobs: inner.jobs.values().cloned().map(Arc::new).collect(),
            queues: inner.queues.values().cloned().collect(),
            schedules: inner.schedules.values().cloned().collect(),
        })
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        let mut inner = self.lock();
        for mutation in batch {
            match mutation {
                Mutation::PutJob(job) => {
                    let mut job = Arc::unwrap_or_clone(job);
                    if job.payload_loaded {
                        inner.payloads.insert(job.id, std::mem::take(&mut job.payload));
                        job.payload_loaded = false;
                    }
                    inner.jobs.insert(job.id, job);
                }
                Mutation::DeleteJob(id) => {
                    inner.jobs.remove(&id);
                    inner.payloads.remove(&id);
                }
                Mutation::PutQueue(record) => {
                    inner.queues.insert(record.name.to_string(), record);
                }
                Mutation::PutSchedule(schedule) => {
                    inner.schedules.insert(schedule.def.name.clone(), *schedule);
                }
                Mutation::DeleteSchedule(name) => {
                    inner.schedules.remove(&name);
                }
            }
        }
        Commit::ready(Ok(()))
    }

    fn read_payload(&self, id: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().payloads.get(id).cloned())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn set_checkpoint_listener(&self, listener: CheckpointListener) {
        self.listener.set(listener);
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
