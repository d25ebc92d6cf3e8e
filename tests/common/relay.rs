//! A lossy UDP relay between a client peer and the server, like a bad network: the client
//! reaches the server only through it (the server's candidates are rewritten to the relay's
//! address, the client's are not sent, so the server sees the relay as peer-reflexive).
//! It drops and delays (reorders) a share of the client's RTP, never STUN, DTLS or RTCP.
//! Towards the client it records every RTP header it passes (SRTP leaves headers in the
//! clear) and drops the packets a test names, so a test sees what left the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

use super::client::ClientPeer;
use super::signaling::{SignalingClient, SERVER};
use super::WAIT;

/// What the relay does to the client's RTP.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Share of client RTP packets dropped.
    pub drop: f64,
    /// Share of client RTP packets delayed (which reorders them).
    pub delay: f64,
    /// Delays are uniform in 0..=max_delay.
    pub max_delay: Duration,
    /// Seed of the relay's random choices, so a run is reproducible.
    pub seed: u64,
}

/// What the relay did, and the packets a test asked it to drop or delay.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub client_rtp: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub to_client: AtomicU64,
    /// Headers of the server's RTP towards the client, in the order the relay passed them
    /// (dropped ones included, marked).
    pub to_client_rtp: parking_lot::Mutex<Vec<SeenRtp>>,
    /// `(payload type, sequence number)` of server RTP to drop once on its way to the client.
    drop_to_client: parking_lot::Mutex<Vec<(u8, u16)>>,
    /// `(payload type, sequence number, delay)` of client RTP to delay once.
    delay_to_server: parking_lot::Mutex<Vec<(u8, u16, Duration)>>,
    /// Share of server RTP dropped on its way to the client, and the generator deciding it
    /// (see [`RelayStats::lose_to_client`]).
    loss_to_client: parking_lot::Mutex<Option<(f64, Rng)>>,
    /// Server RTP packets dropped so.
    pub lost_to_client: AtomicU64,
}

/// One RTP packet from the server as the relay saw it.
#[derive(Debug, Clone, Copy)]
pub struct SeenRtp {
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub at: Instant,
    /// The relay dropped it (a test asked for it, or its downlink loss).
    pub dropped: bool,
}

impl RelayStats {
    /// Drops the next RTP packet from the server with this payload type and sequence number.
    pub fn drop_to_client_once(&self, payload_type: u8, sequence_number: u16) {
        self.drop_to_client
            .lock()
            .push((payload_type, sequence_number));
    }

    /// From now on drops a `share` of the server's RTP towards the client at random (the
    /// client's downlink is lossy; RTCP and DTLS pass), reproducibly from `seed`.
    pub fn lose_to_client(&self, share: f64, seed: u64) {
        *self.loss_to_client.lock() = Some((share, Rng(seed)));
    }

    /// Delays the next RTP packet from the client with this payload type and sequence
    /// number by `delay` (the server receives it late, after its successors).
    pub fn delay_to_server_once(&self, payload_type: u8, sequence_number: u16, delay: Duration) {
        self.delay_to_server
            .lock()
            .push((payload_type, sequence_number, delay));
    }

    /// How long a test asked to delay `packet` (client RTP), if at all.
    fn delay_for(&self, packet: &[u8]) -> Option<Duration> {
        let key = (packet[1] & 0x7F, u16::from_be_bytes([packet[2], packet[3]]));
        let mut rules = self.delay_to_server.lock();
        let rule = rules.iter().position(|r| (r.0, r.1) == key)?;
        Some(rules.swap_remove(rule).2)
    }

    /// Whether to drop `packet` (RTP from the server), recording it either way.
    fn pass_to_client(&self, packet: &[u8]) -> bool {
        if !is_rtp(packet) {
            return true;
        }
        let payload_type = packet[1] & 0x7F;
        let sequence_number = u16::from_be_bytes([packet[2], packet[3]]);
        let mut rules = self.drop_to_client.lock();
        let rule = rules
            .iter()
            .position(|r| *r == (payload_type, sequence_number));
        let mut dropped = rule.map(|i| rules.swap_remove(i)).is_some();
        if let Some((share, rng)) = self.loss_to_client.lock().as_mut() {
            if !dropped && rng.next_f64() < *share {
                dropped = true;
                self.lost_to_client.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.to_client_rtp.lock().push(SeenRtp {
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            payload_type,
            sequence_number,
            at: Instant::now(),
            dropped,
        });
        !dropped
    }
}

/// A running relay; it stops when the test's runtime does.
pub struct Relay {
    pub address: SocketAddr,
    pub stats: Arc<RelayStats>,
    /// Server offers that came while [`connect_via_relay`] connected (a room's first
    /// renegotiation), for the caller to answer.
    pub server_offers: Vec<pb::OfferNotification>,
}

/// SplitMix64: a tiny deterministic generator (no `rand` dependency for one test).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// RTP, not RTCP (RFC 5761 §4: RTCP packet types 192..=223, which include the feedback
/// types 205 and 206 of NACK, PLI and TWCC, read as payload types 64..=95).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12
        && (128..=191).contains(&packet[0])
        && !(64..=95).contains(&(packet[1] & 0x7F))
}

impl Relay {
    /// Starts a relay on 127.0.0.1 forwarding to `server`.
    pub async fn start(server: SocketAddr, impairment: Impairment) -> Self {
        Self::start_on(([127, 0, 0, 1], 0).into(), server, impairment).await
    }

    /// Starts a relay listening on `listen` (a NodePort, say) forwarding to `server`.
    pub async fn start_on(listen: SocketAddr, server: SocketAddr, impairment: Impairment) -> Self {
        let socket = Arc::new(UdpSocket::bind(listen).await.unwrap());
        let address = socket.local_addr().unwrap();
        let stats = Arc::new(RelayStats::default());
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let task_stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let mut rng = Rng(impairment.seed);
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    break;
                };
                let packet = buf[..n].to_vec();
                if from == server {
                    if let Some(to) = *client.lock().await {
                        if !task_stats.pass_to_client(&packet) {
                            continue;
                        }
                        task_stats.to_client.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&packet, to).await;
                    }
                    continue;
                }
                client.lock().await.get_or_insert(from);
                if is_rtp(&packet) {
                    task_stats.client_rtp.fetch_add(1, Ordering::Relaxed);
                    if let Some(delay) = task_stats.delay_for(&packet) {
                        let socket = Arc::clone(&socket);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = socket.send_to(&packet, server).await;
                        });
                        continue;
                    }
                    if rng.next_f64() < impairment.drop {
                        task_stats.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if rng.next_f64() < impairment.delay {
                        task_stats.delayed.fetch_add(1, Ordering::Relaxed);
                        let delay = impairment.max_delay.mul_f64(rng.next_f64());
                        let socket = Arc::clone(&socket);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = socket.send_to(&packet, server).await;
                        });
                        continue;
                    }
                }
                let _ = socket.send_to(&packet, server).await;
            }
        });
        Self {
            address,
            stats,
            server_offers: Vec::new(),
        }
    }
}

/// The candidate's transport address if it is a UDP candidate: `candidate:f 1 udp p IP PORT typ ..`.
fn udp_address(candidate: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = candidate.split_whitespace().collect();
    if fields.len() < 6 || !fields[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    format!("{}:{}", fields[4], fields[5]).parse().ok()
}

fn with_address(candidate: &str, address: SocketAddr) -> String {
    let mut fields: Vec<String> = candidate.split_whitespace().map(str::to_owned).collect();
    fields[4] = address.ip().to_string();
    fields[5] = address.port().to_string();
    fields.join(" ")
}

/// Offers to the server and connects through a relay with `impairment`: the first UDP
/// candidate of the server is replaced by the relay's address, the others are not used,
/// and the client's own candidates are never sent. Returns the relay once connected.
pub async fn connect_via_relay(
    signaling: &mut SignalingClient,
    peer: &mut ClientPeer,
    impairment: Impairment,
) -> Relay {
    let sdp = peer.offer().await;
    signaling.offer(SERVER, sdp).await;
    let mut relay: Option<Relay> = None;
    let mut server_offers = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !(peer.is_connected() && relay.is_some()) {
        assert!(
            Instant::now() < deadline,
            "connecting through the relay timed out"
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = peer.state.changed() => {}
            // Drained and dropped: the server must learn the client only through the relay.
            Some(_) = peer.candidates.recv() => {}
            response = signaling.next() => {
                let response = response.expect("signaling stream").expect("signaling open");
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Answer(answer)) })) => {
                        // Any candidate in the answer would bypass the relay (and, gathering
                        // being complete there, the relayed candidate would come too late).
                        let sdp: Vec<&str> = answer.sdp.split("\r\n").filter(|l| !l.starts_with("a=candidate:") && *l != "a=end-of-candidates").collect();
                        peer.accept_answer(sdp.join("\r\n")).await;
                    }
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(mut c)) })) => {
                        let Some(server) = udp_address(&c.candidate) else { continue };
                        if relay.is_some() {
                            continue;
                        }
                        let started = Relay::start(server, impairment).await;
                        c.candidate = with_address(&c.candidate, started.address);
                        peer.add_remote_candidate(&c).await;
                        relay = Some(started);
                    }
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Offer(offer)) })) => {
                        server_offers.push(offer);
                    }
                    Some(Resp::Error(err)) => panic!("signaling error: {err:?}"),
                    _ => {}
                }
            }
        }
    }
    let mut relay = relay.expect("relay started");
    relay.server_offers = server_offers;
    relay
}
