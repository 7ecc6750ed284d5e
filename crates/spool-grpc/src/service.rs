//! The unary RPCs: decode and validate, one broker call, encode.

use std::time::Duration;

use spool_core::{JobOptions, QueueName, ScheduleOrigin, SpoolError};
use spool_engine::{
    Broker, DeadSelector, End, NackAction, NewJob, PutMode, QueueStats, ReserveOrder, ReserveRequest, RunOutcome,
    ScheduleInfo,
};
use spool_proto::v1::{self, spool_server::Spool};
use spool_proto::{known_enum, parse_job_id, require_str, require_token};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::status::{invalid, shutting_down, status, stopped};
use crate::MAX_RESERVE_TIMEOUT_MS;

/// Page size of list calls that name none.
const DEFAULT_PAGE: u32 = 100;

/// The `spool.v1.Spool` service over a broker.
#[derive(Debug, Clone)]
pub struct SpoolService {
    pub(crate) broker: Broker,
    /// Turns true when shutdown begins: long polls and consume streams end with UNAVAILABLE.
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) max_batch: usize,
}

type Reply<T> = Result<Response<T>, Status>;

impl SpoolService {
    /// A service over `broker` that ends its waits when `stop` turns true.
    pub fn new(broker: Broker, stop: watch::Receiver<bool>, max_batch: usize) -> Self {
        Self {
            broker,
            stop,
            max_batch,
        }
    }

    fn page(&self, field: &str, limit: u32) -> Result<usize, Status> {
        let limit = if limit == 0 { DEFAULT_PAGE } else { limit } as usize;
        if limit > self.max_batch {
            return Err(invalid(format!(
                "{field} must be at most {}, got {limit}",
                self.max_batch
            )));
        }
        Ok(limit)
    }
}

/// Decodes one job to enqueue; `field` names it in errors.
pub(crate) fn new_job(field: &str, job: v1::NewJob) -> Result<NewJob, SpoolError> {
    require_str(&format!("{field}.queue"), &job.queue)?;
    let position = match known_enum::<v1::Position>(&format!("{field}.position"), job.position)? {
        v1::Position::Unspecified | v1::Position::Back => End::Last,
        v1::Position::Front => End::Next,
    };
    Ok(NewJob {
        queue: job.queue,
        payload: job.payload,
        options: job.options.map(JobOptions::try_from).transpose()?.unwrap_or_default(),
        position,
    })
}

/// Decodes queues plus optional weights into the engine's order.
pub(crate) fn reserve_order(queues: &[String], weights: Vec<u32>) -> Result<ReserveOrder, SpoolError> {
    if queues.is_empty() {
        return Err(SpoolError::invalid("queues: at least one queue is required"));
    }
    if weights.is_empty() {
        return Ok(ReserveOrder::Strict);
    }
    if weights.len() != queues.len() {
        return Err(SpoolError::invalid(format!(
            "weights: {} given for {} queues",
            weights.len(),
            queues.len()
        )));
    }
    Ok(ReserveOrder::Weighted(weights))
}

pub(crate) fn nack_action(req: &v1::NackRequest) -> Result<NackAction, SpoolError> {
    match (known_enum::<v1::NackAction>("action", req.action)?, req.delay_ms) {
        (v1::NackAction::Unspecified | v1::NackAction::Retry, None) => Ok(NackAction::Retry),
        (v1::NackAction::Unspecified | v1::NackAction::Retry, Some(ms)) => Ok(NackAction::RetryAfter(ms)),
        (v1::NackAction::Dead, None) => Ok(NackAction::Dead),
        (v1::NackAction::Dead, Some(_)) => Err(SpoolError::invalid("delay_ms cannot be combined with action DEAD")),
    }
}

fn dead_selector(selector: Option<v1::DeadSelector>) -> Result<DeadSelector, SpoolError> {
    use v1::dead_selector::Target;
    match selector.and_then(|s| s.target) {
        Some(Target::Id(id)) => Ok(DeadSelector::One(parse_job_id("selector.id", &id)?)),
        Some(Target::Queue(q)) => Ok(DeadSelector::Queue(QueueName::new(&q)?)),
        Some(Target::All(true)) => Ok(DeadSelector::All),
        Some(Target::All(false)) => Err(SpoolError::invalid("selector.all must be true when set")),
        None => Err(SpoolError::invalid("selector is required: one of id, queue or all")),
    }
}

pub(crate) fn queue_stats(s: QueueStats) -> v1::QueueStats {
    v1::QueueStats {
        name: s.name.to_string(),
        paused: s.paused,
        ready: s.ready,
        scheduled: s.scheduled,
        leased: s.leased,
        retry: s.retry,
        dead: s.dead,
        oldest_ready_age_ms: s.oldest_ready_age_ms,
        enqueued_total: s.enqueued_total,
        acked_total: s.acked_total,
        failed_total: s.failed_total,
        expired_total: s.expired_total,
        dead_lettered_total: s.dead_lettered_total,
    }
}

/// Decodes the definition of a create or update: callers of this door are [`ScheduleOrigin::Api`], which is what
/// keeps config-file schedules read-only here.
fn schedule_put(def: Option<v1::ScheduleDef>) -> Result<spool_core::ScheduleDef, Status> {
    let def = def.ok_or_else(|| invalid("schedule is required"))?;
    spool_proto::schedule_def("schedule", def, ScheduleOrigin::Api).map_err(status)
}

/// Encodes a schedule; with `with_history`, its firings with each job's outcome (as RESP's SCHED.GET).
fn schedule_info(info: &ScheduleInfo, with_history: bool) -> v1::Schedule {
    let mut out = spool_proto::schedule(&info.schedule, info.next_tick);
    if with_history {
        out.history = info
            .history
            .iter()
            .map(|entry| {
                let mut firing = v1::Firing::from(&entry.firing);
                match entry.outcome {
                    Some(RunOutcome::Live(state)) => firing.job_state = v1::JobState::from(state).into(),
                    Some(RunOutcome::Done) => firing.job_done = true,
                    None => {}
                }
                firing
            })
            .collect();
    }
    out
}

fn jobs(jobs: Vec<spool_core::Job>) -> Vec<v1::Job> {
    jobs.into_iter().map(v1::Job::from).collect()
}

#[tonic::async_trait]
impl Spool for SpoolService {
    async fn enqueue(&self, request: Request<v1::EnqueueRequest>) -> Reply<v1::EnqueueResponse> {
        let job = request.into_inner().job.ok_or_else(|| invalid("job is required"))?;
        let job = new_job("job", job).map_err(status)?;
        let out = self.broker.enqueue(job).await.map_err(status)?;
        Ok(Response::new(v1::EnqueueResponse {
            id: out.id.to_string(),
            duplicate: out.duplicate,
        }))
    }

    async fn enqueue_batch(&self, request: Request<v1::EnqueueBatchRequest>) -> Reply<v1::EnqueueBatchResponse> {
        let batch = request.into_inner().jobs;
        if batch.is_empty() {
            return Err(invalid("jobs: at least one job is required"));
        }
        let batch = batch
            .into_iter()
            .enumerate()
            .map(|(i, job)| new_job(&format!("jobs[{i}]"), job))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let out = self.broker.enqueue_batch(batch).await.map_err(status)?;
        Ok(Response::new(v1::EnqueueBatchResponse {
            results: out
                .into_iter()
                .map(|e| v1::EnqueueResponse {
                    id: e.id.to_string(),
                    duplicate: e.duplicate,
                })
                .collect(),
        }))
    }

    async fn reserve(&self, request: Request<v1::ReserveRequest>) -> Reply<v1::ReserveResponse> {
        let req = request.into_inner();
        if req.timeout_ms > MAX_RESERVE_TIMEOUT_MS {
            return Err(invalid(format!(
                "timeout_ms must be at most {MAX_RESERVE_TIMEOUT_MS}, got {}",
                req.timeout_ms
            )));
        }
        let order = reserve_order(&req.queues, req.weights).map_err(status)?;
        let mut reserve = ReserveRequest::new(
            req.queues,
            req.count.max(1) as usize,
            Duration::from_millis(req.timeout_ms),
        );
        reserve.order = order;
        let mut stop = self.stop.clone();
        tokio::select! {
            // A long poll must not hold shutdown up; the engine's reserve is cancel-safe (a waiting reserver holds
            // no job).
            _ = stopped(&mut stop) => Err(shutting_down()),
            out = self.broker.reserve(reserve) => Ok(Response::new(v1::ReserveResponse {
                jobs: jobs(out.map_err(status)?),
            })),
        }
    }

    type ConsumeStream = ReceiverStream<Result<v1::ConsumeResponse, Status>>;

    async fn consume(&self, request: Request<Streaming<v1::ConsumeRequest>>) -> Reply<Self::ConsumeStream> {
        Ok(Response::new(crate::consume::start(self.clone(), request.into_inner())))
    }

    async fn ack(&self, request: Request<v1::AckRequest>) -> Reply<v1::AckResponse> {
        let req = request.into_inner();
        let id = parse_job_id("id", &req.id).map_err(status)?;
        let token = require_token("token", req.token).map_err(status)?;
        self.broker.ack(id, token).await.map_err(status)?;
        Ok(Response::new(v1::AckResponse {}))
    }

    async fn ack_batch(&self, request: Request<v1::AckBatchRequest>) -> Reply<v1::AckBatchResponse> {
        let acks = request.into_inner().acks;
        if acks.is_empty() || acks.len() > self.max_batch {
            return Err(invalid(format!(
                "acks: between 1 and {} are required, got {}",
                self.max_batch,
                acks.len()
            )));
        }
        let acks = acks
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Ok((
                    parse_job_id(&format!("acks[{i}].id"), &a.id)?,
                    require_token(&format!("acks[{i}].token"), a.token)?,
                ))
            })
            .collect::<Result<Vec<_>, SpoolError>>()
            .map_err(status)?;
        let results = self.broker.ack_many(&acks).await.map_err(status)?;
        Ok(Response::new(v1::AckBatchResponse {
            results: results
                .iter()
                .map(|r| v1::AckResult {
                    error: r.as_ref().err().map(v1::ErrorDetail::from),
                })
                .collect(),
        }))
    }

    async fn nack(&self, request: Request<v1::NackRequest>) -> Reply<v1::NackResponse> {
        let req = request.into_inner();
        let id = parse_job_id("id", &req.id).map_err(status)?;
        let token = require_token("token", req.token).map_err(status)?;
        let action = nack_action(&req).map_err(status)?;
        self.broker.nack(id, token, action, req.error).await.map_err(status)?;
        Ok(Response::new(v1::NackResponse {}))
    }

    async fn extend(&self, request: Request<v1::ExtendRequest>) -> Reply<v1::ExtendResponse> {
        let req = request.into_inner();
        let id = parse_job_id("id", &req.id).map_err(status)?;
        let token = require_token("token", req.token).map_err(status)?;
        let expires_at_ms = self.broker.extend(id, token, req.lease_ms).await.map_err(status)?;
        Ok(Response::new(v1::ExtendResponse { expires_at_ms }))
    }

    async fn cancel(&self, request: Request<v1::CancelRequest>) -> Reply<v1::CancelResponse> {
        let id = parse_job_id("id", &request.into_inner().id).map_err(status)?;
        self.broker.cancel(id).await.map_err(status)?;
        Ok(Response::new(v1::CancelResponse {}))
    }

    async fn get_job(&self, request: Request<v1::GetJobRequest>) -> Reply<v1::GetJobResponse> {
        let id = parse_job_id("id", &request.into_inner().id).map_err(status)?;
        let job = self.broker.get(id).map_err(status)?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(v1::Job::from(job)),
        }))
    }

    async fn peek_queue(&self, request: Request<v1::PeekQueueRequest>) -> Reply<v1::PeekQueueResponse> {
        let req = request.into_inner();
        let queue = require_str("queue", &req.queue).map_err(status)?;
        let limit = self.page("limit", req.limit)?;
        let out = self
            .broker
            .peek(queue, End::Next, req.offset as usize, limit)
            .map_err(status)?;
        Ok(Response::new(v1::PeekQueueResponse { jobs: jobs(out) }))
    }

    async fn list_queues(&self, _: Request<v1::ListQueuesRequest>) -> Reply<v1::ListQueuesResponse> {
        Ok(Response::new(v1::ListQueuesResponse {
            queues: self.broker.list_queues().into_iter().map(queue_stats).collect(),
        }))
    }

    async fn get_queue_stats(&self, request: Request<v1::GetQueueStatsRequest>) -> Reply<v1::GetQueueStatsResponse> {
        let req = request.into_inner();
        let queue = require_str("queue", &req.queue).map_err(status)?;
        let stats = self.broker.queue_stats(queue).map_err(status)?;
        Ok(Response::new(v1::GetQueueStatsResponse {
            stats: Some(queue_stats(stats)),
        }))
    }

    async fn pause_queue(&self, request: Request<v1::PauseQueueRequest>) -> Reply<v1::PauseQueueResponse> {
        let req = request.into_inner();
        let queue = require_str("queue", &req.queue).map_err(status)?;
        let changed = self.broker.pause(queue).await.map_err(status)?;
        Ok(Response::new(v1::PauseQueueResponse { changed }))
    }

    async fn resume_queue(&self, request: Request<v1::ResumeQueueRequest>) -> Reply<v1::ResumeQueueResponse> {
        let req = request.into_inner();
        let queue = require_str("queue", &req.queue).map_err(status)?;
        let changed = self.broker.resume(queue).await.map_err(status)?;
        Ok(Response::new(v1::ResumeQueueResponse { changed }))
    }

    async fn purge_queue(&self, request: Request<v1::PurgeQueueRequest>) -> Reply<v1::PurgeQueueResponse> {
        let req = request.into_inner();
        let queue = require_str("queue", &req.queue).map_err(status)?;
        let purged = self.broker.purge(queue).await.map_err(status)?;
        Ok(Response::new(v1::PurgeQueueResponse { purged }))
    }

    async fn list_dead(&self, request: Request<v1::ListDeadRequest>) -> Reply<v1::ListDeadResponse> {
        let req = request.into_inner();
        let limit = self.page("limit", req.limit)?;
        let after = req
            .after
            .as_deref()
            .map(|a| parse_job_id("after", a))
            .transpose()
            .map_err(status)?;
        let out = self
            .broker
            .dead_list(req.queue.as_deref(), after, limit)
            .map_err(status)?;
        Ok(Response::new(v1::ListDeadResponse { jobs: jobs(out) }))
    }

    async fn replay_dead(&self, request: Request<v1::ReplayDeadRequest>) -> Reply<v1::ReplayDeadResponse> {
        let selector = dead_selector(request.into_inner().selector).map_err(status)?;
        let replayed = self.broker.dead_replay(selector).await.map_err(status)?;
        Ok(Response::new(v1::ReplayDeadResponse { replayed }))
    }

    async fn purge_dead(&self, request: Request<v1::PurgeDeadRequest>) -> Reply<v1::PurgeDeadResponse> {
        let selector = dead_selector(request.into_inner().selector).map_err(status)?;
        let purged = self.broker.dead_purge(selector).await.map_err(status)?;
        Ok(Response::new(v1::PurgeDeadResponse { purged }))
    }

    async fn create_schedule(&self, request: Request<v1::CreateScheduleRequest>) -> Reply<v1::CreateScheduleResponse> {
        let def = schedule_put(request.into_inner().schedule)?;
        self.broker.schedule_put(def, PutMode::Create).await.map_err(status)?;
        Ok(Response::new(v1::CreateScheduleResponse {}))
    }

    async fn update_schedule(&self, request: Request<v1::UpdateScheduleRequest>) -> Reply<v1::UpdateScheduleResponse> {
        let def = schedule_put(request.into_inner().schedule)?;
        self.broker.schedule_put(def, PutMode::Update).await.map_err(status)?;
        Ok(Response::new(v1::UpdateScheduleResponse {}))
    }

    async fn delete_schedule(&self, request: Request<v1::DeleteScheduleRequest>) -> Reply<v1::DeleteScheduleResponse> {
        let req = request.into_inner();
        let name = require_str("name", &req.name).map_err(status)?;
        self.broker
            .schedule_delete(name, ScheduleOrigin::Api)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeleteScheduleResponse {}))
    }

    async fn get_schedule(&self, request: Request<v1::GetScheduleRequest>) -> Reply<v1::GetScheduleResponse> {
        let req = request.into_inner();
        let name = require_str("name", &req.name).map_err(status)?;
        let info = self.broker.schedule_get(name).map_err(status)?;
        Ok(Response::new(v1::GetScheduleResponse {
            schedule: Some(schedule_info(&info, true)),
        }))
    }

    async fn list_schedules(&self, _: Request<v1::ListSchedulesRequest>) -> Reply<v1::ListSchedulesResponse> {
        Ok(Response::new(v1::ListSchedulesResponse {
            schedules: self
                .broker
                .schedule_list()
                .iter()
                .map(|info| schedule_info(info, false))
                .collect(),
        }))
    }

    async fn enable_schedule(&self, request: Request<v1::EnableScheduleRequest>) -> Reply<v1::EnableScheduleResponse> {
        let req = request.into_inner();
        let name = require_str("name", &req.name).map_err(status)?;
        let changed = self.broker.schedule_set_enabled(name, true).await.map_err(status)?;
        Ok(Response::new(v1::EnableScheduleResponse { changed }))
    }

    async fn disable_schedule(
        &self,
        request: Request<v1::DisableScheduleRequest>,
    ) -> Reply<v1::DisableScheduleResponse> {
        let req = request.into_inner();
        let name = require_str("name", &req.name).map_err(status)?;
        let changed = self.broker.schedule_set_enabled(name, false).await.map_err(status)?;
        Ok(Response::new(v1::DisableScheduleResponse { changed }))
    }

    async fn trigger_schedule(
        &self,
        request: Request<v1::TriggerScheduleRequest>,
    ) -> Reply<v1::TriggerScheduleResponse> {
        let req = request.into_inner();
        let name = require_str("name", &req.name).map_err(status)?;
        let id = self.broker.schedule_trigger(name).await.map_err(status)?;
        Ok(Response::new(v1::TriggerScheduleResponse { job_id: id.to_string() }))
    }
}
