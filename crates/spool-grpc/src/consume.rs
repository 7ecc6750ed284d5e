//! The streaming `Consume` RPC: one task per stream holds the worker's credits, leases as many jobs as the worker may
//! still hold (`Broker::reserve` with `count` = free credits), and settles the acks, nacks and extends that arrive on
//! the same stream. When the stream ends the task simply stops: jobs still leased go back when their lease runs out,
//! which the engine already does for any vanished worker.

use std::collections::HashSet;
use std::time::Duration;

use spool_core::{ErrorCode, JobId, SpoolError};
use spool_engine::{ReserveOrder, ReserveRequest};
use spool_proto::v1::{self, consume_request::Kind, consume_response};
use spool_proto::{parse_job_id, require_token};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use crate::service::{nack_action, reserve_order, SpoolService};
use crate::status::{invalid, shutting_down, status, stopped};

/// How long one reserve call waits before the loop goes round again. Any length works (new credits and inbound
/// messages interrupt it); a bounded one just keeps the engine's waiter list fresh.
const POLL: Duration = Duration::from_secs(30);

/// Outbound messages buffered per stream; beyond that, HTTP/2 flow control holds the task back.
const OUTBOUND: usize = 32;

type Outbound = mpsc::Sender<Result<v1::ConsumeResponse, Status>>;

/// Spawns the stream's task and returns the response stream it feeds.
pub(crate) fn start(
    service: SpoolService,
    inbound: Streaming<v1::ConsumeRequest>,
) -> ReceiverStream<Result<v1::ConsumeResponse, Status>> {
    let (tx, rx) = mpsc::channel(OUTBOUND);
    tokio::spawn(async move {
        if let Err(status) = run(service, inbound, &tx).await {
            // The worker may already be gone; nothing more to tell anyone.
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

/// A stream's session: the queues it reads and the jobs it holds.
struct Session {
    queues: Vec<String>,
    order: ReserveOrder,
    credits: usize,
    /// Deliveries on this stream not yet settled on it, by job and lease token: each takes one credit. By token too,
    /// because a job whose lease ran out can come back to the same stream under a new one, and settling the old
    /// delivery (`LEASELOST`) must not free the new one's credit.
    held: HashSet<(JobId, u64)>,
}

/// Runs until the worker closes its side (`Ok`), or until the stream must end with a status (`Err`: a message that
/// does not decode or is too large, a protocol error, an engine error on reserve, shutdown).
async fn run(service: SpoolService, mut inbound: Streaming<v1::ConsumeRequest>, out: &Outbound) -> Result<(), Status> {
    let mut stop = service.stop.clone();
    let first = tokio::select! {
        _ = stopped(&mut stop) => return Err(shutting_down()),
        first = inbound.next() => match first {
            Some(Ok(message)) => message,
            // A message that does not decode or is over the size limit: the worker hears why (and if the
            // connection broke instead, the status goes nowhere).
            Some(Err(status)) => return Err(status),
            None => return Ok(()),
        },
    };
    let Some(Kind::Start(start)) = first.kind else {
        return Err(invalid("the first message of a consume stream must be `start`"));
    };
    let order = reserve_order(&start.queues, start.weights).map_err(status)?;
    let mut session = Session {
        queues: start.queues,
        order,
        credits: 0,
        held: HashSet::new(),
    };
    session.grant(start.credits, service.max_batch).map_err(status)?;
    loop {
        let free = session.credits.saturating_sub(session.held.len());
        let reserve = async {
            if free == 0 {
                // Nothing may be delivered until the worker settles a job or grants credits.
                std::future::pending::<()>().await;
            }
            let mut req = ReserveRequest::new(session.queues.clone(), free, POLL);
            req.order = session.order.clone();
            service.broker.reserve(req).await
        };
        tokio::select! {
            // Shutdown first: a worker must hear UNAVAILABLE and reconnect elsewhere rather than get more jobs.
            biased;
            _ = stopped(&mut stop) => return Err(shutting_down()),
            // `Streaming` keeps its buffer across polls, so dropping this arm's future loses no message.
            message = inbound.next() => match message {
                Some(Ok(message)) => {
                    let reply = session.handle(&service, message).await;
                    if out.send(Ok(reply)).await.is_err() {
                        return Ok(());
                    }
                }
                // A bad message ends the stream with its status; either way, leases run out on their own.
                Some(Err(status)) => return Err(status),
                // The worker closed its side.
                None => return Ok(()),
            },
            // Cancel-safe: a leasing reserve either takes its jobs and returns within one poll, or holds none.
            jobs = reserve => {
                let jobs = jobs.map_err(status)?;
                if jobs.is_empty() && service.broker.is_shutting_down() {
                    return Err(shutting_down());
                }
                for job in jobs {
                    session.held.insert((job.id, job.lease.map_or(0, |l| l.token)));
                    let message = v1::ConsumeResponse {
                        kind: Some(consume_response::Kind::Job(v1::Job::from(job))),
                    };
                    if out.send(Ok(message)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Session {
    /// Gives a delivery's credit back once the worker no longer holds the job: acked or nacked, or no longer its own
    /// (`LEASELOST`, `NOTFOUND`). A refusal that leaves the job leased to it (`INVALID`, `STORAGE`, `SHUTDOWN`)
    /// keeps the credit taken, so the stream never holds more jobs than its credits.
    fn settled(&mut self, delivery: (JobId, u64), result: &Result<(), SpoolError>) {
        let gone = match result {
            Ok(()) => true,
            Err(e) => matches!(e.code, ErrorCode::LeaseLost | ErrorCode::NotFound),
        };
        if gone {
            self.held.remove(&delivery);
        }
    }

    fn grant(&mut self, credits: u32, max: usize) -> Result<(), SpoolError> {
        let total = self.credits + credits as usize;
        if credits == 0 || total > max {
            return Err(SpoolError::invalid(format!(
                "credits must be at least 1 and at most {max} in total, got {credits} more for {total}"
            )));
        }
        self.credits = total;
        Ok(())
    }

    /// Handles one worker message; every message gets a result echoing its request id.
    async fn handle(&mut self, service: &SpoolService, message: v1::ConsumeRequest) -> v1::ConsumeResponse {
        let mut result = v1::ConsumeResult {
            request_id: message.request_id,
            error: None,
            lease_expires_at_ms: None,
        };
        let outcome = match message.kind {
            None => Err(SpoolError::invalid("kind is required")),
            Some(Kind::Start(_)) => Err(SpoolError::invalid("`start` may be sent only once per stream")),
            Some(Kind::Credit(c)) => self.grant(c.credits, service.max_batch),
            Some(Kind::Ack(ack)) => match (parse_job_id("ack.id", &ack.id), require_token("ack.token", ack.token)) {
                (Ok(id), Ok(token)) => {
                    let result = service.broker.ack(id, token).await;
                    self.settled((id, token), &result);
                    result
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            Some(Kind::Nack(nack)) => match (
                parse_job_id("nack.id", &nack.id),
                require_token("nack.token", nack.token),
                nack_action(&nack),
            ) {
                (Ok(id), Ok(token), Ok(action)) => {
                    let result = service.broker.nack(id, token, action, nack.error).await;
                    self.settled((id, token), &result);
                    result
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            },
            Some(Kind::Extend(extend)) => {
                match (
                    parse_job_id("extend.id", &extend.id),
                    require_token("extend.token", extend.token),
                ) {
                    (Ok(id), Ok(token)) => service.broker.extend(id, token, extend.lease_ms).await.map(|until| {
                        result.lease_expires_at_ms = Some(until);
                    }),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
        };
        result.error = outcome.err().as_ref().map(v1::ErrorDetail::from);
        v1::ConsumeResponse {
            kind: Some(consume_response::Kind::Result(result)),
        }
    }
}
