//! `webrtc_server probe`: one echo call against a server, with this crate's client peer.
//! It announces over gRPC, offers to `remotemedia-server`, sends a 440 Hz tone and checks that
//! the tone comes back, loud enough; it fails otherwise. The image's own smoke test (the
//! chart's `helm test` Pod), needing nothing but the binary.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::ClientError;
use super::grpc;
use super::peer::{ClientStack, LoadPeer};
use super::signal::TestSignal;
use super::SetupTimes;
use crate::media::{dominant_frequency, rms_dbfs, SAMPLE_RATE};

/// What the probe sends.
pub const PROBE_HZ: f32 = 440.0;
const PROBE_AMPLITUDE: f32 = 0.5;
/// How far off the returned tone may be.
const TOLERANCE_HZ: f32 = 5.0;
/// Below this the returned audio is silence, not an echo (the tone leaves at about -9 dBFS).
const MIN_LEVEL_DBFS: f32 = -30.0;
/// The start of the returned audio is skipped (codec start-up, the jitter buffer filling).
const SKIP_SECONDS: f32 = 0.3;
/// Longest the signaling connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one probe call did.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub setup: SetupTimes,
    /// Seconds of audio that came back.
    pub received_seconds: f32,
    /// The returned audio's dominant frequency and level (after the start-up).
    pub frequency: f32,
    pub level_dbfs: f32,
}

/// One probe call.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The gRPC signaling URL.
    pub server: String,
    /// Seconds of tone to send (at least 0.5).
    pub seconds: f32,
    /// Where ICE gathers; default: the local address that routes to the server.
    pub ice_ip: Option<IpAddr>,
    /// The manifest to ask for; default: the server's.
    pub manifest: Option<String>,
    pub peer_id: String,
    /// A JWT for servers that authenticate (`authorization: Bearer`).
    pub token: Option<String>,
}

/// Makes the call `options` describe.
///
/// # Errors
/// The connection's or the call's failure, or `Probe` when no tone (or silence) came back.
pub async fn probe(options: &ProbeOptions) -> Result<ProbeReport, ClientError> {
    let seconds = options.seconds.max(0.5);
    let endpoint = tonic::transport::Endpoint::from_shared(options.server.clone())
        .map_err(ClientError::Connect)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let ice_ip = match options.ice_ip {
        Some(ip) => ip,
        None => route_to(endpoint.uri()).await?,
    };
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| ClientError::Timeout("connecting to the signaling server"))??;
    let stack = ClientStack::new(ice_ip)?;
    let signal = Arc::new(TestSignal::tone(PROBE_HZ, PROBE_AMPLITUDE)?);
    let mut peer = LoadPeer::new(&stack, &signal, true).await?;
    peer.keep_audio((seconds * SAMPLE_RATE as f32) as usize);
    let (session, setup) = grpc::connect(
        channel,
        &options.peer_id,
        options.manifest.as_deref(),
        options.token.as_deref(),
        &mut peer,
    )
    .await?;
    let stop = CancellationToken::new();
    peer.start_sending(Arc::clone(&signal), stop.clone());
    tokio::time::sleep(Duration::from_secs_f32(seconds + 0.5)).await;
    stop.cancel();
    let samples = std::mem::take(&mut *peer.counters.decoded.lock());
    peer.close().await;
    session.leave().await;
    judge(&samples, setup)
}

/// Whether `samples` (what came back) are the probe's tone.
fn judge(samples: &[f32], setup: SetupTimes) -> Result<ProbeReport, ClientError> {
    let received_seconds = samples.len() as f32 / SAMPLE_RATE as f32;
    let skip = (SKIP_SECONDS * SAMPLE_RATE as f32) as usize;
    let steady = samples.get(skip..).unwrap_or_default();
    if steady.len() < SAMPLE_RATE as usize / 4 {
        return Err(ClientError::Probe(format!(
            "only {received_seconds:.2} s of audio came back"
        )));
    }
    let report = ProbeReport {
        setup,
        received_seconds,
        frequency: dominant_frequency(steady, SAMPLE_RATE),
        level_dbfs: rms_dbfs(steady),
    };
    if report.level_dbfs < MIN_LEVEL_DBFS {
        return Err(ClientError::Probe(format!(
            "the audio that came back is silence ({:.1} dBFS)",
            report.level_dbfs
        )));
    }
    if (report.frequency - PROBE_HZ).abs() > TOLERANCE_HZ {
        return Err(ClientError::Probe(format!(
            "sent {PROBE_HZ} Hz, {:.1} Hz came back",
            report.frequency
        )));
    }
    Ok(report)
}

/// The local address the system routes to `uri`'s host from (no packet is sent).
async fn route_to(uri: &tonic::codegen::http::Uri) -> Result<IpAddr, ClientError> {
    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let target: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| ClientError::Probe(format!("{host} does not resolve")))?;
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sine;

    #[test]
    fn the_tone_passes_and_silence_or_another_tone_fails() {
        let setup = SetupTimes::default();
        let tone = sine(PROBE_HZ, SAMPLE_RATE, SAMPLE_RATE as usize, 0.5);
        assert!(judge(&tone, setup).is_ok());
        let quiet: Vec<f32> = tone.iter().map(|s| s * 1e-4).collect();
        assert!(judge(&quiet, setup).is_err());
        let other = sine(1_000.0, SAMPLE_RATE, SAMPLE_RATE as usize, 0.5);
        assert!(judge(&other, setup).is_err());
        assert!(judge(&tone[..4_800], setup).is_err());
    }
}
