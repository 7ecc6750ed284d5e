//! The accept loop and the per-connection handler: read a request, check authentication and transactions, apply the
//! command, write the reply.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spool_engine::{Applied, Broker};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cmd::{Command, Ctx, Spec};
use crate::connection::{Connection, ReadError};
use crate::frame::{Frame, Limits, Proto};
use crate::parse::CommandError;
use crate::RespConfig;

/// Replies a connection holds back while it applies more of the client's pipeline; past this, it waits for their
/// commits and writes them before reading on, which bounds what one client's pipeline holds in memory.
const MAX_PENDING_REPLIES: usize = 256;

/// What every connection of one listener shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub broker: Broker,
    pub config: RespConfig,
    pub started: Instant,
    next_client_id: AtomicU64,
    /// Connections being served now.
    pub connected: AtomicUsize,
    /// Clients waiting in a blocking command now.
    pub blocked: AtomicUsize,
    /// Connections accepted since start (including refused ones).
    pub connections_total: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub rejected_total: AtomicU64,
    /// Commands run since start.
    pub commands_total: AtomicU64,
}

/// One client's state between commands. New per-client state (pub/sub subscriptions, watched keys) goes here.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: u64,
    pub addr: SocketAddr,
    pub proto: Proto,
    pub authenticated: bool,
    pub name: Option<String>,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
    pub connected_at: Instant,
}

/// Counts a value up for as long as the guard lives, so early returns cannot leave a gauge wrong.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn up(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves RESP on `listener` until `shutdown` resolves; then stops accepting, lets each connection finish the
/// command it is running (a blocking wait for a job is cut short with `-SHUTDOWN`), closes them all and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: RespConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = config.limits();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let shared = Arc::new(Shared {
        broker,
        config,
        started: Instant::now(),
        next_client_id: AtomicU64::new(1),
        connected: AtomicUsize::new(0),
        blocked: AtomicUsize::new(0),
        connections_total: AtomicU64::new(0),
        rejected_total: AtomicU64::new(0),
        commands_total: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tracing::info!(addr = ?listener.local_addr().ok(), "RESP listener serving");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Shutdown first: once it resolves, no further connection is taken even if one is waiting.
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    shared.connections_total.fetch_add(1, Ordering::Relaxed);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let shared = shared.clone();
                            let stop = stop_rx.clone();
                            tasks.spawn(async move {
                                handle(&shared, socket, addr, limits, stop).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            shared.rejected_total.fetch_add(1, Ordering::Relaxed);
                            tasks.spawn(refuse(socket));
                        }
                    }
                }
                Err(e) => {
                    // Usually out of file descriptors: pausing lets connections close instead of spinning on the
                    // same error.
                    tracing::warn!(error = %e, "RESP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow with every client ever served.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(connections = tasks.len(), "RESP listener stopping; closing connections");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection over the limit with Redis's error, then closes it. Bounded in time so a peer that does not
/// read cannot hold the task.
async fn refuse(mut socket: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.write_all(b"-ERR max number of clients reached\r\n"),
    )
    .await;
}

/// The words of a request: the parser takes only bulk strings as arguments (`frame::parse`).
fn request_args(items: Vec<Frame>) -> Vec<Bytes> {
    items
        .into_iter()
        .map(|item| match item {
            Frame::Bulk(b) => b,
            other => unreachable!("a request argument is a bulk string, not {other:?}"),
        })
        .collect()
}

/// A transaction being queued by `MULTI`.
struct Transaction {
    queued: Vec<Command>,
    /// Bytes of the queued commands' arguments.
    queued_bytes: usize,
    /// A command failed to queue (unknown, wrong arity, not allowed, past the limits): `EXEC` will refuse, as
    /// Redis's does.
    aborted: bool,
}

/// What to do after a reply.
enum Next {
    Continue,
    Close,
}

async fn handle(shared: &Shared, socket: TcpStream, addr: SocketAddr, limits: Limits, mut stop: watch::Receiver<bool>) {
    let _connected = Gauge::up(&shared.connected);
    // Replies are small and pipelined ones are batched by the write buffer; Nagle would only add latency.
    let _ = socket.set_nodelay(true);
    let mut conn = Connection::new(socket, limits);
    let mut session = Session {
        id: shared.next_client_id.fetch_add(1, Ordering::Relaxed),
        addr,
        proto: Proto::Resp2,
        authenticated: shared.config.password.is_none(),
        name: None,
        lib_name: None,
        lib_ver: None,
        connected_at: Instant::now(),
    };
    let mut txn: Option<Transaction> = None;
    // Replies not yet written, in request order, each with the commit it waits for (see `drain`).
    let mut pending = VecDeque::new();
    tracing::debug!(client = session.id, %addr, "RESP client connected");
    loop {
        // Apply every request the client has already pipelined before waiting for any commit: their writes then
        // share a group commit (one fsync) instead of taking one each.
        let buffered = if pending.len() < MAX_PENDING_REPLIES {
            conn.buffered_frame()
        } else {
            Ok(None)
        };
        let read = match buffered {
            Ok(Some(frame)) => Ok(Some(frame)),
            buffered => {
                if drain(&mut conn, &mut pending).await.is_err() {
                    break;
                }
                match buffered {
                    Err(e) => Err(ReadError::Protocol(e)),
                    Ok(_) => tokio::select! {
                        // A request already buffered is served before a shutdown is noticed: it was sent before we
                        // stopped.
                        biased;
                        read = read_request(&mut conn, shared.config.idle_timeout) => read,
                        _ = stop.wait_for(|stopped| *stopped) => break,
                    },
                }
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(ReadError::Protocol(e)) => {
                tracing::info!(client = session.id, %addr, error = %e, "RESP protocol error; closing");
                let _ = conn.write_frame(&Frame::Error(format!("ERR {e}"))).await;
                let _ = conn.flush().await;
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(client = session.id, error = %e, "RESP connection ended");
                break;
            }
        };
        let Frame::Array(items) = frame else {
            unreachable!("requests are arrays")
        };
        let args = request_args(items);
        if args.is_empty() {
            continue;
        }
        shared.commands_total.fetch_add(1, Ordering::Relaxed);
        let (reply, next) = run(shared, &mut session, &mut txn, &mut conn, &mut pending, &mut stop, args).await;
        let Some(reply) = reply else { break };
        conn.proto = session.proto;
        pending.push_back(reply);
        // After shutdown began, the command just answered was the last one: pipelined requests behind it are not
        // started, so the listener can finish promptly.
        if matches!(next, Next::Close) || *stop.borrow() {
            if drain(&mut conn, &mut pending).await.is_ok() {
                let _ = conn.flush().await;
            }
            break;
        }
    }
    tracing::debug!(client = session.id, "RESP client disconnected");
}

/// Writes the waiting replies in order, each once its write is durable (a failed commit turns its reply into an
/// error). Dropping a reply instead — the client left — does not cancel its write.
async fn drain(conn: &mut Connection, pending: &mut VecDeque<Applied<Frame>>) -> std::io::Result<()> {
    while let Some(reply) = pending.pop_front() {
        let frame = reply
            .durable()
            .await
            .unwrap_or_else(|e| CommandError::from(e).to_frame());
        conn.write_frame(&frame).await?;
    }
    Ok(())
}

/// Reads the next request, giving up after the idle timeout (a close, as Redis's `timeout` does).
async fn read_request(conn: &mut Connection, idle: Option<Duration>) -> Result<Option<Frame>, ReadError> {
    match idle {
        None => conn.read_frame().await,
        Some(idle) => tokio::time::timeout(idle, conn.read_frame()).await.unwrap_or(Ok(None)),
    }
}

/// Runs one request. `None` as the reply means the peer is gone and nothing should be written. A command with a
/// deferred form returns its reply still waiting for its commit; any other command first writes the replies waiting
/// in `pending`, so that a client is not kept from them while this one blocks or waits.
async fn run(
    shared: &Shared,
    session: &mut Session,
    txn: &mut Option<Transaction>,
    conn: &mut Connection,
    pending: &mut VecDeque<Applied<Frame>>,
    stop: &mut watch::Receiver<bool>,
    args: Vec<Bytes>,
) -> (Option<Applied<Frame>>, Next) {
    let reply =
        |r: Result<Frame, CommandError>| (Some(Applied::done(r.unwrap_or_else(|e| e.to_frame()))), Next::Continue);
    // Counted only inside MULTI, the one place it bounds anything (see the queueing arm below).
    let arg_bytes: usize = match txn {
        Some(_) => args.iter().map(Bytes::len).sum(),
        None => 0,
    };
    let (command, spec) = match Command::from_args(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            if let Some(txn) = txn {
                txn.aborted = true;
            }
            return reply(Err(e));
        }
    };
    if !session.authenticated && !allowed_without_auth(spec) {
        if let Some(txn) = txn {
            txn.aborted = true;
        }
        return reply(Err(CommandError::NoAuth));
    }
    if txn.is_none() && command.defers() {
        let mut ctx = Ctx {
            shared,
            session,
            may_block: false,
        };
        return match command.apply_deferred(&mut ctx) {
            Ok(applied) => (Some(applied), Next::Continue),
            Err(e) => reply(Err(e)),
        };
    }
    // A command that may wait must not hold back the replies before it: they go out now, not when it returns.
    let flushed = drain(conn, pending).await.is_ok() && (!command.may_block() || conn.flush().await.is_ok());
    if !flushed {
        return (None, Next::Close);
    }
    match (command, txn.as_mut()) {
        (Command::Quit, _) => (Some(Applied::done(Frame::ok())), Next::Close),
        (Command::Multi, Some(_)) => reply(Err(CommandError::Other("ERR MULTI calls can not be nested".into()))),
        (Command::Multi, None) => {
            *txn = Some(Transaction {
                queued: Vec::new(),
                queued_bytes: 0,
                aborted: false,
            });
            reply(Ok(Frame::ok()))
        }
        (Command::Discard, None) => reply(Err(CommandError::Other("ERR DISCARD without MULTI".into()))),
        (Command::Discard, Some(_)) => {
            *txn = None;
            reply(Ok(Frame::ok()))
        }
        (Command::Exec, None) => reply(Err(CommandError::Other("ERR EXEC without MULTI".into()))),
        (Command::Exec, Some(_)) => {
            let Transaction { queued, aborted, .. } = txn.take().expect("in a transaction");
            if aborted {
                return reply(Err(CommandError::Other(
                    "EXECABORT Transaction discarded because of previous errors.".into(),
                )));
            }
            // Each command runs to completion in order, blocking ones without waiting, as in Redis. Unlike Redis,
            // other clients' commands may interleave: the engine has no multi-command isolation to offer.
            let mut ctx = Ctx {
                shared,
                session,
                may_block: false,
            };
            let mut replies = Vec::with_capacity(queued.len());
            for command in queued {
                replies.push(command.apply(&mut ctx).await.unwrap_or_else(|e| e.to_frame()));
            }
            reply(Ok(Frame::Array(replies)))
        }
        (command, Some(txn)) => {
            // A transaction is held whole until EXEC: it gets the bounds of one request, in commands and in bytes.
            // One that will be refused keeps nothing more.
            if !txn.aborted {
                let limits = conn.limits();
                if txn.queued.len() >= limits.max_array_len
                    || txn.queued_bytes.saturating_add(arg_bytes) > limits.max_request_bytes
                {
                    txn.aborted = true;
                    txn.queued = Vec::new();
                    return reply(Err(CommandError::Other(format!(
                        "ERR transaction too large: at most {} commands and {} bytes of arguments are queued",
                        limits.max_array_len, limits.max_request_bytes
                    ))));
                }
                txn.queued.push(command);
                txn.queued_bytes += arg_bytes;
            }
            reply(Ok(Frame::Simple("QUEUED".into())))
        }
        (command, None) if command.may_block() => {
            let _blocked = Gauge::up(&shared.blocked);
            let mut ctx = Ctx {
                shared,
                session,
                may_block: true,
            };
            tokio::select! {
                // Once a job is taken the answer is in hand: it goes out after its commit, outside this race.
                result = command.apply_blocking(&mut ctx) => (
                    Some(result.unwrap_or_else(|e| Applied::done(e.to_frame()))),
                    Next::Continue,
                ),
                // The peer left while waiting: dropping the wait takes nothing from the queue, so no job is lost.
                _ = conn.closed() => (None, Next::Close),
                _ = stop.wait_for(|stopped| *stopped) => (
                    Some(Applied::done(Frame::Error("SHUTDOWN the server is shutting down".into()))),
                    Next::Close,
                ),
            }
        }
        (command, None) => {
            let mut ctx = Ctx {
                shared,
                session,
                may_block: true,
            };
            reply(command.apply(&mut ctx).await)
        }
    }
}

/// Before authenticating, a client may only authenticate, say hello, check liveness or leave.
fn allowed_without_auth(spec: &Spec) -> bool {
    spec.flags.contains(&"no-auth")
}
