//! Server offers to room participants (#15, item 4) when the client is away or silent: a
//! client whose signaling stream broke gets the pending offer again as soon as it resumes
//! (its answer timer stopped meanwhile), and one that never answers is sent the identical
//! offer once more after 10 s and closed after 10 s more (`answer_timeout`); a client's own
//! offer on its live connection renegotiates it rather than replacing it. About 21 s: the
//! second test waits out both answer timers; the others run beside it.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use common::client::{connect_to_server, spawn_tone, ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::tcp_proxy::TcpProxy;
use common::{eventually, metric_value, TestServer};
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::peer::opus_capability;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use tokio_util::sync::CancellationToken;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

fn in_room(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut metadata = HashMap::from([("room".to_owned(), "retro".to_owned())]);
    for (k, v) in extra {
        metadata.insert((*k).to_owned(), (*v).to_owned());
    }
    metadata
}

/// Waits up to 15 s (longer than an answer timer) for the next server offer.
async fn next_server_offer(signaling: &mut SignalingClient) -> pb::OfferNotification {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = signaling
            .next_within(left)
            .await
            .expect("a server offer within 15 s")
            .expect("signaling stream")
            .expect("signaling open");
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::Offer(offer)),
        })) = response.response
        {
            if offer.from_peer_id == SERVER {
                return offer;
            }
        }
    }
}

/// A participant that publishes a tone and answers nothing by itself.
async fn join(
    url: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> (SignalingClient, ClientPeer, serde_json::Value) {
    let (mut signaling, ack) = SignalingClient::announce_with(url, id, in_room(extra)).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    (signaling, peer, ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_server_offer_is_sent_again_as_soon_as_its_client_resumes() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.id_takeover = false).await;
    let proxy = TcpProxy::start(server.grpc).await;
    let (mut alice, alice_peer, ack) = join(&proxy.url(), "alice", &[]).await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();

    // bob publishes: alice is offered his track, and her stream breaks before she answers.
    let (_bob, bob_peer, _) = join(&server.grpc_url(), "bob", &[]).await;
    let tone = CancellationToken::new();
    spawn_tone(bob_peer.audio.clone().unwrap(), 660.0, tone.clone());
    let first = next_server_offer(&mut alice).await;
    let offered = Instant::now();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // She resumes: the same offer comes again at once, not when its 10 s timer would have
    // resent it.
    let (mut alice, _) = SignalingClient::announce_with(
        &server.grpc_url(),
        "alice",
        in_room(&[("resume_token", &token)]),
    )
    .await;
    let resumed = Instant::now();
    let again = next_server_offer(&mut alice).await;
    let waited = resumed.elapsed();
    assert_eq!(again.offer_id, first.offer_id, "the pending offer, again");
    assert_eq!(again.sdp, first.sdp, "identical");
    assert!(
        waited < Duration::from_secs(3) && offered.elapsed() < Duration::from_secs(8),
        "sent again {waited:?} after the resume ({:?} after the first), before its timer",
        offered.elapsed()
    );

    // Her answer is taken, and bob's tone reaches her.
    let sdp = alice_peer.answer_offer(again.sdp).await;
    let request = alice.answer_server(sdp, Some(again.offer_id)).await;
    alice.expect_ack(&request).await;
    eventually("alice to hear bob", || async {
        alice_peer
            .heard
            .lock()
            .get("bob")
            .is_some_and(|s| s.len() >= 48_000)
    })
    .await;
    let heard = alice_peer.heard.lock().get("bob").cloned().unwrap();
    let frequency = dominant_frequency(&heard[heard.len() - 48_000..], 48_000);
    assert!(
        (frequency - 660.0).abs() <= 10.0,
        "bob's tone: {frequency} Hz"
    );
    tone.cancel();
    alice_peer.close().await;
    bob_peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_gets_the_offer_twice_then_its_session_closes() {
    common::init_tracing();
    let server = TestServer::start().await;
    let closed = "remotemedia_worker_sessions_closed_total{reason=\"answer_timeout\"}";
    let before =
        metric_value(&common::http_get(server.http, "/metrics").await, closed).unwrap_or(0.0);
    let (mut carol, carol_peer, _) = join(&server.grpc_url(), "carol", &[]).await;
    let (_dave, dave_peer, _) = join(&server.grpc_url(), "dave", &[]).await;
    let tone = CancellationToken::new();
    spawn_tone(dave_peer.audio.clone().unwrap(), 880.0, tone.clone());

    let first = next_server_offer(&mut carol).await;
    let sent = Instant::now();
    let second = next_server_offer(&mut carol).await;
    let resent_after = sent.elapsed();
    assert_eq!(second.offer_id, first.offer_id);
    assert_eq!(second.sdp, first.sdp, "the identical offer once more");
    assert!(
        resent_after >= Duration::from_millis(9_500) && resent_after < Duration::from_secs(13),
        "resent after {resent_after:?}, not 10 s"
    );
    // 10 s more: the session closes, counted with its reason.
    loop {
        let metrics = common::http_get(server.http, "/metrics").await;
        if metric_value(&metrics, closed).unwrap_or(0.0) >= before + 1.0 {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "carol's session not closed for answer_timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= Duration::from_millis(19_500),
        "closed {closed_after:?} after the first offer, not 20 s"
    );
    tone.cancel();
    carol_peer.close().await;
    dave_peer.close().await;
    server.stop().await;
}

/// The dominant frequency of the last second of `samples`.
fn last_second(samples: &[f32]) -> f32 {
    dominant_frequency(&samples[samples.len() - 48_000..], 48_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_offer_on_its_live_connection_adds_a_track_without_replacing_it() {
    common::init_tracing();
    let server = TestServer::start().await;
    let replaced = "remotemedia_worker_sessions_closed_total{reason=\"replaced\"}";
    let before =
        metric_value(&common::http_get(server.http, "/metrics").await, replaced).unwrap_or(0.0);
    let (mut alice, alice_peer, _) = join(&server.grpc_url(), "alice", &[]).await;
    let (mut bob, bob_peer, _) = join(&server.grpc_url(), "bob", &[]).await;
    let tones = CancellationToken::new();
    spawn_tone(alice_peer.audio.clone().unwrap(), 440.0, tones.clone());
    spawn_tone(bob_peer.audio.clone().unwrap(), 660.0, tones.clone());
    // Each answers the server's offer of the other's microphone.
    for (signaling, peer) in [(&mut alice, &alice_peer), (&mut bob, &bob_peer)] {
        let offer = next_server_offer(signaling).await;
        let sdp = peer.answer_offer(offer.sdp).await;
        let request = signaling.answer_server(sdp, Some(offer.offer_id)).await;
        signaling.expect_ack(&request).await;
    }

    // alice adds a second audio track (a screen share's sound) and offers on her connection.
    let screen = Arc::new(TrackLocalStaticRTP::new(
        opus_capability(),
        "screen".into(),
        "alice".into(),
    ));
    alice_peer
        .pc
        .add_track(Arc::clone(&screen) as Arc<dyn TrackLocal + Send + Sync>)
        .await
        .unwrap();
    let offer = alice_peer.offer().await;
    alice.offer(SERVER, offer).await;
    let answer = alice
        .expect_notification(|n| match n {
            Notification::Answer(answer) if answer.from_peer_id == SERVER => Some(answer.clone()),
            _ => None,
        })
        .await;
    assert!(
        answer.sdp.contains("a=msid:bob "),
        "the answer names bob's forwarded line: {}",
        answer.sdp
    );
    alice_peer.accept_answer(answer.sdp).await;
    spawn_tone(Arc::clone(&screen), 550.0, tones.clone());

    // bob is offered alice's new track and hears it, beside her microphone.
    let offer = next_server_offer(&mut bob).await;
    assert!(offer.sdp.contains("a=msid:alice screen"), "{}", offer.sdp);
    let sdp = bob_peer.answer_offer(offer.sdp).await;
    let request = bob.answer_server(sdp, Some(offer.offer_id)).await;
    bob.expect_ack(&request).await;
    eventually("bob to hear alice's screen", || async {
        bob_peer
            .heard_tracks
            .lock()
            .get("alice screen")
            .is_some_and(|s| s.len() >= 48_000)
    })
    .await;
    let heard = bob_peer.heard_tracks.lock().clone();
    let screen_hz = last_second(&heard["alice screen"]);
    assert!(
        (screen_hz - 550.0).abs() <= 10.0,
        "alice's screen at {screen_hz} Hz"
    );
    let mic = heard
        .iter()
        .find(|(k, _)| k.starts_with("alice ") && *k != "alice screen")
        .map(|(_, v)| last_second(v))
        .unwrap();
    assert!(
        (mic - 440.0).abs() <= 10.0,
        "alice's microphone at {mic} Hz"
    );

    // Her session was renegotiated, not replaced: she still hears bob.
    let heard_bob = alice_peer.heard.lock().get("bob").map_or(0, Vec::len);
    eventually("alice to go on hearing bob", || async {
        alice_peer
            .heard
            .lock()
            .get("bob")
            .is_some_and(|s| s.len() >= heard_bob + 48_000)
    })
    .await;
    let after =
        metric_value(&common::http_get(server.http, "/metrics").await, replaced).unwrap_or(0.0);
    assert_eq!(after, before, "no session was replaced");
    tones.cancel();
    alice_peer.close().await;
    bob_peer.close().await;
    server.stop().await;
}
