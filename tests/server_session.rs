//! Server sessions: trickle ICE both ways, early candidates, re-offers, the connect timeout,
//! and the data channel through the loopback pipeline.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::client::{connect_to_server, connect_with_data_channel, ClientOptions, ClientPeer};
use common::signaling::{health_metrics, SignalingClient, SERVER};
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer, JsonData, TextBuffer};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_carries_the_host_candidates_and_trickled_ones_still_connect() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "trickle").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    // Host-only gathering is immediate: the answer waits for it (tests/answer_candidates.rs
    // connects from the answer alone); the candidates trickle as well, harmless duplicates.
    assert!(
        report.answer_claimed_end_of_candidates,
        "the answer did not say gathering was complete"
    );
    assert!(
        !report.answer_candidates.is_empty(),
        "no candidate in the answer"
    );
    assert!(uuid_like(&report.offer_id), "offer id {}", report.offer_id);
    println!(
        "offer->answer {:.1} ms, offer->connected {:.1} ms",
        report.offer_to_answer.as_secs_f64() * 1000.0,
        report.offer_to_connected.as_secs_f64() * 1000.0
    );
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_sent_before_the_offer_are_buffered_and_used() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "early").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let offer_sdp = peer.offer().await;
    assert!(
        !offer_sdp.contains("a=candidate"),
        "the offer must carry no candidates"
    );
    tokio::time::timeout(common::WAIT, peer.gathering_done.wait_for(|done| *done))
        .await
        .unwrap()
        .unwrap();
    let mut sent = 0;
    while let Ok(candidate) = peer.candidates.try_recv() {
        let real = candidate.as_ref().is_some_and(|c| !c.candidate.is_empty());
        let id = signaling.candidate(SERVER, candidate).await;
        signaling.expect_ack(&id).await;
        sent += usize::from(real);
    }
    assert!(sent >= 1, "the client gathered no candidate");

    let offer = signaling.offer(SERVER, offer_sdp).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !peer.is_connected() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("did not connect with early candidates"),
            _ = peer.state.changed() => {}
            r = signaling.next() => {
                let r = r.unwrap().unwrap();
                match r.response {
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Answer(a)) })) => peer.accept_answer(a.sdp).await,
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) => peer.add_remote_candidate(&c).await,
                    Some(Resp::Error(e)) => panic!("{e:?}"),
                    Some(Resp::Ack(_)) => assert_eq!(r.request_id, offer),
                    _ => {}
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_offer_replaces_the_old_session() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "reoffer").await;
    let mut first = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut first).await;
    let mut second = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut second).await;
    assert_eq!(health_metrics(&signaling.health().await)["sessions"], 1);
    second.send_tone(440.0, 0.5, 20, 0.5).await;
    common::eventually("audio on the new session", || {
        let n = second.received.lock().arrivals.len();
        async move { n >= 10 }
    })
    .await;
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_is_closed_and_the_client_told() {
    common::init_tracing();
    let server =
        TestServer::start_with(|c| c.media.connect_timeout = Duration::from_millis(800)).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "silent").await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    signaling.expect_ack(&offer).await;
    assert_eq!(health_metrics(&signaling.health().await)["sessions"], 1);
    // The client never applies the answer nor sends candidates.
    let gone = signaling
        .expect_notification(|n| match n {
            Notification::PeerDisconnected(d) => Some(d.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(gone, SERVER);
    assert_eq!(health_metrics(&signaling.health().await)["sessions"], 0);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_buffers_come_back_unchanged_through_the_loopback_pipeline() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (_signaling, mut peer, channel) =
        connect_with_data_channel(&server.grpc_url(), "data").await;

    let text = DataBuffer {
        data_type: Some(DataType::Text(TextBuffer {
            text_data: "hello, pipeline".as_bytes().to_vec(),
            encoding: "utf-8".into(),
            language: "en".into(),
            ..Default::default()
        })),
        metadata: [("sequence".to_owned(), "1".to_owned())].into(),
    };
    let json = DataBuffer {
        data_type: Some(DataType::Json(JsonData {
            json_payload: r#"{"operation":"add","operands":[2,3]}"#.into(),
            schema_type: "calc".into(),
        })),
        metadata: [("sequence".to_owned(), "2".to_owned())].into(),
    };
    for buffer in [&text, &json] {
        channel
            .send(&bytes::Bytes::from(buffer.encode_to_vec()))
            .await
            .unwrap();
    }
    let mut back = Vec::new();
    for _ in 0..2 {
        let bytes = tokio::time::timeout(common::WAIT, peer.messages.recv())
            .await
            .expect("a DataBuffer came back")
            .unwrap();
        back.push(DataBuffer::decode(bytes).expect("a DataBuffer"));
    }
    assert_eq!(back, vec![text, json]);
    peer.close().await;
}
