//! A local cluster of real processes: a private Redis, frontends, media workers and
//! controllers (`--discovery redis`). Clients connect through the frontends; their media goes
//! to the workers directly over loopback UDP.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::client::{call_directly, connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, try_http_get, Node, RedisProcess};
use common::signaling::{
    drain_notifications, expect_numbered_candidates, send_numbered_candidates, SignalingClient,
    SERVER,
};
use common::tcp_proxy::TcpProxy;
use common::{metric_value, WAIT};
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use remotemedia_webrtc::proto::worker::{
    self as worker_pb, media_worker_client::MediaWorkerClient,
};

/// Announces `id` on `frontend` and connects a client peer to a server session.
async fn call(frontend: &Node, id: &str) -> (SignalingClient, ClientPeer) {
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), id).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    (signaling, peer)
}

/// The dominant frequency of what came back, skipping the codec's start-up.
fn returned_frequency(peer: &ClientPeer) -> Option<f32> {
    let received = peer.received.lock();
    let steady = received.samples.get(4_800..4_800 + 19_200)?;
    Some(dominant_frequency(steady, 48_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_calls_through_two_frontends_spread_over_three_workers() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b", "worker-c"] {
        workers.push(Node::worker(name, &url, &["--capacity", "20"]).await);
    }
    let _controller = Node::start("controller", "controller", &url, &[]).await;
    let frontends = [
        Node::start("frontend-1", "frontend", &url, &[]).await,
        Node::start("frontend-2", "frontend", &url, &[]).await,
    ];
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 3.0)
            .await;
    }

    let mut calls = Vec::new();
    let started = Instant::now();
    for i in 0..30 {
        calls.push(call(&frontends[i % 2], &format!("client-{i}")).await);
    }
    println!(
        "30 calls set up through 2 frontends in {:?}",
        started.elapsed()
    );

    // Each client sends its own tone: what comes back must be its own.
    let tone = |i: usize| 300.0 + 20.0 * i as f32;
    futures::future::join_all(
        calls
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| peer.send_tone(tone(i), 0.8, 20, 0.5)),
    )
    .await;
    for (i, (_, peer)) in calls.iter().enumerate() {
        common::eventually(&format!("client-{i}'s tone to come back"), || {
            let n = peer.received.lock().samples.len();
            async move { n >= 4_800 + 19_200 }
        })
        .await;
    }
    for (i, (_, peer)) in calls.iter().enumerate() {
        let frequency = returned_frequency(peer)
            .unwrap_or_else(|| panic!("client-{i}: too little audio came back"));
        // Tones are 20 Hz apart: the closest of all 30 must be this client's own, not a
        // neighbour's (a concealed packet under load may pull the peak a few Hz).
        let closest = (0..30)
            .min_by(|&x, &y| {
                (frequency - tone(x))
                    .abs()
                    .total_cmp(&(frequency - tone(y)).abs())
            })
            .unwrap();
        assert_eq!(
            closest,
            i,
            "client-{i} sent {} Hz and got {frequency} Hz back",
            tone(i)
        );
    }

    let mut spread = Vec::new();
    for worker in &workers {
        spread.push(worker.sessions_active().await);
    }
    println!("sessions per worker: {spread:?}");
    assert_eq!(spread.iter().sum::<f64>(), 30.0, "{spread:?}");
    assert!(
        spread.iter().all(|n| (1.0..=15.0).contains(n)),
        "uneven spread {spread:?}"
    );

    // Two clients on different frontends call each other directly.
    let (mut alice, _) = SignalingClient::announce(&frontends[0].grpc_url(), "alice").await;
    let (mut bob, _) = SignalingClient::announce(&frontends[1].grpc_url(), "bob").await;
    let audio_only = ClientOptions {
        audio: true,
        data: false,
    };
    let mut alice_peer = ClientPeer::new(audio_only).await;
    let mut bob_peer = ClientPeer::new(audio_only).await;
    call_directly(
        (&mut alice, &mut alice_peer, "alice"),
        (&mut bob, &mut bob_peer, "bob"),
    )
    .await;
    alice_peer.send_tone(440.0, 0.4, 20, 0.5).await;
    common::eventually("alice's audio to reach bob", || {
        let n = bob_peer.received.lock().arrivals.len();
        async move { n >= 10 }
    })
    .await;

    // Sessions end when their clients leave: the workers empty.
    for (signaling, peer) in &mut calls {
        signaling.close();
        peer.close().await;
    }
    for worker in &workers {
        worker
            .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
            .await;
    }
}

/// Waits for `PeerDisconnected{remotemedia-server}` on `signaling`.
async fn expect_server_gone(signaling: &mut SignalingClient, within: Duration) -> Duration {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let response = tokio::select! {
            r = signaling.next() => r.unwrap().unwrap(),
            _ = tokio::time::sleep_until(deadline) => panic!("no PeerDisconnected within {within:?}"),
        };
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::PeerDisconnected(d)),
        })) = response.response
        {
            assert_eq!(d.peer_id, SERVER);
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_gets_no_new_sessions_and_its_clients_are_told() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut workers = [
        Node::worker("worker-a", &url, &[]).await,
        Node::worker("worker-b", &url, &[]).await,
    ];
    // No controller: the frontend places from heartbeats alone.
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 2.0)
        .await;

    let (mut signaling, peer) = call(&frontend, "victim").await;
    let holder = if workers[0].sessions_active().await == 1.0 {
        0
    } else {
        1
    };
    assert_eq!(workers[holder].sessions_active().await, 1.0);
    let killed = Instant::now();
    workers[holder].kill9();

    frontend
        .wait_metric(
            "remotemedia_frontend_workers_available",
            Duration::from_secs(6),
            |n| n == 1.0,
        )
        .await;
    println!("dead worker out of placement after {:?}", killed.elapsed());
    let told = expect_server_gone(&mut signaling, Duration::from_secs(10)).await;
    println!(
        "client told its session ended {:?} after the kill",
        killed.elapsed()
    );
    assert!(told < Duration::from_secs(10));
    peer.close().await;

    // A new offer from the same client succeeds, on the surviving worker.
    let mut again = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut again).await;
    again.expect_tone_back(523.0).await;
    assert_eq!(workers[1 - holder].sessions_active().await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_worker_drains_its_calls_then_exits() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut worker = Node::worker("worker-a", &url, &["--drain-timeout", "60s"]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (mut signaling, peer) = call(&frontend, "caller").await;

    worker.sigterm();
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = try_http_get(worker.http, "/readyz")
            .await
            .unwrap_or_default();
        if ready.starts_with("HTTP/1.0 503") || ready.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(Instant::now() < deadline, "readiness still passes: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = try_http_get(worker.http, "/healthz")
        .await
        .unwrap_or_default();
    assert!(
        live.contains(" 200 "),
        "liveness must pass while draining: {live}"
    );

    // The call goes on.
    peer.expect_tone_back(660.0).await;

    // No new session is placed on it.
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 0.0)
        .await;
    let (mut other, _) = SignalingClient::announce(&frontend.grpc_url(), "latecomer").await;
    let late = ClientPeer::new(ClientOptions::default()).await;
    let offer = other.offer(SERVER, late.offer().await).await;
    let error = other.expect_error(&offer).await;
    assert_eq!(error.code, tonic::Code::Unavailable as u32, "{error:?}");
    assert!(error.message.contains("worker"), "{}", error.message);
    assert!(!worker.has_exited());

    // The last call ends: the worker exits.
    let disconnect = signaling
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: SERVER.into(),
        }))
        .await;
    signaling.expect_ack(&disconnect).await;
    let deadline = Instant::now() + WAIT;
    while !worker.has_exited() {
        assert!(Instant::now() < deadline, "the drained worker did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_place_without_a_controller_and_after_redis_restarts() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let _worker = Node::worker("worker-a", &url, &[]).await;
    let mut controller = Node::start("controller", "controller", &url, &[]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    controller
        .wait_metric("remotemedia_controller_leader", WAIT, |n| n == 1.0)
        .await;
    let (_first, _first_peer) = call(&frontend, "first").await;

    controller.kill9();
    let (_second, _second_peer) = call(&frontend, "second").await;

    redis.restart();
    let restarted = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if try_place(&frontend, &format!("after-restart-{attempt}")).await {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no session placed within 10 s of a Redis restart; frontend log:\n{}",
            frontend.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "sessions place again {:?} after the Redis restart",
        restarted.elapsed()
    );
    assert!(!frontend.log_text().contains("panicked"));
}

/// Announces `id` and offers to the server; whether an answer came (any refusal: false).
async fn try_place(frontend: &Node, id: &str) -> bool {
    let mut signaling = SignalingClient::open(&frontend.grpc_url()).await;
    let announce = signaling
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: id.into(),
            ..Default::default()
        }))
        .await;
    let Ok(Some(first)) = signaling.next().await else {
        return false;
    };
    if first.request_id != announce || !matches!(first.response, Some(Resp::Ack(_))) {
        return false;
    }
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    loop {
        let Ok(Some(response)) = signaling.next().await else {
            return false;
        };
        match response.response {
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::Answer(_)),
            })) => return true,
            Some(Resp::Error(_)) if response.request_id == offer => return false,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_controllers_leads_and_the_other_takes_over() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let _worker = Node::worker("worker-a", &url, &[]).await;
    let mut controllers = vec![
        Node::start("controller-1", "controller", &url, &[]).await,
        Node::start("controller-2", "controller", &url, &[]).await,
    ];
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let table =
        |json: Option<String>| -> Option<serde_json::Value> { serde_json::from_str(&json?).ok() };

    let deadline = Instant::now() + WAIT;
    let (leader, term) = loop {
        let json: Option<String> = redis::cmd("GET")
            .arg("rm:placement")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(t) = table(json) {
            if t["workers"].as_array().is_some_and(|w| w.len() == 1) {
                break (
                    t["leader"].as_str().unwrap().to_owned(),
                    t["term"].as_u64().unwrap(),
                );
            }
        }
        assert!(Instant::now() < deadline, "no placement table");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut leaders = Vec::new();
    for c in &controllers {
        leaders
            .push(metric_value(&c.metrics().await, "remotemedia_controller_leader").unwrap_or(0.0));
    }
    assert_eq!(
        leaders.iter().sum::<f64>(),
        1.0,
        "exactly one leader: {leaders:?}"
    );
    let leading = leaders.iter().position(|&l| l == 1.0).unwrap();
    assert!(controllers[leading].log_text().contains(&leader));

    controllers[leading].kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(10);
    loop {
        let json: Option<String> = redis::cmd("GET")
            .arg("rm:placement")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(t) = table(json) {
            if t["leader"].as_str() != Some(leader.as_str()) {
                assert!(
                    t["term"].as_u64().unwrap() > term,
                    "a new leader has a higher term"
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "no takeover within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the standby controller took over {:?} after the leader was killed",
        killed.elapsed()
    );
    let standby = &controllers[1 - leading];
    assert_eq!(
        metric_value(&standby.metrics().await, "remotemedia_controller_leader"),
        Some(1.0)
    );
}

fn with_token(token: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("resume_token".to_owned(), token.to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_on_the_other_frontend_and_misses_nothing() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let _worker = Node::worker("worker-a", &url, &[]).await;
    // Without takeover, so that the id is taken during the grace (tests/id_takeover.rs has
    // the default, where a stream without the token takes it over).
    let no_takeover = ["--id-takeover=false"];
    let frontends = [
        Node::start("frontend-1", "frontend", &url, &no_takeover).await,
        Node::start("frontend-2", "frontend", &url, &no_takeover).await,
    ];
    frontends[0]
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let proxy = TcpProxy::start(frontends[0].grpc).await;
    let (mut alice, ack) = SignalingClient::announce(&proxy.url(), "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    let (mut bob, _) = SignalingClient::announce(&frontends[1].grpc_url(), "bob").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice, &mut peer).await;
    drain_notifications(&mut bob, Duration::from_millis(200)).await;

    proxy.cut();
    peer.expect_tone_back(500.0).await;
    send_numbered_candidates(&mut bob, "alice", 100).await;
    let mut impostor = SignalingClient::open(&frontends[1].grpc_url()).await;
    impostor
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "alice".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        impostor.expect_status().await.code(),
        tonic::Code::AlreadyExists
    );

    let (mut alice, _) =
        SignalingClient::announce_with(&frontends[1].grpc_url(), "alice", with_token(&token)).await;
    expect_numbered_candidates(&mut alice, "bob", 100).await;
    peer.expect_tone_back(700.0).await;
    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(300)).await;
    assert!(
        !bob_saw
            .iter()
            .any(|n| matches!(n, Notification::PeerLeft(l) if l.peer_id == "alice")),
        "no PeerLeft during a resume: {bob_saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_crashed_frontend_resume_on_another_within_the_grace() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let _worker = Node::worker("worker-a", &url, &[]).await;
    let grace = ["--resume-grace", "20s"];
    let mut crashing = Node::start("frontend-1", "frontend", &url, &grace).await;
    let survivor = Node::start("frontend-2", "frontend", &url, &grace).await;
    crashing
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (mut alice, ack) = SignalingClient::announce(&crashing.grpc_url(), "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice, &mut peer).await;
    // Carol, on the same frontend, never comes back; Bob watches from the other one.
    let (_carol, _) = SignalingClient::announce(&crashing.grpc_url(), "carol").await;
    let (mut bob, _) = SignalingClient::announce(&survivor.grpc_url(), "bob").await;

    crashing.kill9();
    let crashed = Instant::now();
    // The resumed stream must stay open: closing it is leaving.
    let (_resumed, resumed_after) = loop {
        let mut attempt = SignalingClient::open(&survivor.grpc_url()).await;
        let announce = attempt
            .send(Req::Announce(pb::AnnounceRequest {
                peer_id: "alice".into(),
                metadata: with_token(&token),
                ..Default::default()
            }))
            .await;
        match attempt.next().await {
            Ok(Some(response)) if response.request_id == announce => {
                break (attempt, crashed.elapsed())
            }
            Ok(_) => panic!("unexpected reply to a resume"),
            Err(status) => assert_eq!(status.code(), tonic::Code::AlreadyExists),
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(15),
            "alice could not resume within 15 s of her frontend's crash"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("resumed on the surviving frontend {resumed_after:?} after the crash");
    peer.expect_tone_back(600.0).await;

    // Carol's grace runs out: then, and only then, PeerLeft.
    let left_after = loop {
        let response = bob
            .next_within(Duration::from_secs(40))
            .await
            .expect("no PeerLeft for carol within 40 s")
            .unwrap()
            .unwrap();
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::PeerLeft(left)),
        })) = response.response
        {
            assert_eq!(left.peer_id, "carol", "alice resumed: only carol leaves");
            break crashed.elapsed();
        }
    };
    println!("PeerLeft for the peer that did not resume {left_after:?} after the crash");
    assert!(
        left_after >= Duration::from_secs(20),
        "PeerLeft before the grace ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_request_from_the_controller_moves_new_sessions_elsewhere() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let workers = [
        Node::worker("worker-a", &url, &[]).await,
        Node::worker("worker-b", &url, &[]).await,
    ];
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 2.0)
        .await;
    let (_first, first_peer) = call(&frontend, "before-drain").await;

    // What the autoscaler writes before it scales worker-a away.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("rm:drain:worker-a")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    workers[0]
        .wait_metric("remotemedia_worker_draining", WAIT, |n| n == 1.0)
        .await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let ready = try_http_get(workers[0].http, "/readyz")
        .await
        .unwrap_or_default();
    assert!(
        ready.contains(" 503 "),
        "a draining worker is not ready: {ready}"
    );

    let before = (
        workers[0].sessions_active().await,
        workers[1].sessions_active().await,
    );
    let mut calls = Vec::new();
    for i in 0..3 {
        calls.push(call(&frontend, &format!("after-drain-{i}")).await);
    }
    let after = (
        workers[0].sessions_active().await,
        workers[1].sessions_active().await,
    );
    assert_eq!(after.0, before.0, "no new session on the draining worker");
    assert_eq!(after.1, before.1 + 3.0);
    // The calls it already had go on.
    first_peer.expect_tone_back(560.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_frontend_sends_its_clients_to_resume_elsewhere() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let _worker = Node::worker("worker-a", &url, &[]).await;
    let mut stopping = Node::start("frontend-1", "frontend", &url, &[]).await;
    let other = Node::start("frontend-2", "frontend", &url, &[]).await;
    stopping
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (mut alice, ack) = SignalingClient::announce(&stopping.grpc_url(), "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice, &mut peer).await;
    let (mut bob, _) = SignalingClient::announce(&other.grpc_url(), "bob").await;

    stopping.sigterm();
    let status = loop {
        match alice.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    send_numbered_candidates(&mut bob, "alice", 10).await;
    let (mut alice, _) =
        SignalingClient::announce_with(&other.grpc_url(), "alice", with_token(&token)).await;
    expect_numbered_candidates(&mut alice, "bob", 10).await;
    peer.expect_tone_back(640.0).await;
    let deadline = Instant::now() + WAIT;
    while !stopping.has_exited() {
        assert!(
            Instant::now() < deadline,
            "the stopped frontend did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_answers_resource_exhausted() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let worker = Node::worker("worker-a", &url, &["--capacity", "1"]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (_first, _first_peer) = call(&frontend, "first").await;
    let (mut second, _) = SignalingClient::announce(&frontend.grpc_url(), "second").await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = second.offer(SERVER, peer.offer().await).await;
    let error = second.expect_error(&offer).await;
    assert_eq!(
        error.code,
        tonic::Code::ResourceExhausted as u32,
        "{error:?}"
    );
    assert!(error.message.contains("capacity"), "{}", error.message);
    let metrics = frontend.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"remotemedia_frontend_offers_total{result="at_capacity"}"#
        ),
        Some(1.0)
    );
    // One refusal, one `sessions` limit hit: by the frontend when its placement knew the
    // worker was full, else by the worker itself (never both).
    let sessions_hits = |text: &str| {
        metric_value(text, r#"remotemedia_limit_hits_total{limit="sessions"}"#)
            .expect("the sessions limit is exported")
    };
    let worker_metrics = worker.metrics().await;
    assert_eq!(
        sessions_hits(&metrics) + sessions_hits(&worker_metrics),
        1.0,
        "frontend and worker together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_takes_only_callers_with_the_worker_token() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let worker = Node::worker("worker-a", &url, &["--worker-token", "right-token"]).await;
    let wrong = Node::start(
        "frontend-wrong",
        "frontend",
        &url,
        &["--worker-token", "wrong"],
    )
    .await;
    let right = Node::start(
        "frontend-right",
        "frontend",
        &url,
        &["--worker-token", "right-token"],
    )
    .await;
    for frontend in [&wrong, &right] {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n >= 1.0)
            .await;
    }

    // Anything else on the network that reaches the API directly is refused.
    let mut direct = MediaWorkerClient::connect(worker.grpc_url()).await.unwrap();
    let status = direct
        .close_session(worker_pb::CloseSessionRequest {
            peer_id: "someone".into(),
            session_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // A frontend with the wrong token cannot place: the client hears UNAVAILABLE.
    let (mut signaling, _) = SignalingClient::announce(&wrong.grpc_url(), "refused").await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    let error = signaling.expect_error(&offer).await;
    assert_eq!(error.code, tonic::Code::Unavailable as u32, "{error:?}");
    assert_eq!(worker.sessions_active().await, 0.0);
    peer.close().await;

    // The right token: the call is placed and carries audio.
    let (_signaling, peer) = call(&right, "accepted").await;
    peer.expect_tone_back(523.0).await;
    assert!(worker.log_text().contains("token missing or wrong"));
}
