//! Errors with stable codes. The code is the first word a RESP client sees (`-NOTFOUND …`) and the `code` detail a
//! gRPC client sees, so the spelling of each code is part of the public contract and must never change.

use std::fmt;

/// The stable, machine-readable kind of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No job (or queue, or schedule) with that id or name.
    NotFound,
    /// The lease token is stale: the lease expired and the job went back, or to someone else.
    LeaseLost,
    /// A payload, batch or frame exceeds a configured limit.
    TooBig,
    /// An argument is malformed or out of range (queue name, priority, duration, …).
    Invalid,
    /// The queue does not exist and the broker is configured not to create queues on first use.
    UnknownQueue,
    /// The job is in a state that does not allow the operation (e.g. cancelling a leased job).
    WrongState,
    /// The broker is shutting down and takes no new work.
    ShuttingDown,
    /// The store failed; the broker refuses writes until restarted, so nothing is acknowledged that is not durable.
    Storage,
}

impl ErrorCode {
    /// The code's wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOTFOUND",
            ErrorCode::LeaseLost => "LEASELOST",
            ErrorCode::TooBig => "TOOBIG",
            ErrorCode::Invalid => "INVALID",
            ErrorCode::UnknownQueue => "NOQUEUE",
            ErrorCode::WrongState => "WRONGSTATE",
            ErrorCode::ShuttingDown => "SHUTDOWN",
            ErrorCode::Storage => "STORAGE",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A domain error: a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct SpoolError {
    /// What kind of failure; stable across versions.
    pub code: ErrorCode,
    /// What went wrong, naming the offending value or field.
    pub message: String,
}

impl SpoolError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorCode::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// Shorthand for [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
}
