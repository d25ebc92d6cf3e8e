//! Simulcast layer choice for one subscriber of one video track (LiveKit's *Forwarder*
//! decision, as a plain function of state).
//!
//! The subscriber gets the highest layer that fits its `max_height` and that its path carries.
//! The path estimate is loss-based, from its RTCP receiver reports (the loss controller of
//! GCC, draft-ietf-rmcat-gcc §6: above 10 % loss the estimate drops by half the loss, below
//! 2 % it grows), capped by the subscriber's REMB where it sends one and that REMB shows
//! congestion. A receive-side REMB cannot show headroom: Chromium's estimator never reports
//! more than 1.5× the rate it receives (its AIMD rate control), so a subscriber moved down to a
//! 150 kbps layer would report ~225 kbps and never be given the 600 kbps one back. A REMB at or
//! above the rate being forwarded therefore says "keeping up", and the loss-based estimate
//! decides the way up; one below it says "congested": it caps the estimate, and switching up
//! waits [`UP_BACKOFF`] (doubling on each congestion soon after a switch up, to
//! [`UP_BACKOFF_MAX`]) so a path that cannot carry the higher layer is not retried every few
//! seconds. A delay-based estimate from transport-cc feedback is not made: forwarded packets
//! carry no transport-cc of ours yet. Hysteresis: down at once (loss hurts now), up only after
//! the higher layer has fitted with headroom for [`UP_HOLD`], so a noisy estimate does not flap
//! between layers. The choice is
//! only a request: the switch takes effect at the new layer's next keyframe
//! ([`super::RtpRewriter::switch_to`]).

use std::time::{Duration, Instant};

/// How long a higher layer must fit before switching up.
pub const UP_HOLD: Duration = Duration::from_secs(2);
/// The headroom a higher layer needs: the estimate must exceed its bitrate by this factor.
pub const UP_MARGIN: f64 = 1.2;
/// After the subscriber's REMB showed congestion, switching up waits this long (then twice as
/// long after each congestion within [`UP_PROBATION`] of a switch up), at most [`UP_BACKOFF_MAX`].
pub const UP_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait before switching up again after congestion.
pub const UP_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A congestion this soon after a switch up counts against that switch (the backoff doubles).
pub const UP_PROBATION: Duration = Duration::from_secs(10);
/// A REMB older than this no longer caps the estimate.
const REMB_MAX_AGE: Duration = Duration::from_secs(5);
/// Bounds of the loss-based estimate.
const MIN_BPS: f64 = 50_000.0;
const MAX_BPS: f64 = 50_000_000.0;

/// What the selector knows about one layer of the publisher's track, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// From the layer's last keyframe header; `None` until one was seen.
    pub height: Option<u32>,
    /// The layer's measured incoming bitrate; `None` (or 0) until measured.
    pub bitrate_bps: Option<u64>,
}

impl LayerInfo {
    /// The measured bitrate, or a typical one for its height (or position) until measured.
    fn bitrate(&self, index: usize) -> f64 {
        if let Some(bps) = self.bitrate_bps.filter(|b| *b > 0) {
            return bps as f64;
        }
        let typical = match self.height {
            Some(h) if h <= 180 => 150_000,
            Some(h) if h <= 360 => 500_000,
            Some(h) if h <= 720 => 1_500_000,
            Some(_) => 2_500_000,
            None => [150_000, 500_000, 1_500_000]
                .get(index)
                .copied()
                .unwrap_or(2_500_000),
        };
        f64::from(typical)
    }
}

/// Chooses the layer one subscriber gets.
#[derive(Debug)]
pub struct LayerSelector {
    /// The loss-based estimate of the subscriber's path, bits per second.
    estimate_bps: f64,
    remb: Option<(u64, Instant)>,
    /// The layer last chosen.
    current: Option<usize>,
    /// Since when a higher layer than the current one has fitted with headroom.
    up_since: Option<Instant>,
    /// When the last switch up happened.
    switched_up_at: Option<Instant>,
    /// No switch up before this (set by congestion).
    up_blocked_until: Option<Instant>,
    /// The wait the next congestion sets.
    backoff: Duration,
}

impl LayerSelector {
    /// `initial_bps`: the estimate before any report (e.g. 1 Mbps).
    pub fn new(initial_bps: u64) -> Self {
        Self {
            estimate_bps: (initial_bps as f64).clamp(MIN_BPS, MAX_BPS),
            remb: None,
            current: None,
            up_since: None,
            switched_up_at: None,
            up_blocked_until: None,
            backoff: UP_BACKOFF,
        }
    }

    /// A receiver report block for this stream: `fraction_lost` in 1/256 (RFC 3550).
    pub fn on_receiver_report(&mut self, fraction_lost: u8) {
        let loss = f64::from(fraction_lost) / 256.0;
        if loss > 0.10 {
            self.estimate_bps *= 1.0 - 0.5 * loss;
        } else if loss < 0.02 {
            self.estimate_bps *= 1.08;
        }
        self.estimate_bps = self.estimate_bps.clamp(MIN_BPS, MAX_BPS);
    }

    /// The subscriber's REMB (its receive-side estimate for the whole connection).
    pub fn on_remb(&mut self, bitrate_bps: u64, now: Instant) {
        self.remb = Some((bitrate_bps, now));
    }

    /// What the path carries now, bits per second: the loss-based estimate capped by a fresh
    /// REMB (as [`LayerSelector::choose`] takes it before anything is forwarded, or when the
    /// REMB shows congestion).
    pub fn available_bps(&self, now: Instant) -> u64 {
        self.estimate_bps
            .min(self.fresh_remb(now).unwrap_or(f64::MAX)) as u64
    }

    fn fresh_remb(&self, now: Instant) -> Option<f64> {
        self.remb
            .filter(|(_, at)| now.saturating_duration_since(*at) < REMB_MAX_AGE)
            .map(|(bps, _)| bps as f64)
    }

    /// What the path carries while `forwarded_bps` is being sent: a REMB below it is
    /// congestion (it caps, and switching up backs off); one at or above it only says the
    /// receiver keeps up, which a receive-side estimate cannot say more than (module docs).
    fn available_while_forwarding(&mut self, forwarded_bps: f64, now: Instant) -> f64 {
        match self.fresh_remb(now) {
            Some(remb) if remb < forwarded_bps => {
                if self.up_blocked_until.is_none_or(|until| until <= now) {
                    let after_switch_up = self
                        .switched_up_at
                        .is_some_and(|at| now.saturating_duration_since(at) < UP_PROBATION);
                    self.backoff = if after_switch_up {
                        (self.backoff * 2).min(UP_BACKOFF_MAX)
                    } else {
                        UP_BACKOFF
                    };
                    self.up_blocked_until = Some(now + self.backoff);
                }
                self.estimate_bps.min(remb)
            }
            _ => self.estimate_bps,
        }
    }

    /// Tells the selector which layer (an index into the next [`LayerSelector::choose`]'s
    /// `layers`) the subscriber was last given, when the layers' order changed since (a height
    /// learned from a keyframe) or the layer left; `None` makes the next choice a first one.
    pub fn set_current(&mut self, current: Option<usize>) {
        if self.current != current {
            self.current = current;
            self.up_since = None;
        }
    }

    /// The layer to forward now (an index into `layers`, lowest first); `None` without layers.
    pub fn choose(
        &mut self,
        layers: &[LayerInfo],
        max_height: Option<u32>,
        now: Instant,
    ) -> Option<usize> {
        if layers.is_empty() {
            self.current = None;
            return None;
        }
        let available = match self.current {
            Some(current) if current < layers.len() => {
                self.available_while_forwarding(layers[current].bitrate(current), now)
            }
            _ => self.available_bps(now) as f64,
        };
        // Layers of unknown height are trusted only without a height limit; the lowest layer
        // is always a candidate, so a subscriber never loses the video altogether.
        let fits_height = |i: usize, layer: &LayerInfo| {
            i == 0 || max_height.is_none_or(|max| layer.height.is_some_and(|h| h <= max))
        };
        let best = |margin: f64| {
            layers
                .iter()
                .enumerate()
                .filter(|(i, l)| fits_height(*i, l))
                .filter(|(i, l)| *i == 0 || l.bitrate(*i) * margin <= available)
                .map(|(i, _)| i)
                .max()
                .unwrap_or(0)
        };
        let target = best(1.0);
        let current = match self.current {
            Some(current) if current < layers.len() => current,
            _ => {
                self.current = Some(target);
                return self.current;
            }
        };
        if target < current {
            self.up_since = None;
            self.current = Some(target);
        } else if best(UP_MARGIN) > current
            && self.up_blocked_until.is_none_or(|until| until <= now)
        {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_HOLD {
                self.current = Some(best(UP_MARGIN));
                self.up_since = None;
                self.switched_up_at = Some(now);
            }
        } else {
            self.up_since = None;
        }
        self.current
    }
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
