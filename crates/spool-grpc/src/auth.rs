//! Shared-token authentication: `authorization: Bearer <token>` on every `spool.v1` call when a token is configured.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// An interceptor that refuses calls without the configured bearer token (UNAUTHENTICATED), before any handler
/// runs, so a refused call changes nothing.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("BearerAuth")
            .field("enabled", &self.expected.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// Checks for `token`; `None` (or empty) lets every call through.
    pub fn new(token: Option<String>) -> Self {
        Self {
            expected: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(format!("Bearer {t}").into_bytes())),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        match request.metadata().get("authorization") {
            Some(given) if constant_time_eq(given.as_bytes(), expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong token in the authorization metadata")),
            None => Err(Status::unauthenticated(
                "this server needs a token: send `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_bearer_token() {
        let mut auth = BearerAuth::new(Some("s3cret".into()));
        let with = |value: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = value {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            r
        };
        assert!(auth.call(with(Some("Bearer s3cret"))).is_ok());
        for bad in [None, Some("Bearer nope"), Some("s3cret"), Some("Bearer s3cret ")] {
            let e = auth.call(with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert!(BearerAuth::new(Some(String::new())).call(with(None)).is_ok());
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
