//! Two replicas sharing a real Redis (127.0.0.1:6379): any replica serves any client, peer ids
//! are unique across both, and offers, answers and candidates reach a peer on the other one.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{health_metrics, SignalingClient};
use common::TestServer;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
};
use tonic::Code;

const REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix of this test alone, so tests share the Redis without seeing each other.
fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rm-test-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn replica(prefix: &str) -> TestServer {
    TestServer::start_with(|c| {
        c.redis_url = Some(REDIS.into());
        c.redis_prefix = prefix.into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_two_replicas_find_and_call_each_other() {
    common::init_tracing();
    let prefix = prefix();
    let (a, b) = (replica(&prefix).await, replica(&prefix).await);
    let (mut alice, _) = SignalingClient::announce(&a.grpc_url(), "alice").await;
    let (mut bob, bob_ack) = SignalingClient::announce(&b.grpc_url(), "bob").await;
    assert_eq!(
        bob_ack["other_peers"],
        serde_json::json!(["remotemedia-server", "alice"])
    );
    let joined = alice
        .expect_notification(|n| match n {
            Notification::PeerJoined(j) => Some(j.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined, "bob");

    // The same id on the other replica is taken.
    let mut twin = SignalingClient::open(&b.grpc_url()).await;
    twin.send(Req::Announce(pb::AnnounceRequest {
        peer_id: "alice".into(),
        ..Default::default()
    }))
    .await;
    assert_eq!(twin.expect_status().await.code(), Code::AlreadyExists);

    // Offer, answer and a candidate cross replicas.
    let sdp =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let offer = alice.offer("bob", sdp).await;
    let offer_id = alice.expect_ack(&offer).await["offer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = bob
        .expect_notification(|n| match n {
            Notification::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (received.from_peer_id.as_str(), received.offer_id.as_str()),
        ("alice", offer_id.as_str())
    );
    assert_eq!(health_metrics(&alice.health().await)["pending_offers"], 1);
    let answer = bob
        .send(Req::Answer(pb::AnswerRequest {
            to_peer_id: "alice".into(),
            sdp: sdp.into(),
            r#type: "answer".into(),
            offer_id: None,
        }))
        .await;
    bob.expect_ack(&answer).await;
    let answered = alice
        .expect_notification(|n| match n {
            Notification::Answer(a) => Some(a.from_peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(answered, "bob");
    assert_eq!(health_metrics(&bob.health().await)["pending_offers"], 0);
    let candidate = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";
    let ice = bob
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: "alice".into(),
            candidate: candidate.into(),
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        }))
        .await;
    bob.expect_ack(&ice).await;
    let got = alice
        .expect_notification(|n| match n {
            Notification::IceCandidate(c) => Some(c.candidate.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, candidate);

    // A server session on replica A still works with its candidates delivered through Redis.
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut alice, &mut peer).await;
    peer.send_tone(440.0, 0.4, 20, 0.5).await;
    common::eventually("audio back through replica A", || {
        let n = peer.received.lock().arrivals.len();
        async move { n >= 10 }
    })
    .await;

    // Leaving on B is seen on A; the id is free again.
    bob.close();
    let left = alice
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) => Some(l.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "bob");
    let (_bob_again, _) = SignalingClient::announce(&a.grpc_url(), "bob").await;
    peer.close().await;
}

#[tokio::test]
async fn a_server_whose_redis_is_unreachable_refuses_to_start() {
    let mut config = remotemedia_webrtc::config::Config::local_test();
    config.redis_url = Some("redis://127.0.0.1:1".into());
    let err = remotemedia_webrtc::server::Server::bind(&config)
        .await
        .err()
        .expect("bind fails without Redis")
        .to_string();
    assert!(err.contains("redis://127.0.0.1:1"), "{err}");
}
