//! The traced life of one server session: a `session` span (a child of whatever span created
//! it: the worker's API call in a cluster, the offer in one process) with a span per step
//! under it: `pipeline.build` and `sdp.answer` while the answer is made, then `ice.gathering`,
//! `ice.connect`, `dtls.handshake`, `rtp.first_in`, `rtp.first_out`, and `session.close` with
//! its reason. Each step ends once, from whichever callback or task sees it first; a step the
//! session never reached ends at the close with `reached = false`.
//!
//! Nothing here is per packet: the media tasks call [`SessionTrace::first_rtp_in`] and
//! [`SessionTrace::first_rtp_out`] until the first succeeds, then drop their handle.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tracing::{field, info_span, Span};

use super::close_reason::CloseReason;

/// One session's spans. Peer connection callbacks hold it: [`SessionTrace::finish`] drops
/// every span it holds, so spans end even if a callback outlives the session.
pub(crate) struct SessionTrace {
    steps: Mutex<Steps>,
    /// DTLS is connected: RTP written from now on really leaves.
    connected: AtomicBool,
}

/// The session's span and the steps not ended yet; all `None` once finished.
#[derive(Default)]
struct Steps {
    session: Option<Span>,
    gathering: Option<Span>,
    ice: Option<Span>,
    dtls: Option<Span>,
    rtp_in: Option<Span>,
    rtp_out: Option<Span>,
}

impl Steps {
    /// A new step under the session; `None` once the session finished.
    fn step(&self, name: &'static str) -> Option<Span> {
        self.session.as_ref().map(|session| step(session, name))
    }

    fn all(&mut self) -> [Option<Span>; 5] {
        [
            self.gathering.take(),
            self.ice.take(),
            self.dtls.take(),
            self.rtp_in.take(),
            self.rtp_out.take(),
        ]
    }
}

/// A step's span, under the session's.
fn step(session: &Span, name: &'static str) -> Span {
    match name {
        "ice.gathering" => info_span!(parent: session, "ice.gathering", reached = field::Empty),
        "ice.connect" => info_span!(parent: session, "ice.connect", reached = field::Empty),
        "dtls.handshake" => info_span!(parent: session, "dtls.handshake", reached = field::Empty),
        "rtp.first_in" => info_span!(parent: session, "rtp.first_in", reached = field::Empty),
        _ => info_span!(parent: session, "rtp.first_out", reached = field::Empty),
    }
}

/// Ends a step that was reached.
fn reached(span: Option<Span>) {
    if let Some(span) = span {
        span.record("reached", true);
    }
}

impl SessionTrace {
    /// Starts the `session` span as a child of the current span.
    pub fn start(peer_id: &str, offer_id: &str, session: u64) -> Self {
        let span = info_span!(
            "session",
            peer_id,
            offer_id,
            session,
            close_reason = field::Empty,
            otel.status_code = field::Empty,
        );
        Self {
            steps: Mutex::new(Steps {
                session: Some(span),
                ..Steps::default()
            }),
            connected: AtomicBool::new(false),
        }
    }

    /// The session's span, to run its creation and supervision in.
    pub fn span(&self) -> Span {
        self.steps.lock().session.clone().unwrap_or_else(Span::none)
    }

    /// The answer is made and about to be applied: gathering, connectivity and media begin.
    pub fn answering(&self) {
        let mut steps = self.steps.lock();
        steps.gathering = steps.step("ice.gathering");
        steps.ice = steps.step("ice.connect");
        steps.rtp_in = steps.step("rtp.first_in");
        steps.rtp_out = steps.step("rtp.first_out");
    }

    /// The last local candidate was gathered.
    pub fn gathering_complete(&self) {
        reached(self.steps.lock().gathering.take());
    }

    /// ICE found a working pair: the DTLS handshake starts.
    pub fn ice_connected(&self) {
        let mut steps = self.steps.lock();
        if let Some(ice) = steps.ice.take() {
            reached(Some(ice));
            steps.dtls = steps.step("dtls.handshake");
        }
    }

    /// DTLS is connected (the peer connection is): media can flow.
    pub fn dtls_connected(&self) {
        self.connected.store(true, Ordering::Release);
        let mut steps = self.steps.lock();
        reached(steps.ice.take());
        reached(steps.dtls.take());
    }

    /// The first RTP packet arrived.
    pub fn first_rtp_in(&self) {
        reached(self.steps.lock().rtp_in.take());
    }

    /// An RTP packet was written; returns whether it counted as the first one out (it
    /// does not before DTLS is connected: nothing leaves then).
    pub fn first_rtp_out(&self) -> bool {
        if !self.connected.load(Ordering::Acquire) {
            return false;
        }
        reached(self.steps.lock().rtp_out.take());
        true
    }

    /// The close begins: the reason goes on the session span; the returned `session.close`
    /// span covers the close itself.
    pub fn closing(&self, reason: CloseReason) -> Span {
        let steps = self.steps.lock();
        let Some(session) = &steps.session else {
            return Span::none();
        };
        session.record("close_reason", reason.label());
        info_span!(
            parent: session,
            "session.close",
            reason = reason.label(),
            why = reason.describe()
        )
    }

    /// The session could not be created: its span ends as an error.
    pub fn failed(&self, error: &dyn std::error::Error) {
        let session = self.span();
        session.record("otel.status_code", "ERROR");
        session.in_scope(|| tracing::info!(%error, "server session not created"));
        self.finish();
    }

    /// Ends every step not reached (`reached = false`) and lets go of the session span; it
    /// ends when its last handle (the supervisor's) is dropped too.
    pub fn finish(&self) {
        let (steps, session) = {
            let mut steps = self.steps.lock();
            (steps.all(), steps.session.take())
        };
        for span in steps.into_iter().flatten() {
            span.record("reached", false);
        }
        drop(session);
    }
}
