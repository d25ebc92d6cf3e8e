//! VP8 test video a client sends, and what an answer says about the server's video.

use std::time::Duration;

use bytes::Bytes;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::TrackLocalWriter;

use super::client::ClientPeer;

/// The payload type the test client sends VP8 with.
pub const VP8: u8 = 96;

/// A VP8 payload: descriptor byte (start of partition) then a recognisable body.
pub fn vp8_payload(i: u16) -> Bytes {
    let mut payload = vec![0x10u8];
    payload.extend(format!("frame-{i:04}-").as_bytes());
    payload.extend(std::iter::repeat_n((i % 251) as u8, 200));
    Bytes::from(payload)
}

/// Sends packets with sequence numbers `0..count`, one per 10 ms (timestamps 3000 apart);
/// returns their payloads.
pub async fn send_video(peer: &ClientPeer, count: u16) -> Vec<Bytes> {
    let track = peer.video.as_ref().expect("a client with video");
    let mut sent = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    for i in 0..count {
        ticker.tick().await;
        let header = Header {
            version: 2,
            payload_type: VP8,
            sequence_number: i,
            timestamp: u32::from(i) * 3000,
            ssrc: 7,
            marker: true,
            ..Default::default()
        };
        let payload = vp8_payload(i);
        track
            .write_rtp(&Packet {
                header,
                payload: payload.clone(),
            })
            .await
            .unwrap();
        sent.push(payload);
    }
    sent
}

/// The video section of an SDP.
pub fn video_section(sdp: &str) -> &str {
    sdp.split("m=video").nth(1).expect("a video section")
}

/// The SSRC the server sends video with, as the client sees it: the first of the answer's
/// video section.
pub fn server_video_ssrc(answer: &str) -> u32 {
    video_section(answer)
        .lines()
        .find_map(|l| l.strip_prefix("a=ssrc:"))
        .and_then(|ssrc| ssrc.split_whitespace().next())
        .map(|ssrc| ssrc.parse().unwrap())
        .expect("the answer's video section names its SSRC")
}
