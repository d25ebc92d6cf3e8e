//! `--tls-cert`/`--tls-key`: the gRPC signaling listener serves TLS, a client that trusts the
//! CA gets its tone back, a plaintext client fails cleanly and harms nobody.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::tls::TestPki;
use common::{eventually, metric_value, TestServer};
use remotemedia_webrtc::metrics::metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_server(pki: &TestPki) -> TestServer {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    TestServer::start_with(move |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
    })
    .await
}

fn handshakes(listener: &str, result: &str) -> f64 {
    metric_value(
        &metrics().render(),
        &format!("remotemedia_tls_handshakes_total{{listener=\"{listener}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_announces_offers_and_gets_its_tone_back() {
    common::init_tracing();
    let pki = TestPki::new(&[]);
    let server = tls_server(&pki).await;
    let channel = pki.grpc_channel(server.grpc).await.unwrap();
    let signaling = SignalingClient::open_on(channel, None, &[]).await.unwrap();
    let (mut signaling, ack) = signaling.announce_as("tls-client", HashMap::new()).await;
    assert_eq!(ack["peer_id"], "tls-client");
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    println!(
        "over TLS: offer->answer {:.1} ms, offer->connected {:.1} ms",
        report.offer_to_answer.as_secs_f64() * 1000.0,
        report.offer_to_connected.as_secs_f64() * 1000.0
    );
    let frequency = peer.tone_round_trip(440.0).await;
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "dominant frequency {frequency} Hz"
    );
    peer.close().await;
    signaling.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusting_clients_fail_cleanly_and_the_tls_clients_are_served() {
    common::init_tracing();
    let pki = TestPki::new(&[]);
    let server = tls_server(&pki).await;
    // A TLS client is mid-stream while plaintext clients knock.
    let channel = pki.grpc_channel(server.grpc).await.unwrap();
    let (mut before, _) = SignalingClient::open_on(channel, None, &[])
        .await
        .unwrap()
        .announce_as("tls-before", HashMap::new())
        .await;
    // Handshake failures are counted here only (the other tests of this file complete
    // theirs), so the counter must move by exactly the failures made below.
    let failed = handshakes("signaling", "failed");

    // A client verifying against another CA refuses the server itself.
    let stranger = TestPki::new(&[]);
    let refused = stranger.grpc_channel(server.grpc).await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );
    eventually("the refused handshake counted", || async {
        handshakes("signaling", "failed") >= failed + 1.0
    })
    .await;

    // Raw bytes that are not TLS: the server closes the connection.
    let mut raw = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(common::WAIT, raw.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server kept a non-TLS connection open");

    eventually("two failed handshakes counted", || async {
        handshakes("signaling", "failed") >= failed + 2.0
    })
    .await;
    assert_eq!(handshakes("signaling", "failed"), failed + 2.0);

    // A tonic client speaking plaintext HTTP/2: an error, not a hang (it may try more than
    // one connection).
    let plaintext = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await?;
        let mut grpc =
            remotemedia_webrtc::proto::signaling::web_rtc_signaling_client::WebRtcSignalingClient::new(channel);
        grpc.health_check(remotemedia_webrtc::proto::signaling::HealthCheckRequest {})
            .await
            .map(|_| ())
            .map_err(|status| -> Box<dyn std::error::Error> { status.into() })?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let outcome = tokio::time::timeout(common::WAIT, plaintext)
        .await
        .expect("the plaintext client gets an answer, not a hang");
    assert!(outcome.is_err(), "a plaintext call succeeded on a TLS port");

    eventually("the plaintext client's handshakes counted", || async {
        handshakes("signaling", "failed") >= failed + 3.0
    })
    .await;

    // The stream that was open still works, and new TLS clients are served.
    before.health().await;
    let channel = pki.grpc_channel(server.grpc).await.unwrap();
    let (after, ack) = SignalingClient::open_on(channel, None, &[])
        .await
        .unwrap()
        .announce_as("tls-after", HashMap::new())
        .await;
    assert_eq!(ack["peer_id"], "tls-after");
    let others: Vec<&str> = ack["other_peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(others.contains(&"tls-before"), "{ack}");
    after.leave().await;
    before.leave().await;
    server.stop().await;
}
