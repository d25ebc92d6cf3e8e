//! `--worker-token`: the shared token on every call of the internal worker API, attached by
//! frontends and required by workers, so nothing else on the network creates sessions.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::Secret;
use crate::signaling::bearer;

/// Frontend side: adds `authorization: Bearer <token>` to each call (nothing when unset).
#[derive(Clone, Default)]
pub struct AttachToken(Option<Arc<MetadataValue<Ascii>>>);

impl AttachToken {
    /// # Errors
    /// The token has characters a header cannot carry.
    pub fn new(token: Option<&Secret>) -> Result<Self, String> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let text = std::str::from_utf8(token.expose())
            .map_err(|_| "the worker token is not UTF-8".to_owned())?;
        let value = format!("Bearer {text}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| "the worker token must be printable ASCII".to_owned())?;
        Ok(Self(Some(Arc::new(value))))
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.as_ref().clone());
        }
        Ok(request)
    }
}

/// Worker side: refuses calls without the token (everything passes when unset).
#[derive(Clone, Default)]
pub struct RequireToken(Option<Arc<[u8]>>);

impl RequireToken {
    pub fn new(token: Option<&Secret>) -> Self {
        Self(token.map(|token| Arc::from(token.expose())))
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(bearer)
            .unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(request)
        } else {
            tracing::warn!(peer = ?request.remote_addr(), "worker API call refused: token missing or wrong");
            Err(Status::unauthenticated(
                "the worker API token is missing or wrong (--worker-token)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_token_passes() {
        let secret = Secret::new("s3cret");
        let mut require = RequireToken::new(Some(&secret));
        let mut attach = AttachToken::new(Some(&secret)).unwrap_or_default();
        let signed = attach.call(Request::new(())).map(|r| require.call(r));
        assert!(matches!(signed, Ok(Ok(_))));
        let wrong = AttachToken::new(Some(&Secret::new("other")))
            .unwrap_or_default()
            .call(Request::new(()))
            .map(|r| require.call(r));
        assert!(matches!(wrong, Ok(Err(ref s)) if s.code() == tonic::Code::Unauthenticated));
        let bare = require.call(Request::new(()));
        assert!(bare.is_err());
        assert!(RequireToken::new(None).call(Request::new(())).is_ok());
    }
}
