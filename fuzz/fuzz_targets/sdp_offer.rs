//! An SDP offer to `remotemedia-server`, as far as a peer's bytes go: the signaling core's
//! checks, then a real server peer (the server's own WebRTC stack, ICE on 127.0.0.1) that
//! unmarshals it, sets it as the remote description and answers. Every offer must end in an
//! answer or a typed error, and leave no session behind once closed or refused.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use remotemedia_webrtc::config::Config;
use remotemedia_webrtc::peer::SessionManager;
use remotemedia_webrtc::sessions::session_manager;
use remotemedia_webrtc::signaling::{
    ConnectedPeer, OfferOutcome, SessionError, SessionHost, SignalingError, SERVER_PEER_ID,
};
use remotemedia_webrtc_fuzz::{announce, drain, runtime, signaling_core};
use tokio::sync::Mutex;

struct Harness {
    sessions: Arc<SessionManager>,
    peer: Mutex<ConnectedPeer>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        runtime().block_on(async {
            // `local_test`: ICE gathers on 127.0.0.1 only, every listener on port 0.
            let config = Config::local_test();
            let (sessions, events) = session_manager(&config)
                .await
                .expect("the server's WebRTC stack starts");
            let core = signaling_core(Arc::clone(&sessions) as _);
            tokio::spawn(Arc::clone(&core).forward_session_events(events));
            let peer = announce(&core, "fuzzer").await;
            Harness {
                sessions,
                peer: Mutex::new(peer),
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    // Both transports carry the SDP as a string (protobuf `string`, JSON string).
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let harness = harness();
    runtime().block_on(async {
        let mut peer = harness.peer.lock().await;
        match peer.offer(SERVER_PEER_ID, sdp).await {
            Ok(OfferOutcome::Answered { answer_sdp, .. }) => {
                assert!(answer_sdp.starts_with("v=0"), "answer: {answer_sdp:?}");
                assert_eq!(harness.sessions.session_count(), 1);
                peer.disconnect(SERVER_PEER_ID)
                    .await
                    .expect("the answered session closes");
            }
            Ok(OfferOutcome::Forwarded { .. }) => panic!("an offer to the server was forwarded"),
            Err(
                SignalingError::InvalidOffer(_)
                | SignalingError::TooLarge { .. }
                | SignalingError::Session(
                    SessionError::InvalidSdp(_)
                    | SessionError::Internal(_)
                    | SessionError::Pipeline(_),
                ),
            ) => {}
            Err(other) => panic!("unexpected error for an offer: {other:?}"),
        }
        drain(&mut peer);
        assert_eq!(
            harness.sessions.session_count(),
            0,
            "a session outlived its offer"
        );
    });
});
