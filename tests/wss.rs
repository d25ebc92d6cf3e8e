//! `--tls-cert`/`--tls-key` on the HTTP listener: the browser endpoint is HTTPS and its
//! WebSocket is WSS; plain HTTP is refused.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::tls::TestPki;
use common::websocket::WsClient;
use common::TestServer;
use serde_json::json;

async fn tls_server(pki: &TestPki) -> TestServer {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    TestServer::start_with(move |config| {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_client_announces_and_https_serves_the_probes_and_the_page() {
    common::init_tracing();
    let pki = TestPki::new(&[]);
    let server = tls_server(&pki).await;

    let mut client = WsClient::connect_tls(server.http, pki.client_config(&[b"http/1.1"]))
        .await
        .unwrap();
    let result = client
        .call(
            "peer.announce",
            json!({"peer_id": "wss-client", "capabilities": {"audio": true}, "metadata": {}}),
        )
        .await
        .unwrap();
    assert_eq!(result["peer_id"], "wss-client");
    let peers = client.call("peer.list", json!({})).await.unwrap();
    assert!(peers.to_string().contains("wss-client"), "{peers}");

    let health = pki.https_get(server.http, "/healthz").await.unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") || health.starts_with("HTTP/1.0 200"),
        "{health}"
    );
    assert!(health.ends_with("ok\n"), "{health}");
    let page = pki.https_get(server.http, "/").await.unwrap();
    assert!(page.contains("200 OK"), "{page}");
    // The demo page picks wss:// itself when it was loaded over https.
    let script = pki.https_get(server.http, "/app.js").await.unwrap();
    assert!(script.contains("location.protocol === 'https:' ? 'wss' : 'ws'"));

    // Plain HTTP on the TLS port gets no page.
    let plain = common::cluster::try_http_get(server.http, "/healthz").await;
    assert!(
        !plain.unwrap_or_default().contains("ok\n"),
        "plain HTTP was served on the TLS port"
    );
    // And the WSS client is still connected and served.
    let info = client.call("server.info", json!({})).await.unwrap();
    assert_eq!(info["connected_peers"], 1, "{info}");
    server.stop().await;
}
