//! `--public-ip auto` and `--public-ip node`: the address host candidates advertise,
//! discovered through a STUN server (a tiny responder on 127.0.0.1 here) or read from the
//! Kubernetes node (a mock API server), with the node's host IP as the last resort.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::{IpAddr, SocketAddr};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use remotemedia_webrtc::config::PublicIp;
use remotemedia_webrtc::proto::signaling::signaling_notification::Notification;
use remotemedia_webrtc::public_address::{
    choose_node_address, discover_through_stun, node_external_ip,
};
use serde_json::json;
use tower_test::mock;
use webrtc::stun::message::{Message, BINDING_SUCCESS};
use webrtc::stun::xoraddr::XorMappedAddress;

use common::client::{ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::TestServer;

/// What the STUN responder says every request comes from (a documentation address, so the
/// test knows the answer was read from the response and not from a local interface).
const MAPPED: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)), 40000);

/// A STUN server on 127.0.0.1 answering Binding requests with `MAPPED`.
async fn stun_responder() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut request = Message::new();
            request.raw = buf[..n].to_vec();
            if request.decode().is_err() {
                continue;
            }
            let mut response = Message::new();
            response
                .build(&[
                    Box::new(request.transaction_id),
                    Box::new(BINDING_SUCCESS),
                    Box::new(XorMappedAddress {
                        ip: MAPPED.ip(),
                        port: MAPPED.port(),
                    }),
                ])
                .unwrap();
            let _ = socket.send_to(&response.raw, from).await;
        }
    });
    address
}

/// A UDP port where nothing answers.
async fn silent_server() -> (tokio::net::UdpSocket, SocketAddr) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

#[tokio::test]
async fn auto_takes_the_mapped_address_of_the_first_stun_server_that_answers() {
    let (_silent, silent) = silent_server().await;
    let stun = stun_responder().await;
    let ip = discover_through_stun(&[format!("stun:{silent}"), format!("stun:{stun}")])
        .await
        .unwrap();
    assert_eq!(ip, MAPPED.ip());
}

#[tokio::test]
async fn auto_fails_with_each_servers_reason_when_none_answers() {
    let (_silent, silent) = silent_server().await;
    let err = discover_through_stun(&[format!("stun:{silent}"), "turn:nope".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no answer from") && err.contains("not a stun: URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_public_ip_auto_advertises_the_stun_mapped_address() {
    common::init_tracing();
    let stun = stun_responder().await;
    let server = TestServer::start_with(|config| {
        config.media.public_ip = Some(PublicIp::Stun);
        config.media.stun_servers = vec![format!("stun:{stun}")];
    })
    .await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "stun-client").await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    signaling.offer(SERVER, peer.offer().await).await;
    let candidate = signaling
        .expect_notification(|n| match n {
            Notification::IceCandidate(c) if c.candidate.contains("typ host") => {
                Some(c.candidate.clone())
            }
            _ => None,
        })
        .await;
    let address = candidate.split(' ').nth(4).unwrap();
    assert_eq!(address, MAPPED.ip().to_string(), "{candidate}");
    peer.close().await;
    server.stop().await;
}

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "test"), handle)
}

/// Answers one GET of node `n1` with `status` and `body`.
fn serve_node(mut handle: Handle, status: StatusCode, body: serde_json::Value) {
    tokio::spawn(async move {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/nodes/n1");
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    });
}

fn node(addresses: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "status": {"addresses": addresses},
    })
}

const HOST_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

#[tokio::test]
async fn node_reads_the_external_ip_ipv4_first() {
    let (client, handle) = mock_client();
    serve_node(
        handle,
        StatusCode::OK,
        node(json!([
            {"type": "InternalIP", "address": "10.0.0.5"},
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "2001:db8::5"},
            {"type": "ExternalIP", "address": "198.51.100.5"},
        ])),
    );
    let external = node_external_ip(client, "n1").await;
    assert_eq!(external, Ok(Some("198.51.100.5".parse().unwrap())));
    assert_eq!(
        choose_node_address(external, Some(HOST_IP)).unwrap(),
        "198.51.100.5".parse::<IpAddr>().unwrap()
    );
}

#[tokio::test]
async fn a_node_without_external_ip_falls_back_to_the_host_ip() {
    let (client, handle) = mock_client();
    serve_node(
        handle,
        StatusCode::OK,
        node(json!([{"type": "InternalIP", "address": "10.0.0.5"}])),
    );
    let external = node_external_ip(client, "n1").await;
    assert_eq!(external, Ok(None));
    assert_eq!(
        choose_node_address(external, Some(HOST_IP)).unwrap(),
        HOST_IP
    );
}

#[tokio::test]
async fn a_forbidden_read_falls_back_to_the_host_ip_or_says_why() {
    let forbidden = json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": "nodes \"n1\" is forbidden: User cannot get resource \"nodes\"",
        "reason": "Forbidden", "code": 403,
    });
    let (client, handle) = mock_client();
    serve_node(handle, StatusCode::FORBIDDEN, forbidden.clone());
    let external = node_external_ip(client, "n1").await;
    assert!(
        external.as_ref().unwrap_err().contains("forbidden"),
        "{external:?}"
    );
    assert_eq!(
        choose_node_address(external, Some(HOST_IP)).unwrap(),
        HOST_IP
    );

    let (client, handle) = mock_client();
    serve_node(handle, StatusCode::FORBIDDEN, forbidden);
    let err = choose_node_address(node_external_ip(client, "n1").await, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forbidden") && err.contains("--host-ip"),
        "{err}"
    );
}
