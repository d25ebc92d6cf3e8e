//! What the hot paths cost Redis, read from `MONITOR` on the real Redis (127.0.0.1:6379),
//! filtered by a key prefix of the test's own: `HealthCheck`, the once-a-second sweep of
//! detached peers and a broadcast issue no SCAN, and their command count does not grow with
//! the number of peers; detached peers still expire when their grace ends.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::signaling::{health, health_metrics};
use common::TestServer;
use parking_lot::Mutex;
use remotemedia_webrtc::cluster::{connect, Keys, RedisBus, RedisRegistry};
use remotemedia_webrtc::proto::signaling::{PeerCapabilities, SignalingNotification};
use remotemedia_webrtc::signaling::{NotificationBus, PeerRecord, PeerRegistry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";
const PEERS: usize = 100;

fn prefix(test: &str) -> String {
    format!("rm-hot-{}-{test}:", std::process::id())
}

/// Every command Redis runs, as `MONITOR` prints it.
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    async fn start() -> Self {
        let mut stream = tokio::net::TcpStream::connect("127.0.0.1:6379")
            .await
            .unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).await.unwrap();
        assert!(ok.starts_with("+OK"), "{ok}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut lines = reader.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().push(line);
            }
        });
        Self { lines }
    }

    /// Forgets what was seen so far (after letting in-flight lines arrive).
    async fn clear(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.lines.lock().clear();
    }

    /// The commands clients sent (not those scripts ran) that touch `prefix`, lowercased
    /// command names first.
    async fn client_commands(&self, prefix: &str) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.lines
            .lock()
            .iter()
            .filter(|l| l.contains(prefix) && !l.contains(" lua]"))
            .filter_map(|l| l.split("] ").nth(1).map(str::to_lowercase))
            .collect()
    }

    /// Commands scripts ran on `prefix`'s keys.
    async fn script_commands(&self, prefix: &str) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.lines
            .lock()
            .iter()
            .filter(|l| l.contains(prefix) && l.contains(" lua]"))
            .filter_map(|l| l.split("] ").nth(1).map(str::to_lowercase))
            .collect()
    }
}

fn is_scan(command: &str) -> bool {
    command.starts_with("\"scan\"") || command.starts_with("\"keys\"")
}

fn record(peer_id: &str) -> PeerRecord {
    PeerRecord {
        peer_id: peer_id.into(),
        capabilities: PeerCapabilities {
            audio: true,
            ..PeerCapabilities::default()
        },
        metadata: Default::default(),
        connected_at: 1,
        resume_token: format!("token-{peer_id}"),
        connection_id: format!("conn-{peer_id}"),
        cursor: None,
        detached_until_ms: None,
    }
}

/// A registry with `PEERS` peers under `prefix`. Its refresh loop is stopped once they are
/// in (records live 30 s), so only what the test calls reaches Redis.
async fn registry_with_peers(prefix: &str) -> (RedisRegistry, redis::Client) {
    let (client, redis) = connect(REDIS, None).await.unwrap();
    let stop = CancellationToken::new();
    let registry = RedisRegistry::new(redis, Keys::new(prefix), stop.clone());
    for i in 0..PEERS {
        registry
            .register(record(&format!("p{i}")), 16)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    (registry, client)
}

#[tokio::test]
async fn health_check_costs_two_counts_whatever_the_number_of_peers() {
    let prefix = prefix("health");
    let (_registry, _) = registry_with_peers(&prefix).await;
    let server = TestServer::start_with(|c| {
        c.redis_url = Some(REDIS.into());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let monitor = Monitor::start().await;
    monitor.clear().await;

    let answer = health(&server.grpc_url()).await;
    assert_eq!(answer.connected_peers, PEERS as u32);
    assert_eq!(health_metrics(&answer)["pending_offers"], 0);

    let commands = monitor.client_commands(&prefix).await;
    assert!(
        !commands.iter().any(|c| is_scan(c)),
        "no scan: {commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.starts_with("\"mget\"")),
        "no record is read: {commands:?}"
    );
    let counts = commands
        .iter()
        .filter(|c| c.starts_with("\"zcount\""))
        .count();
    assert_eq!(counts, 2, "peers and offers: {commands:?}");
    println!(
        "HealthCheck with {PEERS} peers: {counts} ZCOUNT; everything on the prefix in the window \
         (background sweeps included): {}",
        commands.len()
    );
}

#[tokio::test]
async fn the_sweep_reads_only_expired_graces_and_ends_them_on_time() {
    let prefix = prefix("sweep");
    let (registry, _) = registry_with_peers(&prefix).await;
    let monitor = Monitor::start().await;
    let grace = Duration::from_millis(1500);
    assert!(registry.detach("p7", "conn-p7", None, grace).await);
    monitor.clear().await;

    // Nothing expired yet: one round trip of constant size, no scan, no record read.
    assert!(registry.sweep(grace).await.is_empty());
    let commands = monitor.client_commands(&prefix).await;
    println!("one sweep with {PEERS} peers, 1 detached: {commands:?}");
    assert!(!commands.iter().any(|c| is_scan(c)), "{commands:?}");
    assert!(commands.len() <= 4, "{commands:?}");
    assert!(
        !commands.iter().any(|c| c.starts_with("\"mget\"")),
        "{commands:?}"
    );

    // The grace ends: the next sweep ends that peer, once.
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    let ended = registry.sweep(grace).await;
    let ids: Vec<&str> = ended.iter().map(|r| r.peer_id.as_str()).collect();
    assert_eq!(ids, ["p7"]);
    assert!(registry.sweep(grace).await.is_empty(), "ended once");
    assert!(registry.get("p7").await.is_none());
    assert_eq!(registry.peer_count().await, PEERS - 1);

    // A resumed peer is not swept when its old grace would have ended.
    assert!(registry.detach("p8", "conn-p8", None, grace).await);
    let resumed = registry.resume("p8", "token-p8", "conn-new").await.unwrap();
    assert!(resumed.is_some());
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    assert!(registry.sweep(grace).await.is_empty());
    assert!(registry.get("p8").await.is_some());

    registry.unregister("p8").await;
    assert_eq!(registry.peer_count().await, PEERS - 2);
    let listed = registry.list().await;
    assert_eq!(listed.len(), PEERS - 2);
    assert!(!listed
        .iter()
        .any(|r| r.peer_id == "p8" || r.peer_id == "p7"));
}

#[tokio::test]
async fn a_broadcast_is_one_round_trip_for_any_number_of_peers() {
    let prefix = prefix("broadcast");
    let (registry, client) = registry_with_peers(&prefix).await;
    let registry: Arc<dyn PeerRegistry> = Arc::new(registry);
    let (_, redis) = connect(REDIS, None).await.unwrap();
    let stop = CancellationToken::new();
    let bus = RedisBus::new(
        redis.clone(),
        client,
        Keys::new(prefix.as_str()),
        Arc::clone(&registry),
        stop.clone(),
    );
    let monitor = Monitor::start().await;
    monitor.clear().await;

    bus.broadcast(None, "p0", SignalingNotification::default())
        .await;

    let commands = monitor.client_commands(&prefix).await;
    println!("a broadcast to {} peers: {commands:?}", PEERS - 1);
    assert!(!commands.iter().any(|c| is_scan(c)), "{commands:?}");
    assert!(
        commands.iter().all(|c| c.starts_with("\"eval")),
        "one script: {commands:?}"
    );
    assert!(
        (1..=2).contains(&commands.len()),
        "one call (two if the script had to be loaded): {commands:?}"
    );
    let appended = monitor
        .script_commands(&prefix)
        .await
        .into_iter()
        .filter(|c| c.starts_with("\"xadd\""))
        .count();
    assert_eq!(appended, PEERS - 1);

    // Every peer but the sender has the notification in its stream.
    let mut redis = redis;
    for i in 0..PEERS {
        let len: usize = redis::cmd("XLEN")
            .arg(format!("{prefix}inbox:p{i}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(len, usize::from(i != 0), "p{i}");
    }
    stop.cancel();
}

fn participant(peer_id: &str, room: &str) -> PeerRecord {
    let mut record = record(peer_id);
    record.metadata.insert("room".into(), room.into());
    record
}

#[tokio::test]
async fn a_room_broadcast_is_one_round_trip_and_the_lobby_s_skips_the_rooms() {
    let prefix = prefix("room-broadcast");
    let (registry, client) = registry_with_peers(&prefix).await;
    const IN_ROOM: usize = 10;
    for room in ["r1", "r2"] {
        for i in 0..IN_ROOM {
            registry
                .register(participant(&format!("{room}-{i}"), room), IN_ROOM)
                .await
                .unwrap();
        }
    }
    let registry: Arc<dyn PeerRegistry> = Arc::new(registry);
    let (_, redis) = connect(REDIS, None).await.unwrap();
    let stop = CancellationToken::new();
    let bus = RedisBus::new(
        redis.clone(),
        client,
        Keys::new(prefix.as_str()),
        Arc::clone(&registry),
        stop.clone(),
    );
    let monitor = Monitor::start().await;
    monitor.clear().await;

    bus.broadcast(Some("r1"), "r1-0", SignalingNotification::default())
        .await;
    let commands = monitor.client_commands(&prefix).await;
    println!("a broadcast to a room of {IN_ROOM}: {commands:?}");
    assert!(
        commands.iter().all(|c| c.starts_with("\"eval")) && (1..=2).contains(&commands.len()),
        "one script call (two if it had to be loaded): {commands:?}"
    );
    let script = monitor.script_commands(&prefix).await;
    let appended: Vec<&String> = script
        .iter()
        .filter(|c| c.starts_with("\"xadd\""))
        .collect();
    assert_eq!(appended.len(), IN_ROOM - 1, "{appended:?}");
    assert!(
        appended.iter().all(|c| c.contains("inbox:r1-")),
        "only r1's streams: {appended:?}"
    );

    // The lobby's broadcast: one call, to the lobby's peers only, as before rooms.
    monitor.clear().await;
    bus.broadcast(None, "p0", SignalingNotification::default())
        .await;
    let commands = monitor.client_commands(&prefix).await;
    assert!((1..=2).contains(&commands.len()), "{commands:?}");
    let appended = monitor
        .script_commands(&prefix)
        .await
        .into_iter()
        .filter(|c| c.starts_with("\"xadd\""))
        .collect::<Vec<_>>();
    assert_eq!(appended.len(), PEERS - 1);
    assert!(
        !appended.iter().any(|c| c.contains("inbox:r")),
        "{appended:?}"
    );
    stop.cancel();
}
