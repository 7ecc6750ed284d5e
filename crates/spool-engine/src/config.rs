//! The engine's settings: limits, queue defaults and the queues that exist out of the box.

use std::collections::BTreeMap;

use spool_core::{QueueName, RetryPolicy, SpoolError};

/// Per-queue defaults, applied to jobs that do not override them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Lease per reservation, in ms. Default 30 s.
    pub lease_ms: u64,
    /// Reservations before a job is dead-lettered. Default 25 (Sidekiq's and Faktory's choice).
    pub max_attempts: u32,
    /// Backoff between attempts. Default 1 s doubling to 1 h, full jitter.
    pub retry: RetryPolicy,
    /// Whether the queue starts paused when first created. Default false; once paused or resumed, the stored state
    /// wins over this setting.
    pub paused: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_attempts: 25,
            retry: RetryPolicy::default(),
            paused: false,
        }
    }
}

impl QueueSettings {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), SpoolError> {
        check_lease_ms(self.lease_ms)?;
        check_max_attempts(self.max_attempts)?;
        self.retry.validate()
    }
}

/// The longest lease, in ms (one day): a longer one is almost surely a unit mistake, and would hide lost workers.
pub const MAX_LEASE_MS: u64 = 86_400_000;

pub(crate) fn check_lease_ms(ms: u64) -> Result<(), SpoolError> {
    if ms == 0 || ms > MAX_LEASE_MS {
        return Err(SpoolError::invalid(format!(
            "lease must be between 1 ms and {MAX_LEASE_MS} ms (1 day), got {ms} ms"
        )));
    }
    Ok(())
}

pub(crate) fn check_max_attempts(n: u32) -> Result<(), SpoolError> {
    if n == 0 || n > 10_000 {
        return Err(SpoolError::invalid(format!(
            "max attempts must be between 1 and 10000, got {n}"
        )));
    }
    Ok(())
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest payload accepted, in bytes. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Most jobs in one enqueue batch or one reservation. Default 1,000.
    pub max_batch: usize,
    /// Most payload bytes one reservation hands out: it stops before the job that would pass this, but always hands
    /// out one. Default 3 MiB, under the 4 MiB a stock gRPC client accepts in one message.
    pub max_reserve_bytes: usize,
    /// Payload bytes kept in memory before the payloads of jobs already in the store's checkpoint are dropped (and
    /// read back when each job is handed out). Default 256 MiB.
    pub payload_memory_bytes: usize,
    /// Whether enqueueing to an unknown queue creates it (default) or fails with `NOQUEUE`.
    pub auto_create_queues: bool,
    /// Settings of queues created on first use.
    pub queue_defaults: QueueSettings,
    /// Queues that exist from the start, with their settings. Default: `critical`, `default`, `bulk`.
    pub queues: BTreeMap<QueueName, QueueSettings>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let queues = ["critical", "default", "bulk"]
            .into_iter()
            .map(|n| {
                (
                    QueueName::new(n).expect("built-in queue name"),
                    QueueSettings::default(),
                )
            })
            .collect();
        Self {
            max_payload_bytes: 1024 * 1024,
            max_batch: 1_000,
            max_reserve_bytes: 3 * 1024 * 1024,
            payload_memory_bytes: 256 * 1024 * 1024,
            auto_create_queues: true,
            queue_defaults: QueueSettings::default(),
            queues,
        }
    }
}
