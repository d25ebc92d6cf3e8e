//! Forwarded video answers NACKs: a packet the network lost on its way from the server to
//! the client comes again once the client NACKs it, as RTX when the client negotiated
//! `video/rtx` and on the original SSRC when it did not.
//!
//! The client reaches the server through a relay that drops the named server packets (so
//! the client really misses them) and records every RTP header it passes. The client's own
//! NACK generator is left out: the only NACK is the one the test sends, so its effect and
//! its timing are the server's alone. A client that NACKs everything, over and over, gets
//! no more than `--nack-bytes-per-second` resent.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::client::{ClientOptions, ClientPeer, VideoOptions};
use common::relay::{connect_via_relay, Impairment, Relay, SeenRtp};
use common::signaling::SignalingClient;
use common::video::{send_video, server_video_ssrc, video_section, vp8_payload, VP8};
use common::{http_get, metric_value, TestServer};
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

/// A retransmission must arrive while a receiver still waits for the frame: libwebrtc's
/// video jitter buffer waits a few hundred ms at most. Loopback should take a few ms.
const RETRANSMISSION_BOUND: Duration = Duration::from_millis(200);

const NO_IMPAIRMENT: Impairment = Impairment {
    drop: 0.0,
    delay: 0.0,
    max_delay: Duration::ZERO,
    seed: 0,
};

/// A video client connected through a relay, once it has every forwarded packet but the lost.
struct Lossy {
    peer: ClientPeer,
    relay: Relay,
    answer: String,
    /// Held for the call: the server ends the session when its client's signaling ends.
    _signaling: SignalingClient,
}

/// Connects a video client through a relay that drops `lost` (server video packets) and
/// sends 60 packets of video.
async fn connect_and_lose(server: &TestServer, video: VideoOptions, lost: &[u16]) -> Lossy {
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "camera").await;
    let mut peer = ClientPeer::new_with_video_options(
        ClientOptions {
            audio: true,
            data: false,
        },
        video,
    )
    .await;
    let relay = connect_via_relay(&mut signaling, &mut peer, NO_IMPAIRMENT).await;
    let answer = peer.pc.remote_description().await.unwrap().sdp;
    for &sequence_number in lost {
        relay.stats.drop_to_client_once(VP8, sequence_number);
    }
    // Packet 30 reaches the server late (after 33), so the server forwards it out of order
    // just before the losses: webrtc-rs 0.17's own send buffer then forgot packets 31..33.
    relay
        .stats
        .delay_to_server_once(VP8, 30, Duration::from_millis(35));
    send_video(&peer, 60).await;
    let expected = 60 - lost.len();
    common::eventually("the forwarded video to arrive", || {
        let n = peer.received_video.lock().len();
        async move { n >= expected }
    })
    .await;
    let received = peer.video_payloads();
    for &sequence_number in lost {
        assert!(
            !received.contains(&vp8_payload(sequence_number)),
            "packet {sequence_number} was lost on the way to the client"
        );
    }
    Lossy {
        peer,
        relay,
        answer,
        _signaling: signaling,
    }
}

/// Sends a generic NACK for `pair` about `media_ssrc`; returns when it was sent.
async fn nack(peer: &ClientPeer, media_ssrc: u32, pair: NackPair) -> Instant {
    let sent = Instant::now();
    peer.pc
        .write_rtcp(&[Box::new(TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc,
            nacks: vec![pair],
        })])
        .await
        .unwrap();
    sent
}

/// What the relay saw the server send with this SSRC and payload type (dropped included).
fn seen(relay: &Relay, ssrc: u32, payload_type: u8) -> Vec<SeenRtp> {
    relay
        .stats
        .to_client_rtp
        .lock()
        .iter()
        .filter(|s| s.ssrc == ssrc && s.payload_type == payload_type)
        .copied()
        .collect()
}

/// The same, from `since` on.
fn seen_after(relay: &Relay, since: Instant, ssrc: u32, payload_type: u8) -> Vec<SeenRtp> {
    let mut seen = seen(relay, ssrc, payload_type);
    seen.retain(|s| s.at >= since);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rtx_a_lost_packet_is_sent_again_on_its_own_ssrc() {
    common::init_tracing();
    let server = TestServer::start().await;
    let video = VideoOptions {
        rtx: false,
        without_nack_generator: true,
        ..VideoOptions::default()
    };
    let Lossy {
        peer,
        relay,
        answer,
        _signaling,
    } = connect_and_lose(&server, video, &[32]).await;
    assert!(
        !video_section(&answer).contains("rtx/90000"),
        "no RTX without an offer of it:\n{answer}"
    );
    let ssrc = server_video_ssrc(&answer);
    let order: Vec<u16> = seen(&relay, ssrc, VP8)
        .iter()
        .map(|s| s.sequence_number)
        .filter(|n| (30..=33).contains(n))
        .collect();
    // 30 went out after 32: the reordering that used to wipe 32 from the send buffer.
    let position = |n: u16| order.iter().position(|&s| s == n);
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(
        position(30) > position(32),
        "the server forwarded 30 after 32: {order:?}"
    );

    let sent = nack(&peer, ssrc, NackPair::new(32)).await;
    common::eventually("packet 32 to come again", || {
        let back = peer.video_payloads().contains(&vp8_payload(32));
        async move { back }
    })
    .await;

    let arrival = peer
        .received_video
        .lock()
        .iter()
        .find(|r| r.packet.payload == vp8_payload(32))
        .cloned()
        .unwrap();
    assert_eq!(
        (
            arrival.packet.header.ssrc,
            arrival.packet.header.sequence_number
        ),
        (ssrc, 32),
        "the retransmission is the original packet"
    );
    let resent = seen_after(&relay, sent, ssrc, VP8);
    assert_eq!(
        resent.iter().map(|s| s.sequence_number).collect::<Vec<_>>(),
        [32],
        "the server resent exactly the NACKed packet"
    );
    let to_wire = resent[0].at - sent;
    let to_client = arrival.at - sent;
    println!(
        "NACK → retransmission leaves the server: {to_wire:?}; → at the client: {to_client:?}"
    );
    assert!(to_client < RETRANSMISSION_BOUND, "took {to_client:?}");
    peer.close().await;
}

/// The repair stream the answer pairs with `media_ssrc` (`a=ssrc-group:FID media repair`).
fn repair_ssrc(answer: &str, media_ssrc: u32) -> u32 {
    video_section(answer)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("a=ssrc-group:FID {media_ssrc} ")))
        .map(|ssrc| ssrc.trim().parse().unwrap())
        .expect("the answer pairs a repair SSRC with the video SSRC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rtx_lost_packets_come_on_the_repair_stream() {
    common::init_tracing();
    let server = TestServer::start().await;
    let video = VideoOptions {
        rtx: true,
        without_nack_generator: true,
        ..VideoOptions::default()
    };
    let Lossy {
        peer,
        relay,
        answer,
        _signaling,
    } = connect_and_lose(&server, video, &[32, 34]).await;
    let section = video_section(&answer);
    assert!(
        section.contains("a=rtpmap:97 rtx/90000") && section.contains("a=fmtp:97 apt=96"),
        "the answer accepts RTX for VP8:\n{answer}"
    );
    let ssrc = server_video_ssrc(&answer);
    let repair = repair_ssrc(&answer, ssrc);

    // One NACK pair: 32, and 34 in its bitmask (bit 1).
    let sent = nack(
        &peer,
        ssrc,
        NackPair {
            packet_id: 32,
            lost_packets: 0b10,
        },
    )
    .await;
    common::eventually("two RTX packets", || {
        let n = peer.received_repair.lock().len();
        async move { n >= 2 }
    })
    .await;

    let repairs = peer.received_repair.lock().clone();
    assert_eq!(repairs.len(), 2, "one RTX packet per NACKed packet");
    for (rtx, original) in repairs.iter().zip([32u16, 34]) {
        let header = &rtx.packet.header;
        assert_eq!((header.ssrc, header.payload_type), (repair, 97));
        let payload = &rtx.packet.payload;
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            original,
            "the original sequence number leads the payload"
        );
        assert_eq!(
            payload.slice(2..),
            vp8_payload(original),
            "then the payload"
        );
        assert_eq!(header.timestamp, u32::from(original) * 3000);
    }
    assert_eq!(
        repairs[1].packet.header.sequence_number,
        repairs[0].packet.header.sequence_number.wrapping_add(1),
        "the repair stream numbers its own packets"
    );
    assert!(
        seen_after(&relay, sent, ssrc, VP8).is_empty(),
        "nothing resent on the original SSRC"
    );
    let on_wire = seen_after(&relay, sent, repair, 97);
    assert_eq!(on_wire.len(), 2, "the relay passed the two RTX packets");
    let to_wire = on_wire[0].at - sent;
    let to_client = repairs[0].at - sent;
    println!("NACK → RTX leaves the server: {to_wire:?}; → at the client: {to_client:?}");
    assert!(to_client < RETRANSMISSION_BOUND, "took {to_client:?}");
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_nacks_everything_gets_no_more_than_the_resend_budget() {
    common::init_tracing();
    const BUDGET: u32 = 10_000;
    let server = TestServer::start_with(|c| c.media.nack_bytes_per_second = BUDGET).await;
    let hits = || async {
        let text = http_get(server.http, "/metrics").await;
        metric_value(
            &text,
            r#"remotemedia_limit_hits_total{limit="nack_bytes_per_second"}"#,
        )
        .unwrap()
    };
    let before = hits().await;
    let video = VideoOptions {
        rtx: false,
        without_nack_generator: true,
        ..VideoOptions::default()
    };
    let Lossy {
        peer,
        relay,
        answer,
        _signaling,
    } = connect_and_lose(&server, video, &[]).await;
    let ssrc = server_video_ssrc(&answer);
    // Twenty NACKs for the whole history (packets 0..60 are still buffered): 1,200 packets
    // of about 230 bytes asked for in 2 KB of RTCP.
    let all: Vec<NackPair> = (0..60)
        .step_by(17)
        .map(|first| NackPair {
            packet_id: first,
            lost_packets: 0xFFFF,
        })
        .collect();
    let sent = Instant::now();
    for _ in 0..20 {
        peer.pc
            .write_rtcp(&[Box::new(TransportLayerNack {
                sender_ssrc: 0,
                media_ssrc: ssrc,
                nacks: all.clone(),
            })])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resent = seen_after(&relay, sent, ssrc, VP8).len();
    let elapsed = sent.elapsed().as_secs_f64();
    // Each resend is at least the 211-byte payload and a 12-byte header.
    let allowed = (f64::from(BUDGET) * (1.0 + elapsed) / 223.0) as usize;
    println!("{resent} packets resent of 1200 NACKed in {elapsed:.2} s (at most {allowed})");
    assert!(
        resent <= allowed,
        "{resent} resent, the budget allows {allowed}"
    );
    assert!(
        resent >= 20,
        "only {resent} resent: the budget is a second's worth at once"
    );
    assert_eq!(
        (hits().await - before) as usize + resent,
        1200,
        "every NACKed packet not resent is counted"
    );
    peer.close().await;
}
