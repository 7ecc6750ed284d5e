//! A cursor over one command's arguments, and the errors a command can answer with.

use std::time::Duration;

use bytes::Bytes;
use spool_core::{JobId, SpoolError};

use crate::frame::Frame;

/// Why a command was refused. Each becomes one error reply; the connection stays open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// The name is not in the command table.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    Unknown {
        /// The name as sent.
        name: String,
        /// The first arguments, quoted as Redis does.
        args: String,
    },
    /// Too many or too few arguments.
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    /// An argument that is not an integer, or out of range.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// An argument that is not a number.
    #[error("ERR {0} is not a float or out of range")]
    NotFloat(&'static str),
    /// Arguments that do not fit the command's grammar.
    #[error("ERR syntax error{0}")]
    Syntax(String),
    /// A password is set and the client has not authenticated.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// Any other refusal, already spelled as a reply (`ERR …`, `WRONGPASS …`).
    #[error("{0}")]
    Other(String),
    /// The engine refused: its stable code is the first word.
    #[error("{} {}", .0.code.as_str(), .0.message)]
    Engine(SpoolError),
}

impl From<SpoolError> for CommandError {
    fn from(e: SpoolError) -> Self {
        CommandError::Engine(e)
    }
}

impl CommandError {
    /// A syntax error with a hint of what was expected.
    pub fn syntax(hint: impl std::fmt::Display) -> Self {
        CommandError::Syntax(format!(": {hint}"))
    }

    /// The error as a reply.
    pub fn to_frame(&self) -> Frame {
        Frame::Error(self.to_string())
    }
}

/// The arguments of one command, after its name.
#[derive(Debug)]
pub struct Parse {
    /// The command's name, upper-cased, for arity errors.
    name: String,
    args: std::vec::IntoIter<Bytes>,
}

impl Parse {
    /// A cursor over `args` for command `name`.
    pub fn new(name: String, args: Vec<Bytes>) -> Self {
        Self {
            name,
            args: args.into_iter(),
        }
    }

    /// The command's name, upper-cased.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.args.len()
    }

    /// The next argument, or an arity error.
    pub fn next_bytes(&mut self) -> Result<Bytes, CommandError> {
        self.args
            .next()
            .ok_or_else(|| CommandError::Arity(self.name.to_lowercase()))
    }

    /// The next argument as text.
    pub fn next_string(&mut self) -> Result<String, CommandError> {
        String::from_utf8(self.next_bytes()?.to_vec())
            .map_err(|_| CommandError::Engine(SpoolError::invalid("argument is not valid UTF-8")))
    }

    /// The next argument, upper-cased, for matching keywords.
    pub fn next_keyword(&mut self) -> Result<String, CommandError> {
        Ok(self.next_string()?.to_ascii_uppercase())
    }

    /// The next argument as an unsigned integer.
    pub fn next_u64(&mut self) -> Result<u64, CommandError> {
        let arg = self.next_bytes()?;
        std::str::from_utf8(&arg)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(CommandError::NotInteger)
    }

    /// The next argument as a signed integer.
    pub fn next_i64(&mut self) -> Result<i64, CommandError> {
        let arg = self.next_bytes()?;
        std::str::from_utf8(&arg)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(CommandError::NotInteger)
    }

    /// The next argument as a job id.
    pub fn next_job_id(&mut self) -> Result<JobId, CommandError> {
        Ok(self.next_string()?.parse::<JobId>()?)
    }

    /// The next argument as a count of milliseconds.
    pub fn next_ms(&mut self) -> Result<Duration, CommandError> {
        Ok(Duration::from_millis(self.next_u64()?))
    }

    /// The next argument as a Redis blocking timeout: seconds, fractions allowed, not negative.
    pub fn next_timeout_secs(&mut self) -> Result<Duration, CommandError> {
        let arg = self.next_bytes()?;
        let secs: f64 = std::str::from_utf8(&arg)
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|s: &f64| s.is_finite())
            .ok_or(CommandError::NotFloat("timeout"))?;
        if secs < 0.0 {
            return Err(CommandError::Other("ERR timeout is negative".into()));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| CommandError::NotFloat("timeout"))
    }

    /// Every argument left.
    pub fn rest(&mut self) -> Vec<Bytes> {
        self.args.by_ref().collect()
    }

    /// Checks that no argument is left over.
    pub fn finish(&mut self) -> Result<(), CommandError> {
        match self.args.next() {
            None => Ok(()),
            Some(extra) => Err(CommandError::syntax(format!(
                "unexpected argument '{}'",
                String::from_utf8_lossy(&extra)
            ))),
        }
    }
}
