//! Short-lived TURN credentials for clients (`--turn-secret`), the TURN REST API scheme that
//! coturn's `use-auth-secret` checks: username `<expiry>:<peer id>`, password
//! base64(HMAC-SHA1(secret, username)). Nothing is stored: the TURN server recomputes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// An entry of `RTCConfiguration.iceServers`, as the announce ack hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Issues the credentials.
#[derive(Clone)]
pub struct TurnCredentials {
    secret: Vec<u8>,
    urls: Vec<String>,
    ttl: Duration,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TurnCredentials {
    pub fn new(secret: &[u8], urls: Vec<String>, ttl: Duration) -> Self {
        Self {
            secret: secret.to_vec(),
            urls,
            ttl,
        }
    }

    /// Credentials for `peer_id`, valid for the configured time from now.
    pub fn issue(&self, peer_id: &str) -> IceServer {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.issue_at(peer_id, now)
    }

    fn issue_at(&self, peer_id: &str, now: Duration) -> IceServer {
        let username = format!("{}:{peer_id}", (now + self.ttl).as_secs());
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let credential = match Hmac::<Sha1>::new_from_slice(&self.secret) {
            Ok(mut mac) => {
                mac.update(username.as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_the_hmac_of_expiry_and_peer_id() {
        let turn = TurnCredentials::new(
            b"north",
            vec!["turn:127.0.0.1:3478".into()],
            Duration::from_secs(3600),
        );
        let server = turn.issue_at("alice", Duration::from_secs(1_000_000));
        assert_eq!(server.username, "1003600:alice");
        // Computed independently: printf '1003600:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(server.credential, "udLEuyyDOwk3mLEbdxPxYtNXKVA=");
        assert_eq!(server.urls, ["turn:127.0.0.1:3478"]);
    }
}
