//! A typed, async Rust client for Spool's gRPC API (`proto/spool/v1`): producers enqueue, workers reserve or open a
//! credit-based [`Consumer`] stream and settle jobs, operators inspect queues and the dead-letter queue and manage
//! schedules (periodic jobs).
//!
//! It wraps the generated tonic client and adds what every caller would otherwise write: the bearer token on each
//! call, durations as [`Duration`], and failures as a [`ClientError`] that carries the stable Spool [`ErrorCode`]
//! (`LEASELOST`, `NOTFOUND`, …) read from the `spool-error-code` metadata. It depends only on the public contract
//! (`spool-proto`), never on the engine, so it is exactly what a user outside this repository gets.

mod consumer;

use std::time::Duration;

use spool_core::ErrorCode;
use spool_proto::v1::spool_client::SpoolClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub use consumer::{Consumer, Event};
pub use spool_core::ErrorCode as SpoolErrorCode;
/// The wire types (`Job`, `NewJob`, `JobOptions`, `QueueStats`, …), re-exported so callers need no other crate.
pub use spool_proto::v1 as proto;
/// The gRPC status code in [`ClientError`].
pub use tonic::Code;

/// The broker address used when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (or the address is malformed).
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// The address tried.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The broker refused the call with a Spool error: branch on `code`.
    #[error("{code}: {message}")]
    Spool {
        /// The stable Spool code.
        code: ErrorCode,
        /// The gRPC status code it came with.
        status: Code,
        /// The broker's explanation.
        message: String,
    },
    /// A gRPC failure without a Spool code: UNAUTHENTICATED, a transport error, a message over the size limit.
    #[error("{status:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        status: Code,
        /// The explanation.
        message: String,
    },
}

impl ClientError {
    /// The stable Spool code, for errors that have one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Spool { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The gRPC status code, for errors the server (or the transport) reported.
    pub fn status(&self) -> Option<Code> {
        match self {
            ClientError::Spool { status, .. } | ClientError::Rpc { status, .. } => Some(*status),
            ClientError::Connect { .. } => None,
        }
    }
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        let code = s
            .metadata()
            .get(spool_proto::ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(spool_proto::error_code_from_str);
        match code {
            Some(code) => ClientError::Spool {
                code,
                status: s.code(),
                message: s.message().to_string(),
            },
            None => ClientError::Rpc {
                status: s.code(),
                message: s.message().to_string(),
            },
        }
    }
}

impl From<proto::ErrorDetail> for ClientError {
    fn from(e: proto::ErrorDetail) -> Self {
        match spool_proto::error_code_from_str(&e.code) {
            Some(code) => ClientError::Spool {
                status: spool_proto::grpc_code(code),
                code,
                message: e.message,
            },
            None => ClientError::Rpc {
                status: Code::Unknown,
                message: format!("{}: {}", e.code, e.message),
            },
        }
    }
}

/// What a failed job should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nack {
    /// Retry after the job's backoff.
    Retry,
    /// Retry after this delay.
    RetryAfter(Duration),
    /// Dead-letter now.
    Dead,
}

impl Nack {
    fn request(self, id: &str, token: u64, error: Option<String>) -> proto::NackRequest {
        let (action, delay_ms) = match self {
            Nack::Retry => (proto::NackAction::Retry, None),
            Nack::RetryAfter(d) => (proto::NackAction::Retry, Some(millis(d))),
            Nack::Dead => (proto::NackAction::Dead, None),
        };
        proto::NackRequest {
            id: id.to_string(),
            token,
            action: action.into(),
            delay_ms,
            error,
        }
    }
}

/// Which dead jobs a replay or purge applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadTarget {
    /// One job, by id.
    Job(String),
    /// Every dead job of a queue.
    Queue(String),
    /// Every dead job.
    All,
}

impl From<DeadTarget> for proto::DeadSelector {
    fn from(t: DeadTarget) -> Self {
        use proto::dead_selector::Target;
        proto::DeadSelector {
            target: Some(match t {
                DeadTarget::Job(id) => Target::Id(id),
                DeadTarget::Queue(q) => Target::Queue(q),
                DeadTarget::All => Target::All(true),
            }),
        }
    }
}

/// A job to enqueue on `queue` with default options; set fields of the returned message for more.
pub fn new_job(queue: impl Into<String>, payload: impl Into<Vec<u8>>) -> proto::NewJob {
    proto::NewJob {
        queue: queue.into(),
        payload: payload.into(),
        ..Default::default()
    }
}

/// A connection to one broker; cheap to clone (clones share the HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    rpc: SpoolClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

type Result<T> = std::result::Result<T, ClientError>;

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`; without a scheme, `http://` is meant), failing fast if
    /// it is unreachable.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client> {
        let mut endpoint = endpoint.into();
        // `127.0.0.1:50051`, as the daemon's own `grpc.listen` is written, means plain HTTP/2.
        if !endpoint.contains("://") {
            endpoint.insert_str(0, "http://");
        }
        let connect_error = |message: String| ClientError::Connect {
            endpoint: endpoint.clone(),
            message,
        };
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| connect_error(error_chain(&e)))?;
        Ok(Client {
            rpc: SpoolClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024),
            channel,
            authorization: None,
        })
    }

    /// Sends `authorization: Bearer <token>` on every call (an empty token sends nothing).
    pub fn with_token(mut self, token: &str) -> Result<Client> {
        self.authorization = if token.is_empty() {
            None
        } else {
            Some(format!("Bearer {token}").parse().map_err(|_| ClientError::Rpc {
                status: Code::InvalidArgument,
                message: "the token must be printable ASCII".into(),
            })?)
        };
        Ok(self)
    }

    /// The underlying channel, for other services on the same server (health, reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
    }

    /// Enqueues one job; returns its id (or, for a held unique key, the holder's id with `duplicate` set).
    pub async fn enqueue(&self, job: proto::NewJob) -> Result<proto::EnqueueResponse> {
        let request = self.request(proto::EnqueueRequest { job: Some(job) });
        Ok(self.rpc.clone().enqueue(request).await?.into_inner())
    }

    /// Enqueues jobs atomically; one result per job, in order.
    pub async fn enqueue_batch(&self, jobs: Vec<proto::NewJob>) -> Result<Vec<proto::EnqueueResponse>> {
        let request = self.request(proto::EnqueueBatchRequest { jobs });
        Ok(self.rpc.clone().enqueue_batch(request).await?.into_inner().results)
    }

    /// Leases up to `count` jobs from `queues` (strict order), waiting up to `timeout` for the first.
    pub async fn reserve(&self, queues: &[&str], count: u32, timeout: Duration) -> Result<Vec<proto::Job>> {
        self.reserve_with(proto::ReserveRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            weights: Vec::new(),
            count,
            timeout_ms: millis(timeout),
        })
        .await
    }

    /// Leases jobs as `request` says (weights, count, timeout).
    pub async fn reserve_with(&self, request: proto::ReserveRequest) -> Result<Vec<proto::Job>> {
        let request = self.request(request);
        Ok(self.rpc.clone().reserve(request).await?.into_inner().jobs)
    }

    /// Opens a consume stream on `queues` holding at most `credits` jobs at once.
    pub async fn consume(&self, queues: &[&str], credits: u32) -> Result<Consumer> {
        Consumer::open(self, queues, credits).await
    }

    /// Completes a leased job.
    pub async fn ack(&self, id: &str, token: u64) -> Result<()> {
        let request = self.request(proto::AckRequest {
            id: id.to_string(),
            token,
        });
        self.rpc.clone().ack(request).await?;
        Ok(())
    }

    /// Completes several leased jobs with one durable write; each gets its own outcome.
    pub async fn ack_batch(&self, acks: &[(&str, u64)]) -> Result<Vec<Result<()>>> {
        let request = self.request(proto::AckBatchRequest {
            acks: acks
                .iter()
                .map(|(id, token)| proto::AckRequest {
                    id: id.to_string(),
                    token: *token,
                })
                .collect(),
        });
        let results = self.rpc.clone().ack_batch(request).await?.into_inner().results;
        Ok(results
            .into_iter()
            .map(|r| r.error.map_or(Ok(()), |e| Err(e.into())))
            .collect())
    }

    /// Fails a leased job, recording `error` as its last error.
    pub async fn nack(&self, id: &str, token: u64, nack: Nack, error: Option<String>) -> Result<()> {
        let request = self.request(nack.request(id, token, error));
        self.rpc.clone().nack(request).await?;
        Ok(())
    }

    /// Extends a lease to `lease` from now (or the job's lease length); returns the new end, ms since epoch.
    pub async fn extend(&self, id: &str, token: u64, lease: Option<Duration>) -> Result<u64> {
        let request = self.request(proto::ExtendRequest {
            id: id.to_string(),
            token,
            lease_ms: lease.map(millis),
        });
        Ok(self.rpc.clone().extend(request).await?.into_inner().expires_at_ms)
    }

    /// Deletes a job that is not leased.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        let request = self.request(proto::CancelRequest { id: id.to_string() });
        self.rpc.clone().cancel(request).await?;
        Ok(())
    }

    /// One job with its payload.
    pub async fn get_job(&self, id: &str) -> Result<proto::Job> {
        let request = self.request(proto::GetJobRequest { id: id.to_string() });
        let job = self.rpc.clone().get_job(request).await?.into_inner().job;
        job.ok_or_else(|| missing("job"))
    }

    /// Up to `limit` ready jobs of `queue` in reservation order, after skipping `offset`.
    pub async fn peek_queue(&self, queue: &str, offset: u32, limit: u32) -> Result<Vec<proto::Job>> {
        let request = self.request(proto::PeekQueueRequest {
            queue: queue.to_string(),
            offset,
            limit,
        });
        Ok(self.rpc.clone().peek_queue(request).await?.into_inner().jobs)
    }

    /// Every queue with its stats.
    pub async fn list_queues(&self) -> Result<Vec<proto::QueueStats>> {
        let request = self.request(proto::ListQueuesRequest {});
        Ok(self.rpc.clone().list_queues(request).await?.into_inner().queues)
    }

    /// One queue's stats.
    pub async fn queue_stats(&self, queue: &str) -> Result<proto::QueueStats> {
        let request = self.request(proto::GetQueueStatsRequest {
            queue: queue.to_string(),
        });
        let stats = self.rpc.clone().get_queue_stats(request).await?.into_inner().stats;
        stats.ok_or_else(|| missing("stats"))
    }

    /// Pauses a queue; false if it already was.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        let request = self.request(proto::PauseQueueRequest {
            queue: queue.to_string(),
        });
        Ok(self.rpc.clone().pause_queue(request).await?.into_inner().changed)
    }

    /// Resumes a queue; false if it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        let request = self.request(proto::ResumeQueueRequest {
            queue: queue.to_string(),
        });
        Ok(self.rpc.clone().resume_queue(request).await?.into_inner().changed)
    }

    /// Deletes a queue's ready, scheduled and retrying jobs; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let request = self.request(proto::PurgeQueueRequest {
            queue: queue.to_string(),
        });
        Ok(self.rpc.clone().purge_queue(request).await?.into_inner().purged)
    }

    /// A page of dead jobs (of one queue, or all), after the job id `after`.
    pub async fn list_dead(&self, queue: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<proto::Job>> {
        let request = self.request(proto::ListDeadRequest {
            queue: queue.map(str::to_string),
            after: after.map(str::to_string),
            limit,
        });
        Ok(self.rpc.clone().list_dead(request).await?.into_inner().jobs)
    }

    /// Replays dead jobs; returns how many.
    pub async fn replay_dead(&self, target: DeadTarget) -> Result<u64> {
        let request = self.request(proto::ReplayDeadRequest {
            selector: Some(target.into()),
        });
        Ok(self.rpc.clone().replay_dead(request).await?.into_inner().replayed)
    }

    /// Deletes dead jobs; returns how many.
    pub async fn purge_dead(&self, target: DeadTarget) -> Result<u64> {
        let request = self.request(proto::PurgeDeadRequest {
            selector: Some(target.into()),
        });
        Ok(self.rpc.clone().purge_dead(request).await?.into_inner().purged)
    }

    /// Creates a schedule (see `proto::ScheduleDef`); answers once it is durable.
    pub async fn create_schedule(&self, schedule: proto::ScheduleDef) -> Result<()> {
        let request = self.request(proto::CreateScheduleRequest {
            schedule: Some(schedule),
        });
        self.rpc.clone().create_schedule(request).await?;
        Ok(())
    }

    /// Replaces the definition of the schedule named `schedule.name`.
    pub async fn update_schedule(&self, schedule: proto::ScheduleDef) -> Result<()> {
        let request = self.request(proto::UpdateScheduleRequest {
            schedule: Some(schedule),
        });
        self.rpc.clone().update_schedule(request).await?;
        Ok(())
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        let request = self.request(proto::DeleteScheduleRequest { name: name.to_string() });
        self.rpc.clone().delete_schedule(request).await?;
        Ok(())
    }

    /// One schedule with its next tick and history, newest first.
    pub async fn get_schedule(&self, name: &str) -> Result<proto::Schedule> {
        let request = self.request(proto::GetScheduleRequest { name: name.to_string() });
        let schedule = self.rpc.clone().get_schedule(request).await?.into_inner().schedule;
        schedule.ok_or_else(|| missing("schedule"))
    }

    /// Every schedule, by name, without histories.
    pub async fn list_schedules(&self) -> Result<Vec<proto::Schedule>> {
        let request = self.request(proto::ListSchedulesRequest {});
        Ok(self.rpc.clone().list_schedules(request).await?.into_inner().schedules)
    }

    /// Enables a schedule; false if it already was.
    pub async fn enable_schedule(&self, name: &str) -> Result<bool> {
        let request = self.request(proto::EnableScheduleRequest { name: name.to_string() });
        Ok(self.rpc.clone().enable_schedule(request).await?.into_inner().changed)
    }

    /// Disables a schedule; false if it already was.
    pub async fn disable_schedule(&self, name: &str) -> Result<bool> {
        let request = self.request(proto::DisableScheduleRequest { name: name.to_string() });
        Ok(self.rpc.clone().disable_schedule(request).await?.into_inner().changed)
    }

    /// Enqueues a schedule's job now, once; returns the job's id.
    pub async fn trigger_schedule(&self, name: &str) -> Result<String> {
        let request = self.request(proto::TriggerScheduleRequest { name: name.to_string() });
        Ok(self.rpc.clone().trigger_schedule(request).await?.into_inner().job_id)
    }

    /// Whether the server reports SERVING for `service` (`""`: the whole server) over `grpc.health.v1`.
    pub async fn is_serving(&self, service: &str) -> Result<bool> {
        let response = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    }
}

/// A duration in ms for the wire; one too long for a u64 becomes the largest, which the broker refuses as out of
/// range rather than taking a wrapped-around small value.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn missing(field: &str) -> ClientError {
    ClientError::Rpc {
        status: Code::Internal,
        message: format!("the server's reply has no {field}"),
    }
}

/// A transport error with its causes, since tonic's top-level message ("transport error") says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
