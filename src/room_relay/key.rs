//! A relay link's SRTP master key and salt: drawn fresh for every link by the worker that
//! receives on it, and handed to the sending worker over the worker API (TLS).

use rand::RngCore;
use webrtc::srtp::context::Context;
use webrtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc::srtp::protection_profile::ProtectionProfile;

use super::RelayError;

/// The relay's SRTP profile: AES-128 counter mode, HMAC-SHA1 80-bit tag (the one every SRTP
/// stack has).
const PROFILE: ProtectionProfile = ProtectionProfile::Aes128CmHmacSha1_80;
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
/// Replay windows: a relayed copy arrives in order within this many packets or is dropped.
const REPLAY_WINDOW: usize = 64;

/// One link's master key and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayKey {
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in logs.
        f.write_str("RelayKey(..)")
    }
}

impl RelayKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut key = [0; KEY_LEN];
        let mut salt = [0; SALT_LEN];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut salt);
        Self { key, salt }
    }

    /// The key as sent over the worker API: key then salt (30 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        [self.key.as_slice(), self.salt.as_slice()].concat()
    }

    /// A key from [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    /// `Key` when `bytes` is not 30 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RelayError> {
        if bytes.len() != KEY_LEN + SALT_LEN {
            return Err(RelayError::Key(format!(
                "{} bytes, not {}",
                bytes.len(),
                KEY_LEN + SALT_LEN
            )));
        }
        let (key, salt) = bytes.split_at(KEY_LEN);
        let mut out = Self {
            key: [0; KEY_LEN],
            salt: [0; SALT_LEN],
        };
        out.key.copy_from_slice(key);
        out.salt.copy_from_slice(salt);
        Ok(out)
    }

    /// An SRTP context of this key (one per direction and end: the sender's protects, the
    /// receiver's verifies, with replay protection).
    pub(super) fn context(&self) -> Result<Context, RelayError> {
        Context::new(
            &self.key,
            &self.salt,
            PROFILE,
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
        .map_err(|err| RelayError::Key(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_travels_as_thirty_bytes_and_nothing_else_reads_as_one() {
        let key = RelayKey::generate();
        assert_eq!(key.to_bytes().len(), 30);
        assert_eq!(RelayKey::from_bytes(&key.to_bytes()).unwrap(), key);
        assert_ne!(RelayKey::generate(), key, "every link its own key");
        assert!(RelayKey::from_bytes(&[0; 29]).is_err());
        assert!(RelayKey::from_bytes(&[0; 31]).is_err());
        assert_eq!(format!("{key:?}"), "RelayKey(..)");
        assert!(key.context().is_ok());
    }
}
