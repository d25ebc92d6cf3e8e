//! Server-initiated renegotiation of one participant's connection: when the server may offer,
//! what it does when the client does not answer, and glare.
//!
//! The contract: at most one server offer in flight, changes meanwhile coalesced into the next
//! one; offers only while connected and stable; an answer's `offer_id`, when present, must be
//! the pending offer's; a client offer while a server offer is pending is refused (the server
//! is the impolite side); a client that does not answer within 10 s gets the identical offer
//! once more and after another 10 s is closed (`answer_timeout`); the timer stops while the
//! client is detached and the pending offer is sent again on resume.
//!
//! The timer *pauses* while detached (the time waited before detaching still counts), so
//! repeated detach/resume cycles cannot keep an unanswered offer alive for ever beyond the
//! resume grace itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::RoomError;

/// How long the client has to answer a server offer, twice (once more after the re-send).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the adapter must do for this participant's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenegotiationOutput {
    /// Create an offer from the connection's current transceivers, set it as the local
    /// description and report it with [`Renegotiation::offer_created`].
    CreateOffer { offer_id: String },
    /// Send this offer to the client (`OfferNotification` from `remotemedia-server`), with the
    /// room channel's track map. The same text every time for one `offer_id`.
    SendOffer { offer_id: String, sdp: String },
    /// The client answered neither the offer nor its re-send: close the session with close
    /// reason `answer_timeout`.
    AnswerTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Sent once; re-sent when the timer runs out.
    Sent,
    /// Re-sent; the session closes when the timer runs out.
    Resent,
}

#[derive(Debug)]
struct Pending {
    offer_id: String,
    /// `None` while the adapter creates the offer.
    sdp: Option<String>,
    stage: Stage,
    /// Timer time spent in this stage before the current run.
    waited: Duration,
    /// When the timer last started running; `None` while stopped (detached, or not yet sent).
    running_since: Option<Instant>,
}

impl Pending {
    fn deadline(&self) -> Option<Instant> {
        self.running_since
            .map(|since| since + ANSWER_TIMEOUT.saturating_sub(self.waited))
    }

    fn stop(&mut self, now: Instant) {
        if let Some(since) = self.running_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
    }
}

/// One participant's renegotiation state.
#[derive(Debug)]
pub struct Renegotiation {
    /// Makes offer ids unique beyond this participant (e.g. the session id), for logs.
    id_prefix: String,
    next_id: u64,
    connected: bool,
    /// A client offer is being answered: the connection is not stable.
    client_offer: bool,
    detached: bool,
    /// Changes not yet in any offer.
    wanted: bool,
    pending: Option<Pending>,
    closed: bool,
    /// At most a few entries: drained after every input.
    outputs: VecDeque<RenegotiationOutput>,
}

impl Renegotiation {
    pub fn new(id_prefix: impl Into<String>) -> Self {
        Self {
            id_prefix: id_prefix.into(),
            next_id: 1,
            connected: false,
            client_offer: false,
            detached: false,
            wanted: false,
            pending: None,
            closed: false,
            outputs: VecDeque::new(),
        }
    }

    /// The server offer in flight (being created or sent), whose answer the server waits for.
    pub fn pending_offer_id(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.offer_id.as_str())
    }

    /// Tracks were added or removed: an offer is owed (coalesced with any already owed).
    pub fn request(&mut self) {
        self.wanted = true;
        self.maybe_offer();
    }

    /// ICE+DTLS connected (or no longer): offers wait for it.
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
        self.maybe_offer();
    }

    /// A client offer arrived on the live session.
    ///
    /// # Errors
    /// `ServerOfferPending` (glare): the client answers the server's offer first.
    pub fn client_offer(&mut self) -> Result<(), RoomError> {
        if self.pending.is_some() {
            return Err(RoomError::ServerOfferPending);
        }
        self.client_offer = true;
        Ok(())
    }

    /// The server answered the client's offer (or gave up on it): stable again.
    pub fn client_offer_done(&mut self) {
        self.client_offer = false;
        self.maybe_offer();
    }

    /// The adapter created the offer asked for by [`RenegotiationOutput::CreateOffer`].
    pub fn offer_created(&mut self, offer_id: &str, sdp: String, now: Instant) {
        let detached = self.detached;
        let Some(pending) = self.pending.as_mut().filter(|p| p.offer_id == offer_id) else {
            return;
        };
        pending.sdp = Some(sdp.clone());
        if !detached {
            pending.running_since = Some(now);
            self.outputs.push_back(RenegotiationOutput::SendOffer {
                offer_id: offer_id.to_owned(),
                sdp,
            });
        }
    }

    /// Creating the offer failed: the changes stay owed and are offered at the next input.
    pub fn offer_failed(&mut self, offer_id: &str) {
        if self.pending_offer_id() == Some(offer_id) {
            self.pending = None;
            self.wanted = true;
        }
    }

    /// The client's answer to a server offer.
    ///
    /// # Errors
    /// `NoOfferPending` when no offer was sent, `StaleAnswer` when `offer_id` names another
    /// (both FAILED_PRECONDITION).
    pub fn answer(&mut self, offer_id: Option<&str>) -> Result<(), RoomError> {
        let Some(pending) = self.pending.as_ref().filter(|p| p.sdp.is_some()) else {
            return Err(RoomError::NoOfferPending);
        };
        if let Some(got) = offer_id {
            if got != pending.offer_id {
                return Err(RoomError::StaleAnswer {
                    pending: pending.offer_id.clone(),
                    got: got.chars().take(128).collect(),
                });
            }
        }
        self.pending = None;
        self.maybe_offer();
        Ok(())
    }

    /// The client's signaling stream went away (resume grace): the answer timer stops.
    pub fn detach(&mut self, now: Instant) {
        self.detached = true;
        if let Some(pending) = self.pending.as_mut() {
            pending.stop(now);
        }
    }

    /// The client resumed: the pending offer is sent again and its timer runs on.
    pub fn resume(&mut self, now: Instant) {
        if !self.detached {
            return;
        }
        self.detached = false;
        if let Some(pending) = self.pending.as_mut() {
            if let Some(sdp) = &pending.sdp {
                pending.running_since = Some(now);
                self.outputs.push_back(RenegotiationOutput::SendOffer {
                    offer_id: pending.offer_id.clone(),
                    sdp: sdp.clone(),
                });
            }
        }
        self.maybe_offer();
    }

    /// When [`Renegotiation::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.pending.as_ref().and_then(Pending::deadline)
    }

    /// Re-sends or gives up when the answer timer has run out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        if pending.deadline().is_none_or(|at| now < at) {
            return;
        }
        match pending.stage {
            Stage::Sent => {
                pending.stage = Stage::Resent;
                pending.waited = Duration::ZERO;
                pending.running_since = Some(now);
                if let Some(sdp) = &pending.sdp {
                    self.outputs.push_back(RenegotiationOutput::SendOffer {
                        offer_id: pending.offer_id.clone(),
                        sdp: sdp.clone(),
                    });
                }
            }
            Stage::Resent => {
                self.closed = true;
                self.outputs.push_back(RenegotiationOutput::AnswerTimeout);
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<RenegotiationOutput> {
        self.outputs.pop_front()
    }

    fn maybe_offer(&mut self) {
        let stable = !self.client_offer && self.pending.is_none();
        if !self.wanted || !stable || !self.connected || self.detached || self.closed {
            return;
        }
        self.wanted = false;
        let offer_id = format!("{}-{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        self.pending = Some(Pending {
            offer_id: offer_id.clone(),
            sdp: None,
            stage: Stage::Sent,
            waited: Duration::ZERO,
            running_since: None,
        });
        self.outputs
            .push_back(RenegotiationOutput::CreateOffer { offer_id });
    }
}

#[cfg(test)]
#[path = "renegotiation_tests.rs"]
mod tests;
