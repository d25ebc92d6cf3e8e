//! Peer ids: what a client may call itself.

use super::error::SignalingError;

/// The virtual peer that stands for the server: offers to it get a server-side session.
pub const SERVER_PEER_ID: &str = "remotemedia-server";

const MAX_PEER_ID_LEN: usize = 128;

/// Checks that `peer_id` is 1–128 characters of `[A-Za-z0-9._:-]`.
///
/// # Errors
/// `InvalidPeerId` naming what is wrong.
pub fn validate_peer_id(peer_id: &str) -> Result<(), SignalingError> {
    if peer_id.is_empty() {
        return Err(SignalingError::InvalidPeerId("peer id is empty".into()));
    }
    if peer_id.len() > MAX_PEER_ID_LEN {
        return Err(SignalingError::InvalidPeerId(format!(
            "peer id is {} characters long, the limit is {MAX_PEER_ID_LEN}",
            peer_id.len()
        )));
    }
    if let Some(bad) = peer_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(SignalingError::InvalidPeerId(format!(
            "peer id contains {bad:?}; allowed are A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(validate_peer_id("alice").is_ok());
        assert!(validate_peer_id("a.b_c:d-9").is_ok());
        assert!(validate_peer_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_characters() {
        assert!(validate_peer_id("").is_err());
        assert!(validate_peer_id(&"x".repeat(129)).is_err());
        assert!(validate_peer_id("a b").is_err());
        assert!(validate_peer_id("a/b").is_err());
        assert!(validate_peer_id("é").is_err());
    }
}
