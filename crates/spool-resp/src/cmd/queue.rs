//! Queue and dead-letter administration: `QUEUE.STATS`, `QUEUE.LIST`, `QUEUE.PAUSE`, `QUEUE.RESUME`, `QUEUE.PURGE`,
//! `DEAD.LIST`, `DEAD.REPLAY`, `DEAD.PURGE`.

use spool_core::{JobId, QueueName};
use spool_engine::{DeadSelector, QueueStats};

use super::job::job_map;
use super::Ctx;
use crate::frame::Frame;
use crate::parse::{CommandError, Parse};

/// `DEAD.LIST` without `LIMIT` returns this many jobs.
const DEAD_LIST_DEFAULT: usize = 100;
/// The most `DEAD.LIST` returns at once; page with `AFTER`.
const DEAD_LIST_MAX: usize = 1_000;

#[derive(Debug)]
pub(crate) enum QueueCmd {
    Stats(String),
    List,
    Pause(String),
    Resume(String),
    Purge(String),
    DeadList {
        queue: Option<String>,
        after: Option<JobId>,
        limit: usize,
    },
    DeadReplay(DeadSelector),
    DeadPurge(DeadSelector),
}

fn parse_selector(p: &mut Parse) -> Result<DeadSelector, CommandError> {
    let first = p.next_string()?;
    Ok(match first.to_ascii_uppercase().as_str() {
        "ALL" => DeadSelector::All,
        "QUEUE" => DeadSelector::Queue(QueueName::new(&p.next_string()?)?),
        _ => DeadSelector::One(first.parse()?),
    })
}

impl QueueCmd {
    pub fn parse(p: &mut Parse) -> Result<Self, CommandError> {
        let cmd = match p.name() {
            "QUEUE.STATS" => QueueCmd::Stats(p.next_string()?),
            "QUEUE.LIST" => QueueCmd::List,
            "QUEUE.PAUSE" => QueueCmd::Pause(p.next_string()?),
            "QUEUE.RESUME" => QueueCmd::Resume(p.next_string()?),
            "QUEUE.PURGE" => QueueCmd::Purge(p.next_string()?),
            "DEAD.LIST" => {
                let (mut queue, mut after, mut limit) = (None, None, DEAD_LIST_DEFAULT);
                let mut first = true;
                while p.remaining() > 0 {
                    let word = p.next_string()?;
                    match word.to_ascii_uppercase().as_str() {
                        "AFTER" => after = Some(p.next_job_id()?),
                        "LIMIT" => {
                            limit = usize::try_from(p.next_u64()?).map_err(|_| CommandError::NotInteger)?;
                            if limit == 0 || limit > DEAD_LIST_MAX {
                                return Err(CommandError::syntax(format!("LIMIT must be 1 to {DEAD_LIST_MAX}")));
                            }
                        }
                        _ if first => queue = Some(word),
                        other => return Err(CommandError::syntax(format!("unknown option '{other}'"))),
                    }
                    first = false;
                }
                QueueCmd::DeadList { queue, after, limit }
            }
            "DEAD.REPLAY" => QueueCmd::DeadReplay(parse_selector(p)?),
            _ => QueueCmd::DeadPurge(parse_selector(p)?),
        };
        p.finish()?;
        Ok(cmd)
    }

    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        let broker = &ctx.shared.broker;
        Ok(match self {
            QueueCmd::Stats(queue) => stats_map(&broker.queue_stats(&queue)?),
            QueueCmd::List => Frame::Array(
                broker
                    .list_queues()
                    .iter()
                    .map(|q| Frame::text(q.name.as_str()))
                    .collect(),
            ),
            QueueCmd::Pause(queue) => Frame::Integer(i64::from(broker.pause(&queue).await?)),
            QueueCmd::Resume(queue) => Frame::Integer(i64::from(broker.resume(&queue).await?)),
            QueueCmd::Purge(queue) => Frame::Integer(count(broker.purge(&queue).await?)),
            QueueCmd::DeadList { queue, after, limit } => Frame::Array(
                broker
                    .dead_list(queue.as_deref(), after, limit)?
                    .iter()
                    .map(job_map)
                    .collect(),
            ),
            QueueCmd::DeadReplay(selector) => Frame::Integer(count(broker.dead_replay(selector).await?)),
            QueueCmd::DeadPurge(selector) => Frame::Integer(count(broker.dead_purge(selector).await?)),
        })
    }
}

pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn stats_map(s: &QueueStats) -> Frame {
    let n = |v: u64| Frame::Integer(count(v));
    Frame::Map(vec![
        (Frame::text("name"), Frame::text(s.name.as_str())),
        (Frame::text("paused"), Frame::Boolean(s.paused)),
        (Frame::text("ready"), n(s.ready)),
        (Frame::text("scheduled"), n(s.scheduled)),
        (Frame::text("leased"), n(s.leased)),
        (Frame::text("retry"), n(s.retry)),
        (Frame::text("dead"), n(s.dead)),
        (
            Frame::text("oldest_ready_age_ms"),
            s.oldest_ready_age_ms.map_or(Frame::Null, n),
        ),
        (Frame::text("enqueued_total"), n(s.enqueued_total)),
        (Frame::text("acked_total"), n(s.acked_total)),
        (Frame::text("failed_total"), n(s.failed_total)),
        (Frame::text("expired_total"), n(s.expired_total)),
        (Frame::text("dead_lettered_total"), n(s.dead_lettered_total)),
    ])
}
