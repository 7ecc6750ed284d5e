//! Spool's public gRPC contract in Rust: the messages and service stubs generated from `proto/spool/v1/*.proto`
//! (module [`v1`]), the encoded descriptor set that the server's reflection service publishes, and the conversions
//! between wire messages and `spool-core`'s domain types (the orphan rule puts them here, beside the generated code).
//!
//! This crate must never depend on the engine or on a door: both the server (`spool-grpc`) and the client library
//! (`spool-client`) build on it. Invariant: every conversion from the wire validates — a missing required field, an
//! unknown enum value or an out-of-range number becomes an `INVALID` [`SpoolError`] naming the field, never a panic
//! and never a silent default.

mod schedule;

pub use schedule::{schedule, schedule_def};

use spool_core::{ErrorCode, Jitter, Job, JobId, JobOptions, JobState, Priority, RetryPolicy, SpoolError};

/// Generated code of the `spool.v1` package.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("spool.v1");
}

/// The encoded `FileDescriptorSet` of `spool.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("spool_v1_descriptor");

/// The fully qualified service name, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "spool.v1.Spool";

/// The response metadata key that carries the stable error code of a failed call.
pub const ERROR_CODE_METADATA: &str = "spool-error-code";

/// The gRPC status code for a Spool error code: what the server sends, and what a client expects for a code that
/// arrived some other way (a result on the consume stream), so both sides agree by construction.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match code {
        ErrorCode::NotFound | ErrorCode::UnknownQueue => Code::NotFound,
        ErrorCode::Invalid => Code::InvalidArgument,
        // The caller's view of the job is stale (lease gone, or the job moved on): retrying the same call won't help.
        ErrorCode::LeaseLost | ErrorCode::WrongState => Code::FailedPrecondition,
        ErrorCode::TooBig => Code::ResourceExhausted,
        ErrorCode::ShuttingDown => Code::Unavailable,
        ErrorCode::Storage => Code::Internal,
    }
}

/// Every stable error code, for parsing a code back from the wire.
pub const ERROR_CODES: [ErrorCode; 8] = [
    ErrorCode::NotFound,
    ErrorCode::LeaseLost,
    ErrorCode::TooBig,
    ErrorCode::Invalid,
    ErrorCode::UnknownQueue,
    ErrorCode::WrongState,
    ErrorCode::ShuttingDown,
    ErrorCode::Storage,
];

/// The error code spelled `code` on the wire (`ErrorCode::as_str`), if it is one.
pub fn error_code_from_str(code: &str) -> Option<ErrorCode> {
    ERROR_CODES.into_iter().find(|c| c.as_str() == code)
}

/// A required job id field: present and a UUID.
pub fn parse_job_id(field: &str, id: &str) -> Result<JobId, SpoolError> {
    if id.is_empty() {
        return Err(SpoolError::invalid(format!("{field} is required")));
    }
    id.parse()
        .map_err(|_| SpoolError::invalid(format!("{field}: {id:?} is not a job id (a UUID)")))
}

/// A required lease token field: fencing tokens are never zero, so zero means the field was left out.
pub fn require_token(field: &str, token: u64) -> Result<u64, SpoolError> {
    if token == 0 {
        return Err(SpoolError::invalid(format!(
            "{field} is required (the lease token from the reservation)"
        )));
    }
    Ok(token)
}

/// A required string field.
pub fn require_str<'a>(field: &str, value: &'a str) -> Result<&'a str, SpoolError> {
    if value.is_empty() {
        return Err(SpoolError::invalid(format!("{field} is required")));
    }
    Ok(value)
}

/// Decodes an open enum field: prost keeps unknown numbers as they came, and they must not pass as a default.
pub fn known_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, SpoolError> {
    E::try_from(value).map_err(|_| SpoolError::invalid(format!("{field}: unknown enum value {value}")))
}

impl From<&SpoolError> for v1::ErrorDetail {
    fn from(e: &SpoolError) -> Self {
        v1::ErrorDetail {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
        }
    }
}

impl From<JobState> for v1::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Scheduled => v1::JobState::Scheduled,
            JobState::Ready => v1::JobState::Ready,
            JobState::Leased => v1::JobState::Leased,
            JobState::Retry => v1::JobState::Retry,
            JobState::Dead => v1::JobState::Dead,
        }
    }
}

impl From<Jitter> for v1::Jitter {
    fn from(j: Jitter) -> Self {
        match j {
            Jitter::None => v1::Jitter::None,
            Jitter::Full => v1::Jitter::Full,
            Jitter::Equal => v1::Jitter::Equal,
        }
    }
}

impl From<&RetryPolicy> for v1::RetryPolicy {
    fn from(p: &RetryPolicy) -> Self {
        v1::RetryPolicy {
            initial_ms: p.initial_ms,
            multiplier: p.multiplier,
            max_ms: p.max_ms,
            jitter: v1::Jitter::from(p.jitter).into(),
        }
    }
}

impl TryFrom<&v1::RetryPolicy> for RetryPolicy {
    type Error = SpoolError;
    fn try_from(p: &v1::RetryPolicy) -> Result<Self, SpoolError> {
        let jitter = match known_enum::<v1::Jitter>("retry.jitter", p.jitter)? {
            v1::Jitter::Unspecified | v1::Jitter::Full => Jitter::Full,
            v1::Jitter::None => Jitter::None,
            v1::Jitter::Equal => Jitter::Equal,
        };
        let policy = RetryPolicy {
            initial_ms: p.initial_ms,
            multiplier: p.multiplier,
            max_ms: p.max_ms,
            jitter,
        };
        policy
            .validate()
            .map_err(|e| SpoolError::invalid(format!("retry: {}", e.message)))?;
        Ok(policy)
    }
}

/// By value: every caller holds an owned copy from the engine, and taking it moves the payload and headers into the
/// message instead of copying them a second time on the fetch path.
impl From<Job> for v1::Job {
    fn from(job: Job) -> Self {
        let extra = job.extra.map(|e| *e).unwrap_or_default();
        v1::Job {
            id: job.id.to_string(),
            queue: job.queue.to_string(),
            payload: job.payload,
            priority: job.priority.get().into(),
            created_at_ms: job.created_at,
            enqueued_at_ms: job.enqueued_at,
            run_at_ms: job.run_at,
            expires_at_ms: job.expires_at,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            lease_ms: job.lease_ms,
            retry: Some((&job.retry).into()),
            unique_key: extra.unique_key,
            unique_until_ms: extra.unique_until,
            headers: extra.headers.into_iter().collect(),
            last_error: extra.last_error,
            state: v1::JobState::from(job.state).into(),
            lease: job.lease.map(|l| v1::Lease {
                token: l.token,
                expires_at_ms: l.expires_at,
            }),
            dead_at_ms: extra.dead_at,
        }
    }
}

impl TryFrom<v1::JobOptions> for JobOptions {
    type Error = SpoolError;
    fn try_from(o: v1::JobOptions) -> Result<Self, SpoolError> {
        let priority = o
            .priority
            .map(|p| {
                Priority::new(p.into()).map_err(|e| SpoolError::invalid(format!("options.priority: {}", e.message)))
            })
            .transpose()?;
        if o.unique_ttl_ms.is_some() && o.unique_key.is_none() {
            return Err(SpoolError::invalid("options.unique_ttl_ms needs options.unique_key"));
        }
        if o.unique_key.as_deref() == Some("") {
            return Err(SpoolError::invalid("options.unique_key must not be empty"));
        }
        Ok(JobOptions {
            priority,
            run_at: o.run_at_ms,
            delay_ms: o.delay_ms,
            expires_at: o.expires_at_ms,
            ttl_ms: o.ttl_ms,
            max_attempts: o.max_attempts,
            lease_ms: o.lease_ms,
            retry: o.retry.as_ref().map(RetryPolicy::try_from).transpose()?,
            unique_key: o.unique_key,
            unique_ttl_ms: o.unique_ttl_ms,
            headers: o.headers.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_round_trips() {
        for code in ERROR_CODES {
            assert_eq!(error_code_from_str(code.as_str()), Some(code));
        }
        assert_eq!(error_code_from_str("NOPE"), None);
    }

    #[test]
    fn options_are_validated_field_by_field() {
        let bad_priority = v1::JobOptions {
            priority: Some(10),
            ..Default::default()
        };
        let e = JobOptions::try_from(bad_priority).unwrap_err();
        assert!(e.message.contains("options.priority"), "{e}");
        let bad_jitter = v1::JobOptions {
            retry: Some(v1::RetryPolicy {
                initial_ms: 1,
                multiplier: 2.0,
                max_ms: 10,
                jitter: 42,
            }),
            ..Default::default()
        };
        let e = JobOptions::try_from(bad_jitter).unwrap_err();
        assert!(e.message.contains("retry.jitter") && e.message.contains("42"), "{e}");
        assert!(parse_job_id("id", "").unwrap_err().message.contains("required"));
        assert!(require_token("token", 0).is_err());
    }

    #[test]
    fn descriptor_set_names_the_service() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        assert!(text.contains("spool.v1") && text.contains("Consume"));
    }
}
