//! How a process reaches Redis: `--redis-url` (`redis://`, or `rediss://` for TLS; AUTH as
//! `redis://user:password@host` or `redis://:password@host`) and `--redis-ca-file`. The URL
//! is only ever shown with its password replaced.

use std::path::Path;
use std::time::Duration;

/// Why cluster state could not be reached. The URL in each message is redacted; each
/// message is whole (no `source` chain to repeat it).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis at {url}: {error}{}", hint(error))]
    Redis {
        url: String,
        error: redis::RedisError,
    },
    #[error("--redis-ca-file: {error}")]
    CaFile { error: crate::tls::TlsError },
    #[error("--redis-ca-file is set but the Redis URL {url} is not rediss:// (TLS)")]
    CaWithoutTls { url: String },
}

/// What to check when Redis refuses this process.
fn hint(err: &redis::RedisError) -> &'static str {
    let text = err.to_string();
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        " (check the user and password in --redis-url)"
    } else if err.kind() == redis::ErrorKind::Io && text.contains("certificate") {
        " (check --redis-ca-file and the server's certificate name)"
    } else {
        ""
    }
}

/// `url` with its password (if any) replaced by `***`, for logs and errors. A URL that does
/// not parse is not shown at all past its scheme.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials, which this one has.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            format!("{scheme}://(an unparsable URL)")
        }
    }
}

/// Connects to Redis and checks it answers (AUTH and TLS included), so a wrong URL, a wrong
/// password, an untrusted certificate or a dead Redis stops the server at start with a clear
/// message instead of failing every request later. `ca_file` (PEM) verifies a `rediss://`
/// server signed by a private CA; without it, the system roots do.
///
/// # Errors
/// `ClusterError::Redis` naming the (redacted) URL, or a bad CA file.
pub async fn connect(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(redis::Client, redis::aio::ConnectionManager), ClusterError> {
    let shown = redact_url(url);
    let error = |error| ClusterError::Redis {
        url: shown.clone(),
        error,
    };
    let client = match ca_file {
        None => redis::Client::open(url).map_err(error)?,
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err(ClusterError::CaWithoutTls { url: shown });
            }
            let root_cert =
                crate::tls::read_ca_bundle(path).map_err(|error| ClusterError::CaFile { error })?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(error)?
        }
    };
    // rustls needs its process-wide provider before the first rediss:// handshake.
    crate::tls::crypto_provider();
    // Fail fast at start: a few quick retries, not the default minute of backoff.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(Duration::from_secs(2)));
    let mut manager = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(error)?;
    redis::cmd("PING")
        .query_async::<String>(&mut manager)
        .await
        .map_err(error)?;
    Ok((client, manager))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:hunter2@redis.example:6380"),
            "rediss://app:***@redis.example:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        let garbled = redact_url("redis://:hunter2@[not a host");
        assert!(!garbled.contains("hunter2"), "{garbled}");
    }
}
