use std::time::{Duration, Instant};

use super::*;
use crate::room::{LayerChoice, LayerRequest};

/// The relay SSRCs of layers q, h, f of producer 3 on a receiving worker.
const Q: u32 = (3 << 4) | 1;
const H: u32 = (3 << 4) | 2;
const F: u32 = (3 << 4) | 3;

/// A relayed track's layers as a receiving worker knows them from the record: all
/// announced, each at its relay SSRC, none measured yet.
fn relayed() -> SimulcastLayers {
    let mut layers = SimulcastLayers::new(["q", "h", "f"]);
    for (rid, ssrc) in [("q", Q), ("h", H), ("f", F)] {
        layers.set_ssrc(rid, ssrc);
    }
    layers
}

fn set(indexes: &[u8]) -> BTreeSet<u8> {
    indexes.iter().copied().collect()
}

#[test]
fn the_layers_asked_for_are_the_subscribers_targets_and_what_their_copies_carry_until_a_switch() {
    let layers = relayed();
    assert_eq!(
        wanted_layers(&layers, []),
        set(&[]),
        "no subscriber: nothing of the track is sent"
    );
    assert_eq!(
        wanted_layers(&layers, [(Some("h"), Some(H))]),
        set(&[1]),
        "one subscriber on h: h only, neither q nor f"
    );
    assert_eq!(
        wanted_layers(&layers, [(Some("h"), Some(H)), (Some("f"), Some(H))]),
        set(&[1, 2]),
        "a switch to f waits for f's keyframe on h: both come meanwhile"
    );
    assert_eq!(
        wanted_layers(&layers, [(Some("q"), None), (None, Some(F))]),
        set(&[0, 2]),
        "a first layer awaited; a copy that carries f"
    );
    assert_eq!(
        wanted_layers(&layers, [(Some("x"), Some(12_345))]),
        set(&[]),
        "a rid or SSRC the track does not have asks for nothing"
    );
}

#[test]
fn subscribers_layer_choices_on_the_receiving_worker_decide_the_layers_asked_for() {
    let now = Instant::now();
    let layers = relayed();
    // A new subscriber's first choice, at the initial 1 Mbps estimate: h (typical 500 kbps
    // fits, f's typical 1.5 Mbps does not).
    let mut alice = LayerChoice::default();
    let request = layers.choose(&mut alice, None, None, now);
    assert_eq!(
        request,
        Some(LayerRequest::Switch {
            rid: "h".into(),
            ssrc: H,
            initial: true
        })
    );
    // One limited to 180 lines while no height is known: the lowest layer.
    let mut bob = LayerChoice::default();
    layers.choose(&mut bob, Some(180), None, now);
    assert_eq!(bob.target(), Some("q"));
    let asked = wanted_layers(&layers, [(alice.target(), None), (bob.target(), None)]);
    assert_eq!(
        asked,
        set(&[0, 1]),
        "f is not asked for: nobody here needs it"
    );
}

#[test]
fn a_layer_not_asked_for_stays_a_choice_where_a_silent_one_would_not() {
    let t0 = Instant::now();
    // q, h and f came for a second; then f was no longer asked for (and stopped) while q
    // and h kept coming.
    let mut idle = relayed();
    for tick in 0..=30u64 {
        let now = t0 + Duration::from_millis(tick * 100);
        for (rid, bytes) in [("q", 200u64), ("h", 600), ("f", 2_000)] {
            let bytes = if rid == "f" && tick > 10 { 0 } else { bytes };
            idle.on_sample(rid, bytes, None, now);
        }
        if tick > 10 {
            idle_unwanted(&mut idle, &set(&[0, 1]));
        }
    }
    let now = t0 + Duration::from_secs(3);
    let fast = || LayerChoice::new(20_000_000);

    // Without the idle marking, f is a layer the publisher stopped: not chosen.
    let mut silent = relayed();
    for tick in 0..=30u64 {
        let at = t0 + Duration::from_millis(tick * 100);
        for (rid, bytes) in [("q", 200u64), ("h", 600), ("f", 2_000)] {
            let bytes = if rid == "f" && tick > 10 { 0 } else { bytes };
            silent.on_sample(rid, bytes, None, at);
        }
    }
    let mut choice = fast();
    silent.choose(&mut choice, None, None, now);
    assert_eq!(choice.target(), Some("h"), "a silent layer is left");

    // Not asked for is not silent: a subscriber whose path carries it is given f (and the
    // worker then asks for it).
    let mut choice = fast();
    idle.choose(&mut choice, None, None, now);
    assert_eq!(choice.target(), Some("f"));
    assert_eq!(wanted_layers(&idle, [(choice.target(), None)]), set(&[2]));
}
