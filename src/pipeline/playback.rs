//! Playback: the session's output of pipeline audio as the graph sees it, for barge-in
//! (DESIGN.md §4).
//!
//! Two signals cross between the graph and the output path that frames and paces pipeline
//! audio onto the session's track (`peer::audio`), both through one [`Playback`] per session:
//! - *speaking*, up: the output says when the audio it sent (and holds) will have played, so a
//!   node knows whether the pipeline's own speech is still being heard
//!   ([`Playback::speaking`]);
//! - *flush*, down: a node that was interrupted asks the output to drop the pipeline audio it
//!   holds ([`Playback::flush`]); requests coalesce (a counter, one wake-up), so the command
//!   channel is bounded whatever asks.
//!
//! The decisions are [`PlaybackState`], plain state with the time passed in.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One outbound frame's duration.
const FRAME: Duration = Duration::from_millis(20);

/// How long after its last frame has played the output still counts as speaking: the client's
/// jitter buffer still plays it, and the pipeline's speech has short gaps (between sentences,
/// a frame emitted a little late) that are no end of speech.
pub const SPEAKING_HANGOVER: Duration = Duration::from_millis(150);

/// What the output has played and what it was asked to drop (sans-IO: the caller passes `now`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackState {
    /// When the pipeline audio sent so far (and held behind it) will have played; `None`
    /// when nothing was sent since the last flush.
    until: Option<Instant>,
    /// Flushes asked for so far.
    requested: u64,
    /// Flushes the output has applied (all those asked for, in one go).
    applied: u64,
}

impl PlaybackState {
    /// A frame left at `now` with `held` more audio queued behind it.
    pub fn played(&mut self, now: Instant, held: Duration) {
        let until = now + FRAME + held;
        self.until = Some(self.until.map_or(until, |old| old.max(until)));
    }

    /// Whether the pipeline's audio is still being heard at `now`.
    pub fn speaking(&self, now: Instant) -> bool {
        self.until
            .is_some_and(|until| now < until + SPEAKING_HANGOVER)
    }

    /// Asks the output to drop what it holds; from now on it is not speaking.
    pub fn request_flush(&mut self) {
        self.requested += 1;
        self.until = None;
    }

    /// Whether a flush is owed; marks every request so far applied.
    pub fn take_flush(&mut self) -> bool {
        if self.requested == self.applied {
            return false;
        }
        self.applied = self.requested;
        self.until = None;
        true
    }
}

/// A session's [`PlaybackState`], shared by its graph and its output path.
#[derive(Debug, Clone, Default)]
pub struct Playback {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<PlaybackState>,
    /// Wakes the output when a flush is asked for (a stored permit: never missed, never more
    /// than one).
    flush: Notify,
}

impl Playback {
    /// Nothing played, nothing to flush.
    pub fn new() -> Self {
        Self::default()
    }

    /// The graph's side: whether the pipeline's audio is still being heard at `now`.
    pub fn speaking(&self, now: Instant) -> bool {
        self.inner.state.lock().speaking(now)
    }

    /// The graph's side: drop the pipeline audio the output holds, now.
    pub fn flush(&self) {
        self.inner.state.lock().request_flush();
        self.inner.flush.notify_one();
    }

    /// The output's side: a frame of pipeline audio left at `now`, `held` more behind it.
    pub fn played(&self, now: Instant, held: Duration) {
        self.inner.state.lock().played(now, held);
    }

    /// The output's side: completes when a flush may be owed (then ask
    /// [`Playback::take_flush`]). Cancel-safe: a request made meanwhile is kept.
    pub async fn flush_asked(&self) {
        self.inner.flush.notified().await;
    }

    /// The output's side: whether a flush is owed; marks it applied.
    pub fn take_flush(&self) -> bool {
        self.inner.state.lock().take_flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaking_lasts_while_frames_play_and_a_hangover_after() {
        let t0 = Instant::now();
        let mut state = PlaybackState::default();
        assert!(!state.speaking(t0), "nothing played yet");
        state.played(t0, Duration::from_millis(40));
        // The frame and the 40 ms behind it play until t0 + 60 ms, then the hangover.
        let end = t0 + Duration::from_millis(60) + SPEAKING_HANGOVER;
        assert!(state.speaking(end - Duration::from_millis(1)));
        assert!(!state.speaking(end));
        // A later frame with less behind it never shortens what was promised.
        state.played(t0 + Duration::from_millis(20), Duration::ZERO);
        assert!(state.speaking(end - Duration::from_millis(1)));
    }

    #[test]
    fn a_flush_silences_at_once_and_requests_coalesce() {
        let t0 = Instant::now();
        let mut state = PlaybackState::default();
        assert!(!state.take_flush(), "nothing asked");
        state.played(t0, Duration::from_secs(1));
        state.request_flush();
        assert!(!state.speaking(t0), "not speaking once a flush is asked");
        state.request_flush();
        assert!(state.take_flush());
        assert!(!state.take_flush(), "two requests, one flush");
        // Audio after the flush is speech again.
        state.played(t0, Duration::ZERO);
        assert!(state.speaking(t0));
    }

    #[tokio::test]
    async fn the_output_is_woken_by_a_flush_asked_before_it_waited() {
        let playback = Playback::new();
        let now = Instant::now();
        playback.played(now, Duration::ZERO);
        assert!(playback.speaking(now));
        playback.flush();
        playback.flush();
        tokio::time::timeout(Duration::from_secs(1), playback.flush_asked())
            .await
            .expect("the stored wake-up");
        assert!(playback.take_flush());
        assert!(!playback.speaking(now));
        // One wake-up for both requests: the next wait blocks.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), playback.flush_asked())
                .await
                .is_err()
        );
    }
}
