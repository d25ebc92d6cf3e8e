//! RTP forwarding without decoding: the SFU path for video, and audio in forward mode.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;

use super::activity::Activity;
use super::session_trace::SessionTrace;

/// Copies a client's RTP (video, or audio in `media.audio: forward`) onto a track of the
/// server's until either ends, without decoding.
/// `TrackLocalStaticRTP` rewrites SSRC and payload type for the outgoing binding; sequence
/// numbers and timestamps stay the sender's (one source per track, so they stay continuous).
pub(crate) async fn forward_rtp(
    remote: Arc<TrackRemote>,
    local: Arc<TrackLocalStaticRTP>,
    source_ssrc: watch::Sender<Option<u32>>,
    activity: Arc<Activity>,
    trace: Arc<SessionTrace>,
    cancel: CancellationToken,
) {
    let _ = source_ssrc.send(Some(remote.ssrc()));
    // Handles dropped once their first packet is seen: nothing per packet after that.
    let mut first_in = Some(Arc::clone(&trace));
    let mut first_out = Some(trace);
    loop {
        let packet = tokio::select! {
            read = remote.read_rtp() => match read {
                Ok((packet, _)) => packet,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        activity.touch();
        if let Some(trace) = first_in.take() {
            trace.first_rtp_in();
        }
        match local.write_rtp(&packet).await {
            Ok(written) => {
                if written > 0 && first_out.as_ref().is_some_and(|t| t.first_rtp_out()) {
                    first_out = None;
                }
            }
            Err(err) => tracing::debug!(%err, "forwarding a video packet failed"),
        }
    }
}

/// Reads and discards a track the session does not use (the interceptors still see it).
pub(crate) async fn drain(
    remote: Arc<TrackRemote>,
    activity: Arc<Activity>,
    trace: Arc<SessionTrace>,
    cancel: CancellationToken,
) {
    let mut first_in = Some(trace);
    loop {
        tokio::select! {
            read = remote.read_rtp() => if read.is_err() { break },
            () = cancel.cancelled() => break,
        }
        activity.touch();
        if let Some(trace) = first_in.take() {
            trace.first_rtp_in();
        }
    }
}
