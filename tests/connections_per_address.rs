//! `--max-connections-per-address`: a client address past the cap has its new connections
//! closed at once, on the gRPC and HTTP listeners together, with or without TLS; a closed one
//! frees its place. Behind `--trusted-proxies` the key is the client a proxy names: the
//! rightmost foreign `X-Forwarded-For` entry for `/ws` (429 past the cap), or the PROXY
//! protocol header with `--proxy-protocol`. Loopback has many addresses (127.0.0.2 is another
//! client). Its own test binary: the limit counter is process-wide, and the tests here run
//! one at a time so each counts its own refusals exactly.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::websocket::Socket;
use common::{metric_value, TestServer, WAIT};
use remotemedia_webrtc::admission::TrustedProxies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;

/// One test at a time: they all move `remotemedia_limit_hits_total{limit="connections_per_address"}`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIMIT: &str = r#"remotemedia_limit_hits_total{limit="connections_per_address"}"#;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// What became of a connection.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// The server speaks on it.
    Served,
    /// The server closed it without a word.
    Closed,
}

/// A gRPC (HTTP/2) server sends its SETTINGS at once; a refused connection ends instead.
async fn grpc_fate(stream: &mut TcpStream) -> Fate {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
        Ok(Ok(n)) if n > 0 => Fate::Served,
        Ok(_) => Fate::Closed,
        Err(_) => panic!("the gRPC listener neither spoke nor closed"),
    }
}

/// An HTTP/1.1 keep-alive GET of /healthz: served (200, and the connection stays), or closed.
async fn http_fate(stream: &mut TcpStream) -> Fate {
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return Fate::Closed;
    }
    let mut response = vec![0u8; 256];
    match tokio::time::timeout(WAIT, stream.read(&mut response)).await {
        Ok(Ok(n)) if n > 0 => {
            let head = String::from_utf8_lossy(&response[..n]);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            Fate::Served
        }
        Ok(_) => Fate::Closed,
        Err(_) => panic!("the HTTP listener neither answered nor closed"),
    }
}

/// `remotemedia_limit_hits_total{limit="connections_per_address"}` scraped over `/metrics`
/// from `from`, after `prefix` (a PROXY header, when the listener wants one).
async fn hits_from(from: &str, http: SocketAddr, prefix: &[u8]) -> f64 {
    let mut stream = connect_from(from, http).await;
    stream.write_all(prefix).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    metric_value(&text, LIMIT).unwrap_or_else(|| panic!("{LIMIT} is not exported"))
}

async fn hits(http: SocketAddr) -> f64 {
    hits_from("127.0.0.9", http, b"").await
}

async fn capped_server(max: usize) -> TestServer {
    TestServer::start_with(|c| c.limits.max_connections_per_address = max).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_an_address_has_its_new_connections_closed() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let server = capped_server(3).await;
    let before = hits(server.http).await;

    // Three connections from 127.0.0.1, counted across both listeners.
    let mut grpc_a = connect_from("127.0.0.1", server.grpc).await;
    assert_eq!(grpc_fate(&mut grpc_a).await, Fate::Served);
    let mut grpc_b = connect_from("127.0.0.1", server.grpc).await;
    assert_eq!(grpc_fate(&mut grpc_b).await, Fate::Served);
    let mut http_a = connect_from("127.0.0.1", server.http).await;
    assert_eq!(http_fate(&mut http_a).await, Fate::Served);

    // A fourth is closed at once, on either listener.
    let mut grpc_c = connect_from("127.0.0.1", server.grpc).await;
    assert_eq!(grpc_fate(&mut grpc_c).await, Fate::Closed);
    let mut http_b = connect_from("127.0.0.1", server.http).await;
    assert_eq!(http_fate(&mut http_b).await, Fate::Closed);

    // Another address has its own count.
    let mut other = connect_from("127.0.0.2", server.grpc).await;
    assert_eq!(grpc_fate(&mut other).await, Fate::Served);
    // The three still work.
    assert_eq!(http_fate(&mut http_a).await, Fate::Served);

    assert_eq!(hits(server.http).await, before + 2.0);

    // Closing one frees its place.
    drop(grpc_a);
    let mut tries = 0;
    loop {
        tries += 1;
        let mut again = connect_from("127.0.0.1", server.grpc).await;
        if grpc_fate(&mut again).await == Fate::Served {
            break;
        }
        assert!(tries < 100, "the closed connection's place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((grpc_b, http_a, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_an_address_is_not_capped() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let before = hits(server.http).await;
    let mut open = Vec::new();
    for _ in 0..40 {
        let mut stream = connect_from("127.0.0.1", server.grpc).await;
        assert_eq!(grpc_fate(&mut stream).await, Fate::Served);
        open.push(stream);
    }
    assert_eq!(hits(server.http).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_applies_before_the_tls_handshake() {
    let _serial = SERIAL.lock().await;
    let pki = common::tls::TestPki::new(&[]);
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let server = TestServer::start_with(move |c| {
        c.limits.max_connections_per_address = 1;
        c.tls.tls_cert = Some(cert);
        c.tls.tls_key = Some(key);
    })
    .await;
    let counted = || {
        let text = remotemedia_webrtc::metrics::metrics().render();
        metric_value(&text, LIMIT).unwrap()
    };
    let before = counted();
    let held = pki
        .tls_connect(server.http)
        .await
        .expect("the first is served");
    let refused = pki.tls_connect(server.http).await;
    assert!(refused.is_err(), "a second TLS connection was served");
    assert_eq!(counted(), before + 1.0);
    drop(held);
}

/// `/ws` with an `X-Forwarded-For` header: the socket, or the HTTP status that refused it.
async fn ws_forwarded(http: SocketAddr, forwarded: &str) -> Result<Socket, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{http}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("/ws failed without an HTTP status: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_quota() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_address = 2;
        c.limits.trusted_proxies = Some(TrustedProxies::parse("127.0.0.1/32").unwrap());
    })
    .await;
    let before = hits(server.http).await;

    // The proxy's own connections are not capped: it carries everyone.
    let mut proxy = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.1", server.grpc).await;
        assert_eq!(grpc_fate(&mut stream).await, Fate::Served);
        proxy.push(stream);
    }

    // Two sockets for the client the proxy names; a third is refused before the upgrade.
    let first = ws_forwarded(server.http, "203.0.113.1").await.unwrap();
    let _second = ws_forwarded(server.http, "203.0.113.1").await.unwrap();
    assert_eq!(
        ws_forwarded(server.http, "203.0.113.1").await.err(),
        Some(429)
    );
    // Another client behind the same proxy has its own quota.
    let _other = ws_forwarded(server.http, "203.0.113.2").await.unwrap();
    // A client cannot pick its key: what it wrote itself is left of what the proxy appended.
    assert_eq!(
        ws_forwarded(server.http, "203.0.113.3, 203.0.113.1")
            .await
            .err(),
        Some(429)
    );
    assert_eq!(hits(server.http).await, before + 2.0);

    // A closed socket frees its place.
    drop(first);
    common::eventually("the closed socket's place is freed", || async {
        match ws_forwarded(server.http, "203.0.113.1").await {
            Ok(_) => true,
            Err(status) => {
                assert_eq!(status, 429);
                false
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_choose_its_key_with_x_forwarded_for() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_address = 2;
        c.limits.trusted_proxies = Some(TrustedProxies::parse("10.0.0.0/8").unwrap());
    })
    .await;
    let before = hits(server.http).await;
    let _a = ws_forwarded(server.http, "203.0.113.1").await.unwrap();
    let _b = ws_forwarded(server.http, "203.0.113.2").await.unwrap();
    // 127.0.0.1 holds two connections, whatever its headers say: the third is closed.
    let mut third = connect_from("127.0.0.1", server.http).await;
    assert_eq!(http_fate(&mut third).await, Fate::Closed);
    assert_eq!(hits(server.http).await, before + 1.0);
}

/// A PROXY protocol v1 line naming `client` (an IPv4 address) as the source.
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").into_bytes()
}

/// A PROXY protocol v2 header naming `client` (an IPv4 address) as the source.
fn proxy_v2(client: &str) -> Vec<u8> {
    use ppp::v2;
    let IpAddr::V4(client) = ip(client) else {
        panic!("an IPv4 address")
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        v2::IPv4::new(client, [127, 0, 0, 1].into(), 40000, 443),
    )
    .build()
    .unwrap()
}

/// A connection from `from` that starts with `header`.
async fn proxied(from: &str, to: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect_from(from, to).await;
    stream.write_all(header).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_protocol_the_header_names_the_client() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_address = 1;
        c.limits.trusted_proxies = Some(TrustedProxies::parse("127.0.0.1").unwrap());
        c.limits.proxy_protocol = true;
    })
    .await;
    let scrape = proxy_v1("192.0.2.200");
    let hits = || hits_from("127.0.0.1", server.http, &scrape);
    let before = hits().await;

    // v2 names 198.51.100.7: served; its second connection is over the cap (v1 or v2 alike).
    let mut a = proxied("127.0.0.1", server.http, &proxy_v2("198.51.100.7")).await;
    assert_eq!(http_fate(&mut a).await, Fate::Served);
    let mut again = proxied("127.0.0.1", server.http, &proxy_v1("198.51.100.7")).await;
    assert_eq!(http_fate(&mut again).await, Fate::Closed);
    // v1 names another client: served, on the HTTP and the gRPC listener.
    let mut b = proxied("127.0.0.1", server.http, &proxy_v1("198.51.100.8")).await;
    assert_eq!(http_fate(&mut b).await, Fate::Served);
    let mut c = proxied("127.0.0.1", server.grpc, &proxy_v2("198.51.100.9")).await;
    assert_eq!(grpc_fate(&mut c).await, Fate::Served);
    let mut c_again = proxied("127.0.0.1", server.grpc, &proxy_v2("198.51.100.9")).await;
    assert_eq!(grpc_fate(&mut c_again).await, Fate::Closed);
    assert_eq!(hits().await, before + 2.0);

    // The proxy without a header: closed (not counted as the cap: no client's connection).
    let mut bare = connect_from("127.0.0.1", server.http).await;
    assert_eq!(http_fate(&mut bare).await, Fate::Closed);
    let mut bare_grpc = connect_from("127.0.0.1", server.grpc).await;
    bare_grpc
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(grpc_fate(&mut bare_grpc).await, Fate::Closed);

    // Anyone else (a kubelet probe, a pod calling the Service) is a client of its own...
    let mut direct = connect_from("127.0.0.2", server.http).await;
    assert_eq!(http_fate(&mut direct).await, Fate::Served);
    // ...whose PROXY header is not believed: counted under 127.0.0.2, over the cap.
    let mut forged = proxied("127.0.0.2", server.http, &proxy_v1("198.51.100.10")).await;
    assert_eq!(http_fate(&mut forged).await, Fate::Closed);
    assert_eq!(hits().await, before + 3.0);
    drop((a, b, c, direct));
}

/// A `Signal` stream request with an `X-Forwarded-For` header, on a raw HTTP/2 connection.
fn signal_forwarded(server: SocketAddr, forwarded: &str) -> http::Request<()> {
    http::Request::post(format!(
        "http://{server}/remotemedia.v1.webrtc.WebRtcSignaling/Signal"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-forwarded-for", forwarded)
    .body(())
    .unwrap()
}

/// Opens a `Signal` stream for the client `forwarded` names: the open stream, or the gRPC
/// status code that refused it.
async fn open_signal(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    server: SocketAddr,
    forwarded: &str,
) -> Result<h2::SendStream<bytes::Bytes>, String> {
    let ready = client.clone().ready().await.unwrap();
    *client = ready;
    let (response, stream) = client
        .send_request(signal_forwarded(server, forwarded), false)
        .unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    match response.headers().get("grpc-status") {
        None => Ok(stream),
        Some(code) => Err(code.to_str().unwrap().to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_http_proxy_each_forwarded_client_has_its_own_signal_streams() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_address = 2;
        c.limits.trusted_proxies = Some(TrustedProxies::parse("127.0.0.1/32").unwrap());
    })
    .await;
    let before = hits(server.http).await;
    // One HTTP/2 connection from the proxy carries every client's streams.
    let tcp = connect_from("127.0.0.1", server.grpc).await;
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();

    let mut first = open_signal(&mut client, server.grpc, "203.0.113.1")
        .await
        .unwrap();
    let _second = open_signal(&mut client, server.grpc, "203.0.113.1")
        .await
        .unwrap();
    // RESOURCE_EXHAUSTED (8) for a third stream of that client, before the stream starts.
    let third = open_signal(&mut client, server.grpc, "203.0.113.1").await;
    assert_eq!(third.err().as_deref(), Some("8"));
    let _other = open_signal(&mut client, server.grpc, "203.0.113.2")
        .await
        .unwrap();
    assert_eq!(hits(server.http).await, before + 1.0);

    // An ended stream frees its place.
    first.send_reset(h2::Reason::CANCEL);
    let mut tries = 0;
    while open_signal(&mut client, server.grpc, "203.0.113.1")
        .await
        .is_err()
    {
        tries += 1;
        assert!(tries < 100, "the ended stream's place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
