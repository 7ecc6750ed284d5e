//! The command table and dispatch. Each family module parses its commands' arguments into a value, then `apply`s it:
//! one engine call, one reply. Growing the Redis surface (strings, hashes, pub/sub for Celery) means adding a family
//! module and its rows in [`TABLE`]; the connection layer does not change.

pub(crate) mod conn;
pub(crate) mod job;
pub(crate) mod list;
pub(crate) mod queue;
pub(crate) mod schedule;

use bytes::Bytes;
use spool_engine::Applied;

use crate::frame::Frame;
use crate::parse::{CommandError, Parse};
use crate::server::{Session, Shared};

/// Which module parses and applies a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Conn,
    Txn,
    Job,
    Queue,
    List,
    Schedule,
}

/// One row of the command table; `COMMAND` reports it in Redis's shape.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Upper-case name.
    pub name: &'static str,
    /// Redis convention: `n` exactly n words (name included), `-n` at least n.
    pub arity: i64,
    /// Redis-style flags (`write`, `readonly`, `fast`, `blocking`, `no-auth`, …).
    pub flags: &'static [&'static str],
    /// Position of the first key (queue) argument, 0 for none.
    pub first_key: i64,
    /// Position of the last key (-1: the last argument, -2: the one before it).
    pub last_key: i64,
    family: Family,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64),
    family: Family,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        family,
    }
}

const NO_KEYS: (i64, i64) = (0, 0);
const FIRST: (i64, i64) = (1, 1);

/// Every command the door understands.
pub(crate) const TABLE: &[Spec] = &[
    spec("PING", -1, &["fast", "no-auth"], NO_KEYS, Family::Conn),
    spec("ECHO", 2, &["fast"], NO_KEYS, Family::Conn),
    spec("HELLO", -1, &["fast", "no-auth"], NO_KEYS, Family::Conn),
    spec("AUTH", -2, &["fast", "no-auth"], NO_KEYS, Family::Conn),
    spec("SELECT", 2, &["fast"], NO_KEYS, Family::Conn),
    spec("CLIENT", -2, &["fast"], NO_KEYS, Family::Conn),
    spec("QUIT", -1, &["fast", "no-auth"], NO_KEYS, Family::Txn),
    spec("COMMAND", -1, &["loading"], NO_KEYS, Family::Conn),
    spec("INFO", -1, &["loading"], NO_KEYS, Family::Conn),
    spec("DBSIZE", 1, &["readonly", "fast"], NO_KEYS, Family::Conn),
    spec("TIME", 1, &["fast"], NO_KEYS, Family::Conn),
    spec("MULTI", 1, &["fast"], NO_KEYS, Family::Txn),
    spec("EXEC", 1, &[], NO_KEYS, Family::Txn),
    spec("DISCARD", 1, &["fast"], NO_KEYS, Family::Txn),
    spec("JOB.PUSH", -3, &["write"], FIRST, Family::Job),
    spec("JOB.PUSHMANY", -4, &["write"], FIRST, Family::Job),
    spec("JOB.FETCH", -2, &["write", "blocking"], (1, 1), Family::Job),
    spec("JOB.ACK", -3, &["write", "fast"], NO_KEYS, Family::Job),
    spec("JOB.NACK", -3, &["write", "fast"], NO_KEYS, Family::Job),
    spec("JOB.EXTEND", -3, &["write", "fast"], NO_KEYS, Family::Job),
    spec("JOB.CANCEL", 2, &["write", "fast"], NO_KEYS, Family::Job),
    spec("JOB.GET", 2, &["readonly", "fast"], NO_KEYS, Family::Job),
    spec("QUEUE.STATS", 2, &["readonly", "fast"], FIRST, Family::Queue),
    spec("QUEUE.LIST", 1, &["readonly"], NO_KEYS, Family::Queue),
    spec("QUEUE.PAUSE", 2, &["write", "fast"], FIRST, Family::Queue),
    spec("QUEUE.RESUME", 2, &["write", "fast"], FIRST, Family::Queue),
    spec("QUEUE.PURGE", 2, &["write"], FIRST, Family::Queue),
    spec("DEAD.LIST", -1, &["readonly"], NO_KEYS, Family::Queue),
    spec("DEAD.REPLAY", -2, &["write"], NO_KEYS, Family::Queue),
    spec("DEAD.PURGE", -2, &["write"], NO_KEYS, Family::Queue),
    spec("LPUSH", -3, &["write", "denyoom", "fast"], FIRST, Family::List),
    spec("RPUSH", -3, &["write", "denyoom", "fast"], FIRST, Family::List),
    spec("LPOP", -2, &["write", "fast"], FIRST, Family::List),
    spec("RPOP", -2, &["write", "fast"], FIRST, Family::List),
    spec("BLPOP", -3, &["write", "blocking"], (1, -2), Family::List),
    spec("BRPOP", -3, &["write", "blocking"], (1, -2), Family::List),
    spec("LLEN", 2, &["readonly", "fast"], FIRST, Family::List),
    spec("LRANGE", 4, &["readonly"], FIRST, Family::List),
    spec("DEL", -2, &["write"], (1, -1), Family::List),
    spec("SCHED.CREATE", -5, &["write"], NO_KEYS, Family::Schedule),
    spec("SCHED.UPDATE", -5, &["write"], NO_KEYS, Family::Schedule),
    spec("SCHED.DEL", 2, &["write"], NO_KEYS, Family::Schedule),
    spec("SCHED.GET", 2, &["readonly"], NO_KEYS, Family::Schedule),
    spec("SCHED.LIST", 1, &["readonly"], NO_KEYS, Family::Schedule),
    spec("SCHED.HISTORY", 2, &["readonly"], NO_KEYS, Family::Schedule),
    spec("SCHED.ENABLE", 2, &["write", "fast"], NO_KEYS, Family::Schedule),
    spec("SCHED.DISABLE", 2, &["write", "fast"], NO_KEYS, Family::Schedule),
    spec("SCHED.TRIGGER", 2, &["write"], NO_KEYS, Family::Schedule),
];

/// The table row of `name` (case-insensitive).
pub(crate) fn lookup(name: &str) -> Option<&'static Spec> {
    TABLE.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// A parsed command, ready to apply.
#[derive(Debug)]
pub(crate) enum Command {
    Conn(conn::ConnCmd),
    Job(job::JobCmd),
    Queue(queue::QueueCmd),
    List(list::ListCmd),
    Schedule(schedule::ScheduleCmd),
    /// `QUIT`: answer OK and close.
    Quit,
    /// `MULTI`: start queueing.
    Multi,
    /// `EXEC`: run the queue.
    Exec,
    /// `DISCARD`: drop the queue.
    Discard,
}

/// What a command may use while it runs.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub session: &'a mut Session,
    /// False inside `EXEC`, where blocking commands return at once as Redis's do.
    pub may_block: bool,
}

impl Command {
    /// Parses a request's words into a command, checking name, arity and arguments.
    pub fn from_args(args: Vec<Bytes>) -> Result<(Command, &'static Spec), CommandError> {
        let mut words = args.into_iter();
        let name = words
            .next()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let rest: Vec<Bytes> = words.collect();
        let Some(spec) = lookup(&name) else {
            let args = rest
                .iter()
                .take(8)
                .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                .collect::<String>();
            return Err(CommandError::Unknown { name, args });
        };
        let words = rest.len() as i64 + 1;
        if (spec.arity > 0 && words != spec.arity) || (spec.arity < 0 && words < -spec.arity) {
            return Err(CommandError::Arity(spec.name.to_lowercase()));
        }
        let mut parse = Parse::new(spec.name.to_string(), rest);
        let command = match spec.family {
            Family::Conn => Command::Conn(conn::ConnCmd::parse(&mut parse)?),
            Family::Job => Command::Job(job::JobCmd::parse(&mut parse)?),
            Family::Queue => Command::Queue(queue::QueueCmd::parse(&mut parse)?),
            Family::List => Command::List(list::ListCmd::parse(&mut parse)?),
            Family::Schedule => Command::Schedule(schedule::ScheduleCmd::parse(&mut parse)?),
            Family::Txn => {
                let command = match spec.name {
                    "QUIT" => Command::Quit,
                    "MULTI" => Command::Multi,
                    "EXEC" => Command::Exec,
                    _ => Command::Discard,
                };
                // QUIT takes (and ignores) arguments, as Redis's does.
                if spec.name != "QUIT" {
                    parse.finish()?;
                }
                command
            }
        };
        Ok((command, spec))
    }

    /// Whether the command may wait (for a job) before answering.
    pub fn may_block(&self) -> bool {
        match self {
            Command::Job(cmd) => cmd.may_block(),
            Command::List(cmd) => cmd.may_block(),
            _ => false,
        }
    }

    /// Whether the command has a deferred form ([`Command::apply_deferred`]): the hot writes a client pipelines in
    /// bulk (pushes, pops, acks).
    pub fn defers(&self) -> bool {
        match self {
            Command::Job(cmd) => cmd.defers(),
            Command::List(cmd) => cmd.defers(),
            _ => false,
        }
    }

    /// Applies a command that [`Command::defers`] and returns its reply with the commit it must wait for, so the
    /// connection can apply the rest of a pipeline before waiting: one group commit then covers all of it.
    pub fn apply_deferred(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        match self {
            Command::Job(cmd) => cmd.apply_deferred(ctx),
            Command::List(cmd) => cmd.apply_deferred(ctx),
            _ => unreachable!("{self:?} has no deferred form"),
        }
    }

    /// Runs a command that [`Command::may_block`] until it has its answer, and returns it with the commit it must
    /// wait for: the connection may stop waiting for the answer (the client left, the server stops), but a pop that
    /// has taken its job must still be answered, after that commit.
    pub async fn apply_blocking(self, ctx: &mut Ctx<'_>) -> Result<Applied<Frame>, CommandError> {
        match self {
            Command::Job(cmd) => cmd.apply_blocking(ctx).await,
            Command::List(cmd) => cmd.apply_blocking(ctx).await,
            _ => unreachable!("{self:?} does not block"),
        }
    }

    /// Runs a command of a family module. Transaction control and `QUIT` belong to the connection handler.
    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        match self {
            Command::Conn(cmd) => cmd.apply(ctx).await,
            Command::Job(cmd) => cmd.apply(ctx).await,
            Command::Queue(cmd) => cmd.apply(ctx).await,
            Command::List(cmd) => cmd.apply(ctx).await,
            Command::Schedule(cmd) => cmd.apply(ctx).await,
            Command::Quit | Command::Multi | Command::Exec | Command::Discard => {
                unreachable!("the connection handler applies {self:?} itself")
            }
        }
    }
}
