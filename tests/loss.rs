//! Under 5 % loss and 10 % reordering of the client's RTP, the audio that comes back has no
//! gap, the server conceals what was lost, and the call record shows the loss.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::client::{ClientOptions, ClientPeer};
use common::relay::{connect_via_relay, Impairment};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::signaling::SessionHost;
use std::sync::atomic::Ordering;

const PEER: &str = "lossy-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_reordered_packets_are_concealed_without_gaps() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), PEER).await;
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    let relay = connect_via_relay(
        &mut signaling,
        &mut peer,
        Impairment {
            drop: 0.05,
            delay: 0.10,
            max_delay: Duration::from_millis(40),
            seed: 7,
        },
    )
    .await;

    peer.send_tone(440.0, 5.0, 20, 0.5).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let dropped = relay.stats.dropped.load(Ordering::Relaxed);
    let delayed = relay.stats.delayed.load(Ordering::Relaxed);
    let live = server
        .sessions
        .session_stats(PEER)
        .await
        .expect("session alive");
    let jb = live.jitter;
    println!(
        "relay: {} client RTP, dropped {dropped}, delayed {delayed}; server: {jb:?}",
        relay.stats.client_rtp.load(Ordering::Relaxed)
    );
    assert!(dropped >= 5, "the relay dropped only {dropped} packets");
    // Losses seen by the server are exactly the sequence numbers the relay dropped (the
    // first or last packet may be the one dropped, which no receiver can count).
    assert!(
        jb.lost.abs_diff(dropped) <= 1,
        "lost {} vs dropped {dropped}",
        jb.lost
    );
    let handled = jb.concealed + jb.fec_recovered;
    // Every dropped packet is concealed or rebuilt; late ones too, plus at most 5 slots of
    // tail concealment after the tone ends.
    assert!(
        handled + 1 >= dropped && handled <= dropped + jb.late + 5,
        "concealed {} + FEC {} for {dropped} dropped, {} late",
        jb.concealed,
        jb.fec_recovered,
        jb.late
    );

    {
        let received = peer.received.lock();
        assert!(
            received.arrivals.len() >= 200,
            "{} packets came back",
            received.arrivals.len()
        );
        let max_gap = received
            .arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap();
        println!(
            "{} packets back, max gap {:.1} ms",
            received.arrivals.len(),
            max_gap.as_secs_f64() * 1000.0
        );
        assert!(max_gap <= Duration::from_millis(60), "gap of {max_gap:?}");
        for pair in received.timestamps.windows(2) {
            assert_eq!(
                pair[1].wrapping_sub(pair[0]),
                960,
                "a hole in the timestamps"
            );
        }
    }

    assert!(server.sessions.close_session(PEER).await);
    let record = server
        .sessions
        .last_call_records()
        .into_iter()
        .rfind(|r| r.peer_id == PEER)
        .expect("a call record for the closed session");
    assert_eq!(record.reason, "closed by the client");
    assert!(
        record.stats.jitter.lost.abs_diff(dropped) <= 1,
        "call record: {record:?}"
    );
    assert!(record.stats.packets_out >= 200, "call record: {record:?}");
    assert!(
        record.stats.jitter.received >= 200,
        "call record: {record:?}"
    );
}
