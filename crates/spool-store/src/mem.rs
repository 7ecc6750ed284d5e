//! A store in memory: the model the sled store must agree with, and the backend of engine unit tests.
//! "Durable" here means "survives a simulated restart": a restart in tests builds a new engine on the same `MemStore`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spool_core::{Job, JobId, Schedule};

use crate::{Commit, Mutation, QueueRecord, Snapshot, Store, StoreError};

#[derive(Debug, Default)]
struct Inner {
    jobs: BTreeMap<JobId, Job>,
    queues: BTreeMap<String, QueueRecord>,
    schedules: BTreeMap<String, Schedule>,
}

/// An in-memory store; clones share the same contents.
#[derive(Debug, Default, Clone)]
pub struct MemStore(Arc<Mutex<Inner>>);

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let inner = self.0.lock().expect("mem store lock");
        Ok(Snapshot {
            jobs: inner.jobs.values().cloned().collect(),
            queues: inner.queues.values().cloned().collect(),
            schedules: inner.schedules.values().cloned().collect(),
        })
    }

    fn submit(&self, batch: Vec<Mutation>) -> Commit {
        let mut inner = self.0.lock().expect("mem store lock");
        for mutation in batch {
            match mutation {
                Mutation::PutJob(job) => {
                    inner.jobs.insert(job.id, Arc::unwrap_or_clone(job));
                }
                Mutation::DeleteJob(id) => {
                    inner.jobs.remove(&id);
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

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
