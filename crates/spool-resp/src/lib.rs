//! Spool's Redis-compatible door: a RESP2/RESP3 listener so that `redis-cli`, redis-py, the `redis` crate, go-redis
//! and ioredis can use Spool with no Spool-specific library. It speaks native job commands (`JOB.PUSH`,
//! `JOB.FETCH`, `JOB.ACK`, …) and maps Redis list commands (`LPUSH`, `BRPOP`, …) onto queues.
//!
//! The door is thin: each command decodes its arguments, makes one call on the [`spool_engine::Broker`], and encodes
//! the reply; all business logic stays in the engine. The pipeline reads top to bottom: [`frame`] (RESP values,
//! incremental parsing under size limits) → `connection` (buffered socket) → `parse` (a cursor over one command's
//! arguments) → `cmd` (one module per command family and the command table) → `server` (accept loop, connection
//! limit, per-connection handler). This crate must never depend on the gRPC or HTTP doors. Invariants: a malformed
//! request closes only its own connection; no request can make the server buffer more than the configured limits;
//! a client that disconnects while waiting for a job takes nothing from the queue.

pub mod frame;

mod cmd;
mod connection;
mod parse;
mod server;

use std::time::Duration;

pub use server::serve;

/// Settings of the RESP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespConfig {
    /// Most connections served at once; a client over the limit gets `-ERR max number of clients reached` and is
    /// closed. Default 10,000.
    pub max_connections: usize,
    /// Close a connection that sends no complete command for this long (a client blocked in `BRPOP` or `JOB.FETCH`
    /// is not idle). Default `None`: never, like Redis's `timeout 0`.
    pub idle_timeout: Option<Duration>,
    /// When set, clients must `AUTH` (or `HELLO … AUTH`) before any command but `AUTH`, `HELLO`, `PING` and `QUIT`.
    /// Default `None`: no authentication.
    pub password: Option<String>,
    /// Longest bulk string in a request, in bytes. Default 2 MiB: above the engine's 1 MiB payload limit, so an
    /// oversized payload gets the engine's `-TOOBIG` instead of a closed connection.
    pub max_bulk_bytes: usize,
    /// Most elements in one request array (a command's words). Default 10,000.
    pub max_array_len: usize,
    /// Longest inline command line (typed into `nc`/`telnet`), in bytes. Default 64 KiB.
    pub max_inline_bytes: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: None,
            password: None,
            max_bulk_bytes: 2 * 1024 * 1024,
            max_array_len: 10_000,
            max_inline_bytes: 64 * 1024,
        }
    }
}

impl RespConfig {
    /// The frame limits these settings imply. One request may declare at most 32 maximal bulk strings in all
    /// (64 MiB by default): enough for a `JOB.PUSHMANY` of large payloads, while bounding what one connection can
    /// make the server buffer.
    pub fn limits(&self) -> frame::Limits {
        frame::Limits {
            max_bulk_bytes: self.max_bulk_bytes,
            max_array_len: self.max_array_len,
            max_inline_bytes: self.max_inline_bytes,
            max_request_bytes: self.max_bulk_bytes.saturating_mul(32),
        }
    }
}
