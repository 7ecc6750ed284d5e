//! Engine errors as gRPC statuses: a fitting status code, the engine's message, and the stable Spool code in the
//! `spool-error-code` metadata so clients branch on `LEASELOST` rather than on prose.

use spool_core::{ErrorCode, SpoolError};
use spool_proto::{grpc_code, ERROR_CODE_METADATA};
use tonic::metadata::MetadataValue;
use tonic::Status;

/// The status for an engine error.
pub fn status(e: SpoolError) -> Status {
    let mut status = Status::new(grpc_code(e.code), e.message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_METADATA, MetadataValue::from_static(e.code.as_str()));
    status
}

/// INVALID_ARGUMENT with the `INVALID` code, for requests the door itself rejects.
pub fn invalid(message: impl Into<String>) -> Status {
    status(SpoolError::invalid(message))
}

/// UNAVAILABLE with the `SHUTDOWN` code, for calls cut short by shutdown.
pub fn shutting_down() -> Status {
    status(SpoolError::new(ErrorCode::ShuttingDown, "the server is shutting down"))
}

/// Resolves once shutdown has begun (or the server is gone). Returns nothing, so no watch guard is held across an
/// await of the caller.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
