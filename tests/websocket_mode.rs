//! `--mode websocket`: a second server joins the first one's `/ws` as peer `remotemedia-b`; a
//! gRPC client of the first offers to that peer id and gets its 440 Hz tone back; the media
//! survives a restart of the signaling server, and B announces itself again.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::config::{Config, Mode};
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use remotemedia_webrtc::signaling::SessionHost;
use remotemedia_webrtc::websocket_mode::WebSocketPeer;

const B: &str = "remotemedia-b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_mode_server_answers_offers_relayed_by_another_server() {
    common::init_tracing();
    let signaling = TestServer::start().await;
    let mut config = Config::local_test();
    config.mode = Mode::Websocket;
    config.signaling_url = Some(format!("ws://{}/ws", signaling.http));
    config.peer_id = Some(B.into());
    let b = WebSocketPeer::bind(&config).await.unwrap();
    let b_sessions = b.sessions();
    let (stop_b, stopped) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn(b.run(async move {
        let _ = stopped.await;
    }));

    let (mut client, _) = SignalingClient::announce(&signaling.grpc_url(), "caller").await;
    let grpc = client.grpc.clone();
    common::eventually("B announced on A", || {
        let mut grpc = grpc.clone();
        async move {
            let peers = grpc
                .get_peers(pb::GetPeersRequest {})
                .await
                .unwrap()
                .into_inner();
            peers.peers.iter().any(|p| p.peer_id == B)
        }
    })
    .await;

    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let sdp = peer.offer().await;
    client.offer(B, sdp).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !peer.is_connected() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("connecting to {B} timed out"),
            _ = peer.state.changed() => {}
            Some(candidate) = peer.candidates.recv() => {
                client.candidate(B, candidate).await;
            }
            response = client.next() => {
                let response = response.unwrap().unwrap();
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Answer(a)) })) => {
                        assert_eq!(a.from_peer_id, B);
                        peer.accept_answer(a.sdp).await;
                    }
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) => {
                        assert_eq!(c.from_peer_id, B);
                        peer.add_remote_candidate(&c).await;
                    }
                    Some(Resp::Error(err)) => panic!("signaling error {err:?}"),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(signaling.sessions.session_count(), 0, "A holds no media");
    assert_eq!(b_sessions.session_count(), 1);

    // One continuous tone (the harness restarts RTP sequence numbers per call) while the
    // signaling server goes away after 1.5 s: the media session lives on.
    let (grpc_address, http_address) = (signaling.grpc, signaling.http);
    let received = std::sync::Arc::clone(&peer.received);
    let outage = async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        drop(client);
        signaling.stop().await;
        let before = received.lock().samples.len();
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        received.lock().samples.len() - before
    };
    let ((), during_outage) = tokio::join!(peer.send_tone(440.0, 3.5, 20, 0.5), outage);
    assert!(
        during_outage >= 48_000,
        "only {during_outage} samples came back without signaling"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let samples = peer.received.lock().samples.clone();
    let frequency = dominant_frequency(&samples[9_600..9_600 + 48_000], 48_000);
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "dominant frequency {frequency} Hz"
    );
    let late = &samples[samples.len() - 48_000..];
    let frequency = dominant_frequency(late, 48_000);
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "during the outage: {frequency} Hz"
    );
    assert!(peer.is_connected());
    assert_eq!(b_sessions.session_count(), 1);

    // It comes back on the same addresses: B announces itself again.
    let signaling = TestServer::start_with(|c| {
        c.grpc_address = grpc_address;
        c.http_address = http_address;
    })
    .await;
    let grpc = SignalingClient::announce(&signaling.grpc_url(), "caller-2")
        .await
        .0
        .grpc;
    common::eventually("B announced again", || {
        let mut grpc = grpc.clone();
        async move {
            let peers = grpc
                .get_peers(pb::GetPeersRequest {})
                .await
                .unwrap()
                .into_inner();
            peers.peers.iter().any(|p| p.peer_id == B)
        }
    })
    .await;

    peer.close().await;
    let _ = stop_b.send(());
    b_task.await.unwrap().unwrap();
    signaling.stop().await;
}
