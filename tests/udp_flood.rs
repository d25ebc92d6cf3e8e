//! The shared UDP port (`--udp-port`) shrugs off junk: 10,000 datagrams from other sockets
//! during a call (random bytes, well-formed checks for ufrags nobody has, truncated STUN,
//! and a flood of checks naming the live session's ufrag from one source) are dropped
//! before the ICE mux and counted by reason; the call's audio keeps coming back, and a new
//! call afterwards connects and echoes.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::free_udp_port;
use common::signaling::SignalingClient;
use common::{eventually, http_get, metric_value, TestServer};
use rand::{Rng, SeedableRng};
use remotemedia_webrtc::signaling::SessionHost;
use tokio::net::UdpSocket;
use webrtc::stun::agent::TransactionId;
use webrtc::stun::fingerprint::FINGERPRINT;
use webrtc::stun::integrity::MessageIntegrity;
use webrtc::stun::message::{Message, Setter, BINDING_REQUEST};
use webrtc::stun::textattrs::Username;

const STUN_RATE: u32 = 20;
const STUN_BURST: u32 = 40;
/// Datagrams sent per batch, and the pause between batches: the server reads them as fast
/// as they come, but a loopback socket's buffer holds a few hundred at most.
const BATCH: usize = 50;
const PAUSE: Duration = Duration::from_millis(5);

const REASONS: [&str; 4] = ["unknown_ufrag", "rate_limited", "not_stun", "malformed"];

/// Counts of `remotemedia_media_udp_dropped_total` by reason, in [`REASONS`] order.
async fn dropped(server: &TestServer) -> [f64; 4] {
    let text = http_get(server.http, "/metrics").await;
    REASONS.map(|reason| {
        metric_value(
            &text,
            &format!("remotemedia_media_udp_dropped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| panic!("no udp_dropped series for {reason}"))
    })
}

/// A binding request as an ICE agent sends it (USERNAME, MESSAGE-INTEGRITY, FINGERPRINT),
/// but with a password nobody shares.
fn binding_request(username: &str) -> Vec<u8> {
    let mut message = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(
            webrtc::stun::attributes::ATTR_USERNAME,
            username.to_owned(),
        )),
        Box::new(MessageIntegrity::new_short_term_integrity(
            "not-the-password".to_owned(),
        )),
        Box::new(FINGERPRINT),
    ];
    message.build(&setters).unwrap();
    message.raw
}

/// What the flood sent, by the reason it should be dropped for.
#[derive(Debug, Default)]
struct Sent {
    unknown_ufrag: usize,
    live_ufrag: usize,
    random: usize,
    malformed: usize,
    elapsed: Duration,
}

/// 10,000 datagrams at `target`: random bytes and checks for unknown ufrags from 127.0.0.3,
/// truncated STUN from 127.0.0.4, checks naming `live_ufrag` from one socket on 127.0.0.2.
async fn flood(target: SocketAddr, live_ufrag: &str) -> Sent {
    let junk = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let broken = UdpSocket::bind("127.0.0.4:0").await.unwrap();
    let one_source = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut sent = Sent::default();
    let started = Instant::now();
    for i in 0..10_000 {
        match i % 10 {
            0..=2 => {
                let len = rng.random_range(1..1200);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                junk.send_to(&bytes, target).await.unwrap();
                sent.random += 1;
            }
            3..=5 => {
                let request = binding_request(&format!("junk{i}:client"));
                junk.send_to(&request, target).await.unwrap();
                sent.unknown_ufrag += 1;
            }
            6 => {
                let request = binding_request(&format!("{live_ufrag}:client"));
                let cut = request.len() - 4;
                broken.send_to(&request[..cut], target).await.unwrap();
                sent.malformed += 1;
            }
            _ => {
                let request = binding_request(&format!("{live_ufrag}:intruder"));
                one_source.send_to(&request, target).await.unwrap();
                sent.live_ufrag += 1;
            }
        }
        if i % BATCH == BATCH - 1 {
            tokio::time::sleep(PAUSE).await;
        }
    }
    sent.elapsed = started.elapsed();
    sent
}

/// The ICE ufrag of an SDP.
fn ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_shared_udp_port_does_not_disturb_a_call() {
    common::init_tracing();
    let port = free_udp_port();
    let server = TestServer::start_with(|config| {
        config.media.udp_port = port;
        config.media.udp_stun_rate = STUN_RATE;
        config.media.udp_stun_burst = STUN_BURST;
    })
    .await;
    let target: SocketAddr = ([127, 0, 0, 1], port).into();

    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "flooded").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "before the flood: {got} Hz");
    let server_ufrag = ufrag(&peer.pc.remote_description().await.unwrap().sdp);
    let before = dropped(&server).await;

    // The tone keeps going for the whole flood.
    let flooding = AtomicBool::new(true);
    let (mark_start, mark_end) = {
        let received = peer.received.lock();
        (received.arrivals.len(), received.samples.len())
    };
    let talk = async {
        while flooding.load(Ordering::Relaxed) {
            peer.send_tone(440.0, 0.2, 20, 0.5).await;
        }
    };
    let attack = async {
        let sent = flood(target, &server_ufrag).await;
        flooding.store(false, Ordering::Relaxed);
        sent
    };
    let ((), sent) = tokio::join!(talk, attack);
    let (during_packets, during) = {
        let received = peer.received.lock();
        (
            received.arrivals.len() - mark_start,
            received.samples[mark_end..].to_vec(),
        )
    };
    println!("flood: {sent:?}; {during_packets} audio packets came back meanwhile");
    assert!(
        during_packets > 0,
        "no audio came back during the flood ({sent:?})"
    );
    assert!(
        during.len() >= 19_200,
        "only {} samples came back during the flood",
        during.len()
    );
    let got = remotemedia_webrtc::media::dominant_frequency(&during[4_800..], 48_000);
    assert!((got - 440.0).abs() <= 5.0, "during the flood: {got} Hz");

    // Every datagram is accounted for by the drop counter of its reason (a loopback socket
    // may lose a few itself; none is counted twice or under another reason).
    let total = sent.random + sent.unknown_ufrag + sent.live_ufrag + sent.malformed;
    assert_eq!(total, 10_000);
    // Checks naming the live ufrag: a burst and the rate pass (the agent rejects them),
    // the rest are rate limited.
    let may_pass =
        f64::from(STUN_BURST) + f64::from(STUN_RATE) * (sent.elapsed.as_secs_f64() + 1.0);
    let expected = [
        sent.unknown_ufrag as f64,
        sent.live_ufrag as f64 - may_pass,
        sent.random as f64,
        sent.malformed as f64,
    ];
    eventually("the drops to be counted", || async {
        let now = dropped(&server).await;
        (0..4).all(|i| now[i] - before[i] >= 0.95 * expected[i])
    })
    .await;
    let after = dropped(&server).await;
    let delta: Vec<f64> = (0..4).map(|i| after[i] - before[i]).collect();
    println!(
        "dropped: unknown_ufrag {} rate_limited {} not_stun {} malformed {}",
        delta[0], delta[1], delta[2], delta[3]
    );
    assert!(delta[0] <= sent.unknown_ufrag as f64, "{delta:?}");
    assert!(delta[1] <= sent.live_ufrag as f64, "{delta:?}");
    assert!(delta[2] <= sent.random as f64, "{delta:?}");
    assert!(delta[3] <= sent.malformed as f64, "{delta:?}");

    // The call goes on after the flood.
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "after the flood: {got} Hz");
    assert_eq!(server.sessions.session_count(), 1);

    // A new call connects through the same port and echoes.
    let (mut signaling2, _) = SignalingClient::announce(&server.grpc_url(), "after-flood").await;
    let mut peer2 = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling2, &mut peer2).await;
    let got = peer2.tone_round_trip(660.0).await;
    assert!((got - 660.0).abs() <= 5.0, "the new call: {got} Hz");

    peer.close().await;
    peer2.close().await;
    server.stop().await;
}
