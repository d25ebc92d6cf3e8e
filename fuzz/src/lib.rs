//! What the fuzz targets share: one tokio runtime per process, an in-memory signaling core,
//! and a session host that answers without WebRTC (for the JSON-RPC target).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use remotemedia_webrtc::proto::signaling::AnnounceRequest;
use remotemedia_webrtc::signaling::{
    Access, ConnectedPeer, IceCandidate, Identity, InMemoryBus, InMemoryRegistry, RequestLimits,
    SessionError, SessionHost, SessionRequest, SignalingCore, SignalingLimits,
};

/// The process's runtime, made on first use (libFuzzer calls the target from one thread).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A single-process signaling core (in-memory registry and bus) over `host`.
pub fn signaling_core(host: Arc<dyn SessionHost>) -> Arc<SignalingCore> {
    SignalingCore::new(
        Arc::new(InMemoryRegistry::default()),
        Arc::new(InMemoryBus::default()),
        host,
        limits(),
        Access::default(),
    )
}

/// The server's default limits (the flags' defaults), no resume grace.
fn limits() -> SignalingLimits {
    let limits = remotemedia_webrtc::config::Config::local_test().limits;
    SignalingLimits {
        max_peers: limits.max_peers,
        max_sdp_bytes: limits.max_sdp_bytes,
        max_ice_candidates: limits.max_ice_candidates,
        requests: RequestLimits {
            rate: limits.signaling_rate,
            burst: limits.signaling_burst,
            max_message_bytes: limits.max_message_bytes,
        },
        resume_grace: Duration::ZERO,
        first_message_timeout: Duration::ZERO,
        keep_peers_on_shutdown: false,
        max_room_participants: limits.max_room_participants,
    }
}

/// Announces `peer_id` as an anonymous client (no auth).
pub async fn announce(core: &Arc<SignalingCore>, peer_id: &str) -> ConnectedPeer {
    core.announce(
        AnnounceRequest {
            peer_id: peer_id.to_owned(),
            ..Default::default()
        },
        &Identity::Anonymous,
    )
    .await
    .expect("a fixed, valid peer id announces")
}

/// Takes every notification queued for `peer` now; panics if the core cut it off (one input
/// must never flood another peer's mailbox).
pub fn drain(peer: &mut ConnectedPeer) -> usize {
    let mut taken = 0;
    while let Some(next) = peer.next_notification().now_or_never() {
        assert!(next.is_some(), "{} was cut off", peer.peer_id());
        taken += 1;
    }
    taken
}

/// A session host without media: a session exists from its offer until it is closed.
#[derive(Default)]
pub struct AnsweringHost {
    sessions: Mutex<HashSet<String>>,
}

/// What [`AnsweringHost`] answers every offer with.
pub const ANSWER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";

#[async_trait]
impl SessionHost for AnsweringHost {
    async fn create_session(&self, request: SessionRequest) -> Result<String, SessionError> {
        self.lock().insert(request.peer_id);
        Ok(ANSWER_SDP.to_owned())
    }

    async fn add_candidate(
        &self,
        peer_id: &str,
        _candidate: IceCandidate,
    ) -> Result<(), SessionError> {
        if self.lock().contains(peer_id) {
            Ok(())
        } else {
            Err(SessionError::NoSession(peer_id.to_owned()))
        }
    }

    async fn close_session(&self, peer_id: &str) -> bool {
        self.lock().remove(peer_id)
    }

    fn session_count(&self) -> usize {
        self.lock().len()
    }
}

impl AnsweringHost {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic elsewhere already fails the run; the set itself stays usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
