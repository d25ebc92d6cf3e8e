//! Ten clients connect, exchange audio and leave: nothing of theirs stays behind.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{health, health_metrics, SignalingClient};
use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clients_leave_no_peer_offer_or_task_behind() {
    common::init_tracing();
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let metrics = tokio::runtime::Handle::current().metrics();
    // Let the server's own tasks (listeners, forwarder) settle before the baseline.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = health(&url).await;
    let baseline = metrics.num_alive_tasks();

    let mut clients = Vec::new();
    for i in 0..10 {
        let (mut signaling, _) = SignalingClient::announce(&url, &format!("client-{i}")).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        clients.push((signaling, peer));
    }
    let status = health(&url).await;
    assert_eq!(status.connected_peers, 10);
    assert_eq!(health_metrics(&status)["sessions"], 10);
    let probe = server.sessions.peer_connection_probe();
    assert_eq!(probe.alive(), 10);

    let sends = clients
        .iter()
        .map(|(_, peer)| peer.send_tone(440.0, 1.0, 20, 0.5));
    futures::future::join_all(sends).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for (i, (_, peer)) in clients.iter().enumerate() {
        let n = peer.received.lock().arrivals.len();
        assert!(n >= 25, "client {i} got {n} packets back");
    }

    for (signaling, peer) in clients {
        peer.close().await;
        signaling.leave().await;
        drop(peer);
    }

    common::eventually("every peer and session to be gone", || {
        let url = url.clone();
        async move {
            let status = health(&url).await;
            let m = health_metrics(&status);
            status.connected_peers == 0 && m["sessions"] == 0 && m["pending_offers"] == 0
        }
    })
    .await;
    common::eventually("server peer connections to be freed", || {
        let alive = probe.alive();
        async move { alive == 0 }
    })
    .await;
    common::eventually("tasks to return to the baseline", || {
        let alive = metrics.num_alive_tasks();
        async move {
            if alive > baseline {
                println!("alive tasks {alive}, baseline {baseline}");
            }
            alive <= baseline
        }
    })
    .await;
}
