//! The rooms run (`webrtc_loadgen --rooms-of P`): rooms of P participants, each publishing the
//! Opus test signal, everyone subscribed to everyone, so R rooms forward R·P·(P−1) streams.
//! Against our server (rooms over gRPC signaling) or Janus' VideoRoom, measured the same way:
//! every packet carries its send time in its Opus padding (`stamp`), read back on each
//! forwarded stream; loss and latency count the packets stamped inside the steady window.

mod grpc;
mod janus;
mod peer;
mod stamp;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use remotemedia_webrtc::client::SetupTimes;

use self::peer::{RoomPeer, RoomStack, StampedSignal};
use self::stamp::Meter;
use super::error::LoadgenError;
use super::procstat::{pinned_core, rss_mb, CoreSample, CpuSample};
use super::run::MAX_LOADGEN_CPU_PCT;
use super::stats::{round2, Percentiles};
use super::{Options, Target};

/// Settling time once every forwarded stream delivers, before the window opens.
const SETTLE: Duration = Duration::from_secs(1);
/// After the window closes, how long packets stamped inside it may still arrive.
const GRACE: Duration = Duration::from_millis(500);
/// How long the run waits for every forwarded stream after the last participant joined.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(20);

/// What one rooms run measured. With `--json` this is the last line printed; the keys the
/// sweep reads are those of the peers run's report.
#[derive(Debug, Clone, Serialize)]
pub struct RoomsReport {
    pub protocol: &'static str,
    pub rooms_of: usize,
    pub rooms: usize,
    pub peers_requested: usize,
    pub peers_connected: usize,
    pub failures: BTreeMap<&'static str, usize>,
    /// R·P·(P−1), and how many of them delivered packets when the window opened.
    pub streams: usize,
    pub streams_live: usize,
    pub steady_s: f64,
    /// The first offer's answer and connection (our server) or the publisher's (Janus).
    pub answer_ms: Percentiles,
    pub connected_ms: Percentiles,
    pub packets_expected: u64,
    pub packets_received: u64,
    pub loss_pct: f64,
    /// Send to receive through the server, both in the generator (stamped in Opus padding).
    pub latency_ms: Percentiles,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub loadgen_cpu_pct: f64,
    pub loadgen_core_pct: Option<f64>,
    pub valid: bool,
}

enum Session {
    Grpc(grpc::GrpcParticipant),
    Janus(janus::JanusParticipant),
}

struct Participant {
    /// The publishing connection (our server: also the receiving one).
    publisher: RoomPeer,
    /// Janus: the subscriber connection.
    subscriber: Option<RoomPeer>,
    session: Session,
    times: SetupTimes,
}

impl Participant {
    fn live_tracks(&self) -> usize {
        let own = self.publisher.live_tracks.load(Ordering::Relaxed);
        own + self
            .subscriber
            .as_ref()
            .map_or(0, |s| s.live_tracks.load(Ordering::Relaxed))
    }

    async fn leave(self) {
        match self.session {
            Session::Grpc(s) => s.leave().await,
            Session::Janus(s) => s.leave().await,
        }
        self.publisher.close().await;
        if let Some(subscriber) = self.subscriber {
            subscriber.close().await;
        }
    }
}

/// Runs `options.peers` (rounded down to whole rooms of `rooms_of`) participants.
///
/// # Errors
/// When the signal, the client stack or Janus' rooms cannot be set up; failures of single
/// participants are counted in the report instead.
pub async fn run_rooms(
    options: &Options,
    target: &Target,
    rooms_of: usize,
) -> Result<RoomsReport, LoadgenError> {
    if rooms_of < 2 {
        return Err(LoadgenError::Room("--rooms-of needs at least 2".into()));
    }
    let rooms = options.peers / rooms_of;
    let peers = rooms * rooms_of;
    let streams = peers * (rooms_of - 1);
    let signal = Arc::new(StampedSignal::new()?);
    let stack = Arc::new(RoomStack::new(options.ice_ip)?);
    let meter = Arc::new(Meter::default());
    let stop_sending = CancellationToken::new();
    let run_id: u32 = rand::random();
    let janus_rooms = match target {
        Target::Janus(api) => Some(janus::JanusRooms::create(api, rooms, rooms_of).await?),
        Target::Grpc(_) => None,
    };
    let feeds: Vec<Arc<watch::Sender<Vec<u64>>>> = (0..rooms)
        .map(|_| Arc::new(watch::Sender::new(Vec::new())))
        .collect();

    let mut setups = JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / options.ramp_per_s.max(0.1));
    let mut ticker = tokio::time::interval(gap);
    for i in 0..peers {
        ticker.tick().await;
        let room = i / rooms_of;
        let (signal, stack, meter) = (Arc::clone(&signal), Arc::clone(&stack), Arc::clone(&meter));
        let (janus_room, feeds) = (
            janus_rooms.as_ref().and_then(|r| r.id(room)),
            Arc::clone(&feeds[room]),
        );
        let how = Join {
            target: target.clone(),
            peer_id: format!("loadgen-{run_id:08x}-{i}"),
            room: format!("loadgen-{run_id:08x}-room-{room}"),
            janus_room,
            feeds,
            rooms_of,
        };
        setups.spawn(join(how, stack, meter, signal, stop_sending.clone()));
    }
    let mut joined = Vec::with_capacity(peers);
    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    while let Some(setup) = setups.join_next().await {
        match setup {
            Ok(Ok(p)) => joined.push(p),
            Ok(Err(err)) => {
                tracing::warn!(%err, "a participant did not join");
                *failures.entry(err.kind()).or_default() += 1;
            }
            Err(err) => {
                tracing::warn!(%err, "a setup task failed");
                *failures.entry("task").or_default() += 1;
            }
        }
    }
    // Every forwarded stream delivering (or the timeout: the missing ones count as lost).
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while live(&joined) < streams && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let streams_live = live(&joined);

    let server_before = options.server_pid.and_then(CpuSample::of);
    let own_before = CpuSample::own();
    let core = pinned_core();
    let core_before = core.and_then(CoreSample::of);
    meter.open();
    tokio::time::sleep(Duration::from_secs_f64(options.duration_s.max(1.0))).await;
    meter.close();
    let server_after = options.server_pid.and_then(CpuSample::of);
    let own_after = CpuSample::own();
    let core_after = core.and_then(CoreSample::of);
    let server_rss = options.server_pid.and_then(rss_mb);
    tokio::time::sleep(GRACE).await;
    stop_sending.cancel();

    let expected = meter.expected();
    let received = meter.received_count();
    let loadgen_cpu_pct = match (own_before, own_after) {
        (Some(a), Some(b)) => round2(a.percent_until(&b)),
        _ => 0.0,
    };
    let loadgen_core_pct = match (core_before, core_after) {
        (Some(a), Some(b)) => Some(round2(a.percent_until(&b))),
        _ => None,
    };
    let answers: Vec<f64> = joined.iter().map(|p| ms(p.times.answer)).collect();
    let connects: Vec<f64> = joined.iter().map(|p| ms(p.times.connected)).collect();
    let report = RoomsReport {
        protocol: options.protocol.name(),
        rooms_of,
        rooms,
        peers_requested: peers,
        peers_connected: joined.len(),
        failures,
        streams,
        streams_live,
        steady_s: options.duration_s,
        answer_ms: Percentiles::of(&answers),
        connected_ms: Percentiles::of(&connects),
        packets_expected: expected,
        packets_received: received,
        loss_pct: if expected == 0 {
            100.0
        } else {
            round2(expected.saturating_sub(received) as f64 / expected as f64 * 100.0)
        },
        latency_ms: Percentiles {
            p50: round2(meter.percentile_ms(0.50)),
            p95: round2(meter.percentile_ms(0.95)),
            p99: round2(meter.percentile_ms(0.99)),
            n: received as usize,
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
    };

    let mut leaving = JoinSet::new();
    for p in joined {
        leaving.spawn(p.leave());
    }
    while leaving.join_next().await.is_some() {}
    if let Some(rooms) = janus_rooms {
        rooms.destroy().await;
    }
    Ok(report)
}

/// Who a participant is and where it joins.
struct Join {
    target: Target,
    peer_id: String,
    /// Our server's room name.
    room: String,
    /// Janus' room id, and the feeds published in it so far.
    janus_room: Option<u64>,
    feeds: Arc<watch::Sender<Vec<u64>>>,
    rooms_of: usize,
}

/// Joins one participant and starts its sending.
async fn join(
    how: Join,
    stack: Arc<RoomStack>,
    meter: Arc<Meter>,
    signal: Arc<StampedSignal>,
    stop: CancellationToken,
) -> Result<Participant, LoadgenError> {
    let mut publisher = RoomPeer::new(&stack, Arc::clone(&meter), true).await?;
    let others = how.rooms_of - 1;
    let joined = match (&how.target, how.janus_room) {
        (Target::Grpc(channel), _) => {
            grpc::join(channel.clone(), how.peer_id, how.room, &mut publisher)
                .await
                .map(|(s, t)| (Session::Grpc(s), t, None))
        }
        (Target::Janus(api), Some(room)) => {
            // Sending starts once joined: here, published and subscribed.
            let subscriber = RoomPeer::new(&stack, Arc::clone(&meter), false).await?;
            match janus::join(api, room, &mut publisher, &subscriber, &how.feeds, others).await {
                Ok((s, t)) => Ok((Session::Janus(s), t, Some(subscriber))),
                Err(err) => {
                    subscriber.close().await;
                    Err(err)
                }
            }
        }
        (Target::Janus(_), None) => Err(LoadgenError::Room("no such Janus room".into())),
    };
    match joined {
        Ok((session, times, subscriber)) => {
            publisher.start_sending(signal, meter, others as u64, stop);
            Ok(Participant {
                publisher,
                subscriber,
                session,
                times,
            })
        }
        Err(err) => {
            publisher.close().await;
            Err(err)
        }
    }
}

fn live(joined: &[Participant]) -> usize {
    joined.iter().map(Participant::live_tracks).sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
