//! Redis list commands over queues, so a plain Redis producer/consumer pair works unchanged: a queue is a list whose
//! right end (`RPOP`) is the job reserved next. `LPUSH` joins the back of the line and `RPUSH` jumps to its front,
//! so `LPUSH` + `RPOP` is FIFO exactly as in Redis.
//!
//! Pops delete the job before replying: at-most-once delivery, as with a Redis list. `JOB.FETCH` + `JOB.ACK` gives
//! at-least-once.

use std::time::Duration;

use bytes::Bytes;
use spool_core::{ErrorCode, QueueName};
use spool_engine::{Applied, Delivery, End, NewJob, ReserveRequest};

use super::queue::count;
use super::Ctx;
use crate::frame::Frame;
use crate::parse::{CommandError, Parse};

/// What a blocking pop with timeout 0 ("forever") waits: long enough to be forever in practice, short enough that
/// adding it to the current instant cannot overflow.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug)]
pub(crate) enum ListCmd {
    Push {
        queue: String,
        payloads: Vec<Bytes>,
        end: End,
    },
    Pop {
        queue: String,
        count: Option<usize>,
        end: End,
    },
    BlockingPop {
        queues: Vec<String>,
        timeout: Duration,
        end: End,
    },
    Len(String),
    Range {
        queue: String,
        start: i64,
        stop: i64,
    },
    Del(Vec<String>),
}

/// The engine end a Redis command's side of the list maps to: left is the back of the line, right the front.
fn end_of(name: &str) -> End {
    if name.starts_with('L') || name.starts_with("BL") {
        End::Last
    } else {
        End::Next
    }
}

impl ListCmd {
    pub fn parse(p: &mut Parse) -> Result<Self, CommandError> {
        let name = p.name().to_string();
        let cmd = match name.as_str() {
            "LPUSH" | "RPUSH" => ListCmd::Push {
                queue: p.next_string()?,
                payloads: p.rest(),
                end: end_of(&name),
            },
            "LPOP" | "RPOP" => {
                let queue = p.next_string()?;
                let count =
                    match p.remaining() {
                        0 => None,
                        _ => Some(
                            usize::try_from(p.next_u64().map_err(|_| {
                                CommandError::Other("ERR value is out of range, must be positive".into())
                            })?)
                            .map_err(|_| CommandError::NotInteger)?,
                        ),
                    };
                ListCmd::Pop {
                    queue,
                    count,
                    end: end_of(&name),
                }
            }
            "BLPOP" | "BRPOP" => {
                let mut words = p.rest();
                let timeout = words.pop().expect("arity guarantees a timeout");
                let mut timeout_parse = Parse::new(name.clone(), vec![timeout]);
                let timeout = timeout_parse.next_timeout_secs()?;
                let queues = words
                    .into_iter()
                    .map(|w| String::from_utf8_lossy(&w).into_owned())
                    .collect();
                ListCmd::BlockingPop {
                    queues,
                    timeout: if timeout.is_zero() { FOREVER } else { timeout },
                    end: end_of(&name),
                }
            }
            "LLEN" => ListCmd::Len(p.next_string()?),
            "LRANGE" => ListCmd::Range {
                queue: p.next_string()?,
                start: p.next_i64()?,
                stop: p.next_i64()?,
            },
            _ => ListCmd::Del(
                p.rest()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect(),
            ),
        };
        p.finish()?;
        Ok(cmd)
    }

    pub fn may_block(&self) -> bool {
        matches!(self, ListCmd::BlockingPop { .. })
    }

    /// Pushes and non-blocking pops: see [`super::Command::defers`].
    pub fn defers(&self) -> bool {
        matches!(self, ListCmd::Push { .. } | ListCmd::Pop { .. })
    }

    pub fn apply_deferred(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        let broker = &ctx.shared.broker;
        Ok(match self {
            ListCmd::Push { queue, payloads, end } => {
                let jobs = payloads
                    .into_iter()
                    .map(|payload| NewJob {
                        queue: queue.clone(),
                        payload: payload.to_vec(),
                        options: Default::default(),
                        position: end,
                    })
                    .collect();
                broker.apply_push(&queue, jobs)?.map(|len| Frame::Integer(count(len)))
            }
            ListCmd::Pop { count: Some(0), .. } => Applied::done(Frame::Array(Vec::new())),
            ListCmd::Pop { queue, count, end } => {
                let req = ReserveRequest {
                    delivery: Delivery::Pop,
                    end,
                    ..ReserveRequest::new(vec![queue], count.unwrap_or(1), Duration::ZERO)
                };
                broker.apply_pop(req)?.map(|mut jobs| match count {
                    None => jobs.pop().map_or(Frame::Null, |j| Frame::Bulk(j.payload.into())),
                    Some(_) if jobs.is_empty() => Frame::NullArray,
                    Some(_) => Frame::Array(jobs.into_iter().map(|j| Frame::Bulk(j.payload.into())).collect()),
                })
            }
            _ => unreachable!("{self:?} has no deferred form"),
        })
    }

    /// Blocking pops: see [`super::Command::apply_blocking`].
    pub async fn apply_blocking(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        let ListCmd::BlockingPop { queues, timeout, end } = self else {
            unreachable!("{self:?} does not block")
        };
        let req = ReserveRequest {
            delivery: Delivery::Pop,
            end,
            ..ReserveRequest::new(queues, 1, if ctx.may_block { timeout } else { Duration::ZERO })
        };
        Ok(ctx
            .shared
            .broker
            .reserve_applied(req)
            .await?
            .map(|mut jobs| match jobs.pop() {
                Some(job) => Frame::Array(vec![Frame::text(job.queue.as_str()), Frame::Bulk(job.payload.into())]),
                None => Frame::NullArray,
            }))
    }

    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        let broker = &ctx.shared.broker;
        match self {
            cmd @ (ListCmd::Push { .. } | ListCmd::Pop { .. }) => Ok(cmd.apply_deferred(ctx)?.durable().await?),
            cmd @ ListCmd::BlockingPop { .. } => Ok(cmd.apply_blocking(ctx).await?.durable().await?),
            ListCmd::Len(queue) => Ok(Frame::Integer(ready_len(ctx, &queue)?)),
            ListCmd::Range { queue, start, stop } => {
                let len = ready_len(ctx, &queue)?;
                // Redis's index rules: negatives count from the right, the range is inclusive and clamped.
                let start = if start < 0 { (len + start).max(0) } else { start };
                let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
                if start > stop || start >= len {
                    return Ok(Frame::Array(Vec::new()));
                }
                let jobs = broker.peek(&queue, End::Last, start as usize, (stop - start + 1) as usize)?;
                Ok(Frame::Array(
                    jobs.into_iter().map(|j| Frame::Bulk(j.payload.into())).collect(),
                ))
            }
            ListCmd::Del(queues) => {
                // A name that cannot be a queue is a key that does not exist, as in Redis: skipped up front, not met
                // half-way with the earlier queues already purged.
                let mut deleted = 0;
                for queue in queues.iter().filter(|q| QueueName::new(q).is_ok()) {
                    match broker.purge(queue).await {
                        Ok(n) => deleted += i64::from(n > 0),
                        Err(e) if e.code == ErrorCode::UnknownQueue => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Frame::Integer(deleted))
            }
        }
    }
}

/// A queue's ready jobs: its length as a list. An unknown queue is an empty list, as a missing key is in Redis.
fn ready_len(ctx: &Ctx<'_>, queue: &str) -> Result<i64, CommandError> {
    match ctx.shared.broker.ready_len(queue) {
        Ok(len) => Ok(count(len)),
        Err(e) if e.code == ErrorCode::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}
