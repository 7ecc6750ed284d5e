//! Native job commands: `JOB.PUSH`, `JOB.PUSHMANY`, `JOB.FETCH`, `JOB.ACK`, `JOB.NACK`, `JOB.EXTEND`, `JOB.CANCEL`,
//! `JOB.GET`. Fetch leases jobs, so a worker that acks after finishing gets at-least-once delivery.

use std::time::Duration;

use bytes::Bytes;
use spool_core::{Job, JobId, JobOptions, Priority};
use spool_engine::{Applied, End, NackAction, NewJob, ReserveOrder, ReserveRequest};

use super::Ctx;
use crate::frame::Frame;
use crate::parse::{CommandError, Parse};

#[derive(Debug)]
pub(crate) enum JobCmd {
    Push(NewJob),
    PushMany(Vec<NewJob>),
    Fetch(ReserveRequest),
    Ack(Vec<(JobId, u64)>),
    Nack {
        id: JobId,
        token: u64,
        action: NackAction,
        error: Option<String>,
    },
    Extend {
        id: JobId,
        token: u64,
        lease_ms: Option<u64>,
    },
    Cancel(JobId),
    Get(JobId),
}

/// Reads one enqueue option named `keyword` (already consumed) into `options`. Returns false for a word that is not
/// an option, so callers can give it their own meaning.
pub(crate) fn parse_option(keyword: &str, p: &mut Parse, options: &mut JobOptions) -> Result<bool, CommandError> {
    match keyword {
        "PRIORITY" => options.priority = Some(Priority::new(p.next_i64()?)?),
        "DELAY" | "AT" if options.delay_ms.is_some() || options.run_at.is_some() => {
            return Err(CommandError::syntax("DELAY and AT are exclusive"))
        }
        "DELAY" => options.delay_ms = Some(p.next_u64()?),
        "AT" => options.run_at = Some(p.next_u64()?),
        "MAXATTEMPTS" => {
            options.max_attempts = Some(u32::try_from(p.next_u64()?).map_err(|_| CommandError::NotInteger)?)
        }
        "LEASE" => options.lease_ms = Some(p.next_u64()?),
        "UNIQUE" => options.unique_key = Some(p.next_string()?),
        "UNIQUETTL" => options.unique_ttl_ms = Some(p.next_u64()?),
        "TTL" => options.ttl_ms = Some(p.next_u64()?),
        "HEADER" => {
            let key = p.next_string()?;
            options.headers.insert(key, p.next_string()?);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_options(p: &mut Parse) -> Result<JobOptions, CommandError> {
    let mut options = JobOptions::default();
    while p.remaining() > 0 {
        let keyword = p.next_keyword()?;
        if !parse_option(&keyword, p, &mut options)? {
            return Err(CommandError::syntax(format!("unknown option '{keyword}'")));
        }
    }
    if options.unique_ttl_ms.is_some() && options.unique_key.is_none() {
        return Err(CommandError::syntax("UNIQUETTL needs UNIQUE"));
    }
    Ok(options)
}

fn new_job(queue: &str, payload: Bytes, options: JobOptions) -> NewJob {
    NewJob {
        queue: queue.to_string(),
        payload: payload.to_vec(),
        options,
        position: End::Last,
    }
}

/// Words that end the queue list of `JOB.FETCH`.
const FETCH_OPTIONS: [&str; 3] = ["TIMEOUT", "COUNT", "WEIGHTS"];

fn parse_fetch(p: &mut Parse) -> Result<ReserveRequest, CommandError> {
    let mut queues = Vec::new();
    let mut keyword = None;
    while p.remaining() > 0 {
        let word = p.next_string()?;
        let upper = word.to_ascii_uppercase();
        if FETCH_OPTIONS.contains(&upper.as_str()) {
            keyword = Some(upper);
            break;
        }
        queues.push(word);
    }
    if queues.is_empty() {
        return Err(CommandError::syntax("JOB.FETCH needs at least one queue"));
    }
    let mut req = ReserveRequest::new(queues, 1, Duration::ZERO);
    loop {
        let word = match keyword.take() {
            Some(word) => word,
            None if p.remaining() > 0 => p.next_keyword()?,
            None => break,
        };
        match word.as_str() {
            "TIMEOUT" => req.timeout = p.next_ms()?,
            "COUNT" => req.count = usize::try_from(p.next_u64()?).map_err(|_| CommandError::NotInteger)?,
            "WEIGHTS" => {
                let weights = (0..req.queues.len())
                    .map(|_| u32::try_from(p.next_u64()?).map_err(|_| CommandError::NotInteger))
                    .collect::<Result<Vec<_>, _>>()?;
                req.order = ReserveOrder::Weighted(weights);
            }
            other => return Err(CommandError::syntax(format!("unknown option '{other}'"))),
        }
    }
    Ok(req)
}

impl JobCmd {
    pub fn parse(p: &mut Parse) -> Result<Self, CommandError> {
        let cmd = match p.name() {
            "JOB.PUSH" => {
                let queue = p.next_string()?;
                let payload = p.next_bytes()?;
                JobCmd::Push(new_job(&queue, payload, parse_options(p)?))
            }
            "JOB.PUSHMANY" => {
                let queue = p.next_string()?;
                let mut options = JobOptions::default();
                loop {
                    let keyword = p.next_keyword()?;
                    if keyword == "PAYLOADS" {
                        break;
                    }
                    if !parse_option(&keyword, p, &mut options)? {
                        return Err(CommandError::syntax(format!(
                            "unknown option '{keyword}' (payloads follow PAYLOADS)"
                        )));
                    }
                }
                let payloads = p.rest();
                if payloads.is_empty() {
                    return Err(CommandError::Arity("job.pushmany".into()));
                }
                JobCmd::PushMany(
                    payloads
                        .into_iter()
                        .map(|b| new_job(&queue, b, options.clone()))
                        .collect(),
                )
            }
            "JOB.FETCH" => JobCmd::Fetch(parse_fetch(p)?),
            "JOB.ACK" => {
                if !p.remaining().is_multiple_of(2) {
                    return Err(CommandError::Arity("job.ack".into()));
                }
                let mut acks = Vec::with_capacity(p.remaining() / 2);
                while p.remaining() > 0 {
                    acks.push((p.next_job_id()?, p.next_u64()?));
                }
                JobCmd::Ack(acks)
            }
            "JOB.NACK" => {
                let (id, token) = (p.next_job_id()?, p.next_u64()?);
                let (mut action, mut error) = (NackAction::Retry, None);
                while p.remaining() > 0 {
                    match p.next_keyword()?.as_str() {
                        "DELAY" if action == NackAction::Retry => action = NackAction::RetryAfter(p.next_u64()?),
                        "DEAD" if action == NackAction::Retry => action = NackAction::Dead,
                        "ERROR" => error = Some(p.next_string()?),
                        "DELAY" | "DEAD" => return Err(CommandError::syntax("DELAY and DEAD are exclusive")),
                        other => return Err(CommandError::syntax(format!("unknown option '{other}'"))),
                    }
                }
                JobCmd::Nack {
                    id,
                    token,
                    action,
                    error,
                }
            }
            "JOB.EXTEND" => {
                let (id, token) = (p.next_job_id()?, p.next_u64()?);
                let lease_ms = match p.remaining() {
                    0 => None,
                    _ => match p.next_keyword()?.as_str() {
                        "LEASE" => Some(p.next_u64()?),
                        other => return Err(CommandError::syntax(format!("unknown option '{other}'"))),
                    },
                };
                JobCmd::Extend { id, token, lease_ms }
            }
            "JOB.CANCEL" => JobCmd::Cancel(p.next_job_id()?),
            _ => JobCmd::Get(p.next_job_id()?),
        };
        p.finish()?;
        Ok(cmd)
    }

    pub fn may_block(&self) -> bool {
        matches!(self, JobCmd::Fetch(req) if !req.timeout.is_zero())
    }

    /// Pushes and acks: see [`super::Command::defers`].
    pub fn defers(&self) -> bool {
        matches!(self, JobCmd::Push(_) | JobCmd::PushMany(_) | JobCmd::Ack(_))
    }

    pub fn apply_deferred(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        let broker = &ctx.shared.broker;
        Ok(match self {
            JobCmd::Push(job) => broker
                .apply_enqueue_batch(vec![job])?
                .map(|out| Frame::text(out[0].id.to_string())),
            JobCmd::PushMany(jobs) => broker
                .apply_enqueue_batch(jobs)?
                .map(|out| Frame::Array(out.iter().map(|e| Frame::text(e.id.to_string())).collect())),
            // One id: a plain reply, or the error (a stale token) as the command's error.
            JobCmd::Ack(acks) if acks.len() == 1 => broker.apply_ack_many(&acks)?.map(|mut out| {
                out.pop()
                    .expect("one ack, one result")
                    .map_or_else(|e| CommandError::from(e).to_frame(), |()| Frame::ok())
            }),
            JobCmd::Ack(acks) => broker.apply_ack_many(&acks)?.map(|out| {
                Frame::Array(
                    out.into_iter()
                        .map(|r| r.map_or_else(|e| CommandError::from(e).to_frame(), |()| Frame::ok()))
                        .collect(),
                )
            }),
            _ => unreachable!("{self:?} has no deferred form"),
        })
    }

    /// A fetch: see [`super::Command::apply_blocking`].
    pub async fn apply_blocking(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        let JobCmd::Fetch(mut req) = self else {
            unreachable!("{self:?} does not block")
        };
        if !ctx.may_block {
            req.timeout = Duration::ZERO;
        }
        Ok(ctx
            .shared
            .broker
            .reserve_applied(req)
            .await?
            .map(|jobs| Frame::Array(jobs.into_iter().map(fetched).collect())))
    }

    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        let broker = &ctx.shared.broker;
        match self {
            cmd @ (JobCmd::Push(_) | JobCmd::PushMany(_) | JobCmd::Ack(_)) => {
                Ok(cmd.apply_deferred(ctx)?.durable().await?)
            }
            cmd @ JobCmd::Fetch(_) => Ok(cmd.apply_blocking(ctx).await?.durable().await?),
            JobCmd::Nack {
                id,
                token,
                action,
                error,
            } => {
                broker.nack(id, token, action, error).await?;
                Ok(Frame::ok())
            }
            JobCmd::Extend { id, token, lease_ms } => {
                Ok(Frame::Integer(int(broker.extend(id, token, lease_ms).await?)))
            }
            JobCmd::Cancel(id) => {
                broker.cancel(id).await?;
                Ok(Frame::ok())
            }
            JobCmd::Get(id) => Ok(job_map(&broker.get(id)?)),
        }
    }
}

/// Milliseconds as a RESP integer (which is signed; no real timestamp comes near the edge).
fn int(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn opt_int(ms: Option<u64>) -> Frame {
    ms.map_or(Frame::Null, |ms| Frame::Integer(int(ms)))
}

fn headers(job: &Job) -> Frame {
    Frame::Map(
        job.headers()
            .iter()
            .map(|(k, v)| (Frame::text(k.clone()), Frame::text(v.clone())))
            .collect(),
    )
}

/// A leased job as `JOB.FETCH` returns it: what a worker needs to run it and to ack it. The token is a string
/// because it is an unsigned 64-bit number, which RESP integers (signed) cannot carry. Takes the job by value so the
/// payload moves into the frame rather than being copied again on the fetch path.
fn fetched(job: Job) -> Frame {
    let headers = headers(&job);
    let lease = job.lease;
    Frame::Map(vec![
        (Frame::text("id"), Frame::text(job.id.to_string())),
        (Frame::text("queue"), Frame::text(job.queue.as_str())),
        (Frame::text("payload"), Frame::Bulk(Bytes::from(job.payload))),
        (Frame::text("attempt"), Frame::Integer(i64::from(job.attempts))),
        (
            Frame::text("token"),
            lease.map_or(Frame::Null, |l| Frame::text(l.token.to_string())),
        ),
        (Frame::text("lease_expires_at"), opt_int(lease.map(|l| l.expires_at))),
        (Frame::text("headers"), headers),
    ])
}

/// Everything about a job but its lease token (which would let anyone ack a job another worker holds).
pub(crate) fn job_map(job: &Job) -> Frame {
    let text_or_null = |s: Option<&str>| s.map_or(Frame::Null, Frame::text);
    Frame::Map(vec![
        (Frame::text("id"), Frame::text(job.id.to_string())),
        (Frame::text("queue"), Frame::text(job.queue.as_str())),
        (Frame::text("state"), Frame::text(job.state.as_str())),
        (Frame::text("payload"), Frame::Bulk(Bytes::from(job.payload.clone()))),
        (Frame::text("priority"), Frame::Integer(i64::from(job.priority.get()))),
        (Frame::text("attempts"), Frame::Integer(i64::from(job.attempts))),
        (Frame::text("max_attempts"), Frame::Integer(i64::from(job.max_attempts))),
        (Frame::text("created_at"), Frame::Integer(int(job.created_at))),
        (Frame::text("enqueued_at"), Frame::Integer(int(job.enqueued_at))),
        (Frame::text("run_at"), opt_int(job.run_at)),
        (Frame::text("expires_at"), opt_int(job.expires_at)),
        (
            Frame::text("lease_expires_at"),
            opt_int(job.lease.map(|l| l.expires_at)),
        ),
        (Frame::text("dead_at"), opt_int(job.dead_at())),
        (Frame::text("last_error"), text_or_null(job.last_error())),
        (Frame::text("unique_key"), text_or_null(job.unique_key())),
        (Frame::text("headers"), headers(job)),
    ])
}
