//! One load run: ramp the peers up, hold a steady window, measure, tear down.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use remotemedia_webrtc::client::{ClientStack, LoadPeer, SetupTimes, TestSignal};

use super::error::LoadgenError;
use super::procstat::{pinned_core, rss_mb, CoreSample, CpuSample};
use super::stats::{round2, Percentiles};
use super::{Options, Protocol, Session, Target};

/// Above this share of its core, the loadgen measured itself rather than the server.
pub const MAX_LOADGEN_CPU_PCT: f64 = 85.0;
/// Received packets are counted over the steady window shifted by this much, past the path's
/// delay (jitter buffer, pacer): both counts span the same length of a continuous stream.
const RECEIVE_SHIFT: Duration = Duration::from_millis(200);
/// Settling time after the last peer connected, before the steady window opens.
const SETTLE: Duration = Duration::from_secs(1);

/// Packets of one peer over the steady window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PeerPackets {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

/// Server-added audio latency.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    /// Markers measured, and on how many peers.
    pub markers: usize,
    pub peers: usize,
}

/// What one run measured. With `--json` this is the last line printed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub protocol: &'static str,
    pub peers_requested: usize,
    pub peers_connected: usize,
    /// Setups that failed, by kind.
    pub failures: BTreeMap<&'static str, usize>,
    pub steady_s: f64,
    pub answer_ms: Percentiles,
    pub connected_ms: Percentiles,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Sent minus received over all peers (a peer's count may be one off at the window's
    /// edges; summed, those cancel out).
    pub packets_lost: u64,
    pub loss_pct: f64,
    /// The worst single peer's loss.
    pub worst_peer_loss_pct: f64,
    pub latency_ms: Latency,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    /// The loadgen process's CPU (percent of one core) over the steady window.
    pub loadgen_cpu_pct: f64,
    /// Its core's busy share (anyone's work) when it is pinned to one core.
    pub loadgen_core_pct: Option<f64>,
    /// False when the loadgen's core was above [`MAX_LOADGEN_CPU_PCT`]: then the client,
    /// not the server, was measured.
    pub valid: bool,
    pub peers: Vec<PeerPackets>,
}

struct Connected {
    peer: LoadPeer,
    session: Session,
    times: SetupTimes,
}

/// Runs the load described by `options` against `target`.
///
/// # Errors
/// When the test signal, the client stack or the target cannot be set up; failures of
/// single peers are counted in the report instead.
pub async fn run(options: &Options, target: &Target) -> Result<Report, LoadgenError> {
    let signal = Arc::new(TestSignal::new()?);
    let stack = Arc::new(ClientStack::new(options.ice_ip)?);
    let stop_sending = CancellationToken::new();
    let run_id: u32 = rand::random();

    // Ramp: one setup started every 1/ramp seconds, each in its own task.
    let mut setups = JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / options.ramp_per_s.max(0.1));
    let mut ticker = tokio::time::interval(gap);
    for i in 0..options.peers {
        ticker.tick().await;
        let (signal, stack, target) = (Arc::clone(&signal), Arc::clone(&stack), target.clone());
        let stop = stop_sending.clone();
        let measure = i < options.measure_peers;
        let peer_id = format!("loadgen-{run_id:08x}-{i}");
        let manifest = options.manifest.clone();
        setups.spawn(async move {
            let mut peer = LoadPeer::new(&stack, &signal, measure).await?;
            match target
                .connect(&peer_id, manifest.as_deref(), &mut peer)
                .await
            {
                Ok((session, times)) => {
                    peer.start_sending(signal, stop);
                    Ok(Connected {
                        peer,
                        session,
                        times,
                    })
                }
                Err(err) => {
                    peer.close().await;
                    Err(err)
                }
            }
        });
    }
    let mut connected = Vec::with_capacity(options.peers);
    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    while let Some(setup) = setups.join_next().await {
        match setup {
            Ok(Ok(c)) => connected.push(c),
            Ok(Err(err)) => {
                tracing::warn!(%err, "a peer did not connect");
                *failures.entry(err.kind()).or_default() += 1;
            }
            Err(err) => {
                tracing::warn!(%err, "a setup task failed");
                *failures.entry("task").or_default() += 1;
            }
        }
    }
    tokio::time::sleep(SETTLE).await;

    // Steady window.
    let server_before = options.server_pid.and_then(CpuSample::of);
    let own_before = CpuSample::own();
    let core = pinned_core();
    let core_before = core.and_then(CoreSample::of);
    let sent_before = sent_counts(&connected);
    let window = Duration::from_secs_f64(options.duration_s).max(RECEIVE_SHIFT * 2);
    tokio::time::sleep(RECEIVE_SHIFT).await;
    let received_before = received_counts(&connected);
    for c in &connected {
        c.peer.counters.latencies_ms.lock().clear();
    }
    tokio::time::sleep(window - RECEIVE_SHIFT).await;
    let server_after = options.server_pid.and_then(CpuSample::of);
    let own_after = CpuSample::own();
    let core_after = core.and_then(CoreSample::of);
    let sent_after = sent_counts(&connected);
    let server_rss = options.server_pid.and_then(rss_mb);
    tokio::time::sleep(RECEIVE_SHIFT).await;
    let received_after = received_counts(&connected);
    stop_sending.cancel();

    let mut peers = Vec::with_capacity(connected.len());
    for i in 0..connected.len() {
        let sent = sent_after[i].saturating_sub(sent_before[i]);
        let received = received_after[i].saturating_sub(received_before[i]);
        peers.push(PeerPackets {
            sent,
            received,
            lost: sent.saturating_sub(received),
        });
    }
    let mut latencies = Vec::new();
    let mut latency_peers = 0;
    for c in &connected {
        let measured = c.peer.counters.latencies_ms.lock();
        if !measured.is_empty() {
            latency_peers += 1;
            latencies.extend_from_slice(&measured);
        }
    }
    let latency = Percentiles::of(&latencies);
    let loadgen_cpu_pct = match (own_before, own_after) {
        (Some(a), Some(b)) => round2(a.percent_until(&b)),
        _ => 0.0,
    };
    let loadgen_core_pct = match (core_before, core_after) {
        (Some(a), Some(b)) => Some(round2(a.percent_until(&b))),
        _ => None,
    };
    let answers: Vec<f64> = connected.iter().map(|c| ms(c.times.answer)).collect();
    let connects: Vec<f64> = connected.iter().map(|c| ms(c.times.connected)).collect();
    let sent: u64 = peers.iter().map(|p| p.sent).sum();
    let received: u64 = peers.iter().map(|p| p.received).sum();
    // Per peer, a window's edges may cut one packet either way; summed, those cancel out.
    let lost = sent.saturating_sub(received);
    let worst = peers
        .iter()
        .map(|p| percent(p.lost, p.sent))
        .fold(0.0, f64::max);
    let report = Report {
        protocol: options.protocol.name(),
        peers_requested: options.peers,
        peers_connected: connected.len(),
        failures,
        steady_s: options.duration_s,
        answer_ms: Percentiles::of(&answers),
        connected_ms: Percentiles::of(&connects),
        packets_sent: sent,
        packets_received: received,
        packets_lost: lost,
        loss_pct: round2(percent(lost, sent)),
        worst_peer_loss_pct: round2(worst),
        latency_ms: Latency {
            p50: latency.p50,
            p99: latency.p99,
            markers: latency.n,
            peers: latency_peers,
        },
        server_cpu_pct: match (server_before, server_after) {
            (Some(a), Some(b)) => Some(round2(a.percent_until(&b))),
            _ => None,
        },
        server_rss_mb: server_rss.map(round2),
        loadgen_cpu_pct,
        loadgen_core_pct,
        valid: loadgen_cpu_pct <= MAX_LOADGEN_CPU_PCT
            && loadgen_core_pct.is_none_or(|p| p <= MAX_LOADGEN_CPU_PCT),
        peers,
    };

    let mut leaving = JoinSet::new();
    for c in connected {
        leaving.spawn(async move {
            c.session.leave().await;
            c.peer.close().await;
        });
    }
    while leaving.join_next().await.is_some() {}
    Ok(report)
}

fn sent_counts(connected: &[Connected]) -> Vec<u64> {
    connected
        .iter()
        .map(|c| c.peer.counters.sent.load(Ordering::Relaxed))
        .collect()
}

fn received_counts(connected: &[Connected]) -> Vec<u64> {
    connected
        .iter()
        .map(|c| c.peer.counters.received.load(Ordering::Relaxed))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64 * 100.0
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Janus => "janus",
        }
    }
}
