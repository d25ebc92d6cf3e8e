//! The SFU path for video: incoming VP8/H.264 RTP is sent back (loopback) without decoding;
//! keyframe requests from the receiving side go upstream to the sender, throttled. NACKs from
//! the receiving side are answered from the server's own send buffer (`nack.rs`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_VP8};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::track::track_remote::TrackRemote;

use super::sdp::Sdp;

/// At most one keyframe request per source this often (a burst of receivers asking must not
/// make the sender emit a keyframe each time).
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// RTX's MIME type (webrtc-rs 0.17 has no constant for it).
const MIME_TYPE_RTX: &str = "video/rtx";

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

/// The video codecs the server accepts, with their payload types.
pub(crate) fn video_codecs() -> Vec<RTCRtpCodecParameters> {
    vec![
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 96,
            ..Default::default()
        },
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 102,
            ..Default::default()
        },
    ]
}

/// Retransmission streams (RFC 4588), one per codec of [`video_codecs`], on the payload type
/// after the codec's. A receiver that offers `video/rtx` for the codec (browsers do) gets
/// NACKed packets on a repair stream with an SSRC and sequence numbers of its own, which its
/// statistics and SRTP replay protection keep apart from the original; a receiver that does
/// not gets them again on the original SSRC.
pub(crate) fn rtx_codecs() -> Vec<RTCRtpCodecParameters> {
    video_codecs()
        .iter()
        .map(|codec| RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_RTX.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={}", codec.payload_type),
                rtcp_feedback: vec![],
            },
            payload_type: codec.payload_type + 1,
            ..Default::default()
        })
        .collect()
}

/// The codec to send video back with: the first of ours (VP8, then H.264) that the offer
/// has in an active video section; `None` when the offer has no video.
pub(crate) fn offered_video_codec(offer_sdp: &str) -> Option<RTCRtpCodecCapability> {
    // An offer that does not parse fails at set_remote_description; here it has no video.
    let offered = Sdp::parse(offer_sdp)
        .map(|sdp| sdp.active_video_codecs())
        .unwrap_or_default();
    video_codecs().into_iter().map(|c| c.capability).find(|c| {
        let name = c
            .mime_type
            .trim_start_matches("video/")
            .to_ascii_uppercase();
        offered.contains(&name)
    })
}

/// Reads the RTCP the client sends about the server's video track and passes its keyframe
/// requests (PLI, FIR) upstream as a PLI for the source, at most one per
/// [`KEYFRAME_REQUEST_INTERVAL`]. Holds the peer connection weakly: the connection owns the
/// sender, so a strong handle here would keep both alive.
pub(crate) async fn relay_keyframe_requests(
    sender: Arc<RTCRtpSender>,
    pc: Weak<RTCPeerConnection>,
    source_ssrc: watch::Receiver<Option<u32>>,
    cancel: CancellationToken,
) {
    let mut last_request: Option<Instant> = None;
    loop {
        let packets = tokio::select! {
            read = sender.read_rtcp() => match read {
                Ok((packets, _)) => packets,
                Err(_) => break,
            },
            () = cancel.cancelled() => break,
        };
        let wants_keyframe = packets.iter().any(|p| {
            let any = p.as_any();
            any.downcast_ref::<PictureLossIndication>().is_some()
                || any.downcast_ref::<FullIntraRequest>().is_some()
        });
        if !wants_keyframe {
            continue;
        }
        let Some(media_ssrc) = *source_ssrc.borrow() else {
            continue;
        };
        if last_request.is_some_and(|at| at.elapsed() < KEYFRAME_REQUEST_INTERVAL) {
            continue;
        }
        let Some(pc) = pc.upgrade() else { break };
        last_request = Some(Instant::now());
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if let Err(err) = pc.write_rtcp(&[Box::new(pli)]).await {
            tracing::debug!(%err, "sending a PLI upstream failed");
        }
    }
}

/// Whether a remote track carries video.
pub(crate) fn is_video(remote: &TrackRemote) -> bool {
    remote.kind() == RTPCodecType::Video
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_vp8_then_h264_from_an_active_video_section() {
        let both = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(offered_video_codec(both).unwrap().mime_type, MIME_TYPE_VP8);
        let h264 = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 h264/90000\r\n";
        assert_eq!(offered_video_codec(h264).unwrap().mime_type, MIME_TYPE_H264);
        let rejected = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(offered_video_codec(rejected).is_none());
        let audio_only = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(offered_video_codec(audio_only).is_none());
        let vp9 = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n";
        assert!(offered_video_codec(vp9).is_none());
    }
}
