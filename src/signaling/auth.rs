//! Client authentication: HS256 JWTs whose `sub` is the peer id (`--auth-secret`).
//!
//! The transports only find the token (gRPC `authorization: Bearer`, WebSocket
//! `access_token` query or `bearer.<token>` subprotocol); checking it and what it allows is
//! here, so every transport refuses the same things with the same codes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew allowed on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 5;

/// What a client's token says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The only peer id this token may announce.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The room the peer reports (announce metadata `room`); a client cannot claim another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The only pipeline manifest this peer's server session may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The only room pipeline this peer may ask for (announce metadata `room_manifest`); a
    /// token without it asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_manifest: Option<String>,
}

/// Who is on the other end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Authentication is off (`--auth-secret` unset).
    Anonymous,
    /// A valid token.
    Verified(Claims),
}

/// Why a token was refused (all map to UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required (authorization: Bearer <JWT>, or access_token for /ws)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Checks tokens against the shared secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { .. }")
    }
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The claims of a valid token.
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a token, `Expired`, or `Invalid` (bad signature,
    /// another algorithm, malformed, claims missing).
    pub fn verify(&self, token: Option<&str>) -> Result<Claims, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let token = token.ok_or(AuthError::Missing)?;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(err.to_string()),
            })
    }
}

/// Signs a token for `peer_id` valid for `ttl` (the probe, tests).
///
/// # Errors
/// Only if signing fails, which HS256 with any secret does not.
pub fn issue(
    secret: &[u8],
    peer_id: &str,
    ttl: Duration,
    room: Option<String>,
    manifest: Option<String>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: peer_id.to_owned(),
        exp: expiry(ttl),
        room,
        manifest,
        room_manifest: None,
    };
    sign(secret, &claims)
}

/// Seconds since the Unix epoch `ttl` from now (a token's `exp`).
pub fn expiry(ttl: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + ttl).as_secs()
}

/// Signs `claims` (HS256; the `token` command).
///
/// # Errors
/// Only if signing fails, which HS256 with any secret does not.
pub fn sign(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// The token of an `authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    #[test]
    fn a_token_it_issued_verifies_with_its_claims() {
        let token = issue(
            SECRET,
            "alice",
            Duration::from_secs(60),
            Some("r1".into()),
            None,
        )
        .expect("sign");
        let claims = TokenVerifier::new(SECRET)
            .verify(Some(&token))
            .expect("valid");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.room.as_deref(), Some("r1"));
        assert_eq!(claims.manifest, None);
    }

    #[test]
    fn refusals_say_why() {
        let verifier = TokenVerifier::new(SECRET);
        assert_eq!(verifier.verify(None), Err(AuthError::Missing));
        assert_eq!(verifier.verify(Some("  ")), Err(AuthError::Missing));
        let other = issue(b"other", "alice", Duration::from_secs(60), None, None).expect("sign");
        assert!(matches!(
            verifier.verify(Some(&other)),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier.verify(Some("a.b.c")),
            Err(AuthError::Invalid(_))
        ));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: 1_000,
                room: None,
                manifest: None,
                room_manifest: None,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        assert_eq!(verifier.verify(Some(&expired)), Err(AuthError::Expired));
    }

    #[test]
    fn another_algorithm_is_refused_even_with_the_right_secret() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "alice".into(),
                exp: u64::MAX / 2,
                room: None,
                manifest: None,
                room_manifest: None,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        assert!(matches!(
            TokenVerifier::new(SECRET).verify(Some(&token)),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
