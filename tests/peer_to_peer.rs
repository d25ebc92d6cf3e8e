//! Two clients find each other, exchange offer/answer/ICE through the server, and connect
//! directly (audio flows between them without touching the server).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{trickle_until_connected, ClientOptions, ClientPeer};
use common::signaling::{health_metrics, SignalingClient};
use common::TestServer;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_connect_directly_through_forwarded_signaling() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut alice, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    let (mut bob, bob_ack) = SignalingClient::announce(&server.grpc_url(), "bob").await;
    assert_eq!(
        bob_ack["peers_count"], 3,
        "bob, alice and the server: {bob_ack}"
    );
    let joined = alice
        .expect_notification(|n| match n {
            Notification::PeerJoined(j) => Some(j.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined.peer_id, "bob");
    assert_eq!(joined.metadata.get("test").map(String::as_str), Some("yes"));

    let audio_only = ClientOptions {
        audio: true,
        data: false,
    };
    let mut alice_peer = ClientPeer::new(audio_only).await;
    let mut bob_peer = ClientPeer::new(audio_only).await;
    let offer_sdp = alice_peer.offer().await;
    let offer = alice.offer("bob", offer_sdp.clone()).await;
    let ack = alice.expect_ack(&offer).await;
    assert_eq!(ack["to_peer_id"], "bob");
    let offer_id = ack["offer_id"].as_str().unwrap().to_owned();

    let forwarded = bob
        .expect_notification(|n| match n {
            Notification::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(forwarded.from_peer_id, "alice");
    assert_eq!(forwarded.offer_id, offer_id);
    assert_eq!(forwarded.sdp, offer_sdp);
    let pending = health_metrics(&alice.health().await)["pending_offers"].clone();
    assert_eq!(pending, 1);

    let answer_sdp = bob_peer.answer_offer(forwarded.sdp).await;
    let answer = bob
        .send(Req::Answer(pb::AnswerRequest {
            to_peer_id: "alice".into(),
            sdp: answer_sdp,
            r#type: "answer".into(),
            offer_id: None,
        }))
        .await;
    bob.expect_ack(&answer).await;
    let answered = alice
        .expect_notification(|n| match n {
            Notification::Answer(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(answered.from_peer_id, "bob");
    alice_peer.accept_answer(answered.sdp).await;
    assert_eq!(health_metrics(&alice.health().await)["pending_offers"], 0);

    trickle_until_connected(
        (&mut alice, &mut alice_peer, "alice"),
        (&mut bob, &mut bob_peer, "bob"),
    )
    .await;

    alice_peer.send_tone(440.0, 0.5, 20, 0.5).await;
    common::eventually("audio from alice to reach bob", || {
        let n = bob_peer.received.lock().arrivals.len();
        async move { n >= 10 }
    })
    .await;
    assert_eq!(
        health_metrics(&alice.health().await)["sessions"],
        0,
        "no server session is involved in a peer-to-peer call"
    );

    bob.close();
    let left = alice
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) => Some(l.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "bob");
    alice_peer.close().await;
    bob_peer.close().await;
}
