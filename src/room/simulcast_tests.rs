use super::*;

const Q: u32 = 11;
const H: u32 = 22;
const F: u32 = 33;

/// Three layers announced `q;h;f` that arrived, measured for `seconds` at 150 k / 500 k /
/// 1.5 Mbps, with keyframe heights 180 / 360 / 720 when `heights`.
fn three(t0: Instant, heights: bool) -> SimulcastLayers {
    let mut layers = SimulcastLayers::new(["q", "h", "f"]);
    for (rid, ssrc) in [("q", Q), ("h", H), ("f", F)] {
        layers.set_ssrc(rid, ssrc);
    }
    measure(&mut layers, t0, 2, heights);
    layers
}

fn measure(layers: &mut SimulcastLayers, t0: Instant, seconds: u64, heights: bool) {
    for tick in 0..=seconds * 10 {
        let now = t0 + Duration::from_millis(tick * 100);
        for (rid, bps, height) in [
            ("q", 150_000u64, 180),
            ("h", 500_000, 360),
            ("f", 1_500_000, 720),
        ] {
            let height = heights.then_some(height);
            layers.on_sample(rid, bps / 80, height, now);
        }
    }
}

fn reports(choice: &mut LayerChoice, fraction_lost: u8, n: usize) {
    for _ in 0..n {
        choice.on_receiver_report(fraction_lost);
    }
}

#[test]
fn layers_are_ordered_by_keyframe_height_whatever_the_announced_order() {
    let t0 = Instant::now();
    let mut layers = SimulcastLayers::new(["f", "q", "h"]);
    for (rid, ssrc) in [("f", F), ("q", Q), ("h", H)] {
        layers.set_ssrc(rid, ssrc);
    }
    assert_eq!(
        layers.rids_lowest_first(),
        ["f", "q", "h"],
        "nothing measured: the announced order"
    );
    measure(&mut layers, t0, 2, false);
    assert_eq!(layers.rids_lowest_first(), ["q", "h", "f"], "by bitrate");
    assert_eq!(layers.on_sample("q", 0, Some(180), t0), Some(180));
    assert_eq!(layers.on_sample("q", 0, Some(180), t0), None, "unchanged");
    layers.on_sample("h", 0, Some(1080), t0);
    layers.on_sample("f", 0, Some(360), t0);
    assert_eq!(
        layers.rids_lowest_first(),
        ["q", "f", "h"],
        "heights decide once all are known"
    );
    assert_eq!(layers.rid_of(H), Some("h"));
}

#[test]
fn layers_that_have_not_arrived_are_not_chosen() {
    let t0 = Instant::now();
    let mut layers = SimulcastLayers::new(["q", "h", "f"]);
    layers.set_ssrc("q", Q);
    let mut choice = LayerChoice::new(10_000_000);
    assert_eq!(
        layers.choose(&mut choice, None, None, t0),
        Some(LayerRequest::Switch {
            rid: "q".into(),
            ssrc: Q,
            initial: true
        })
    );
    assert_eq!(layers.ssrc("f"), None);
}

#[test]
fn a_clean_path_gets_the_top_layer_and_a_lossy_one_steps_down() {
    let t0 = Instant::now();
    let layers = three(t0, true);
    let mut clean = LayerChoice::new(2_000_000);
    let mut lossy = LayerChoice::new(2_000_000);
    let first = layers.choose(&mut clean, None, None, t0);
    assert_eq!(
        first,
        Some(LayerRequest::Switch {
            rid: "f".into(),
            ssrc: F,
            initial: true
        })
    );
    layers.choose(&mut lossy, None, None, t0);
    // 30 % loss (77/256) for a few reports: the lossy path's estimate halves and more.
    reports(&mut clean, 0, 5);
    reports(&mut lossy, 77, 5);
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(layers.choose(&mut clean, None, Some(F), t1), None);
    match layers.choose(&mut lossy, None, Some(F), t1) {
        Some(LayerRequest::Switch { rid, initial, .. }) => {
            assert_ne!(rid, "f", "the lossy path leaves the top layer");
            assert!(!initial, "a switch, not a first choice");
        }
        other => panic!("expected a switch down, got {other:?}"),
    }
    assert!(lossy.available_bps(t1) < clean.available_bps(t1));
}

#[test]
fn max_height_caps_the_layer_and_lifting_it_goes_back_up_after_the_hold() {
    let t0 = Instant::now();
    let layers = three(t0, true);
    let mut choice = LayerChoice::new(10_000_000);
    layers.choose(&mut choice, None, None, t0);
    assert_eq!(choice.target(), Some("f"));
    assert_eq!(
        layers.choose(&mut choice, Some(360), Some(F), t0),
        Some(LayerRequest::Switch {
            rid: "h".into(),
            ssrc: H,
            initial: false
        }),
        "down at once"
    );
    // Back to no limit: up only after the higher layer fitted for UP_HOLD.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(layers.choose(&mut choice, None, Some(H), t1), None);
    let t2 = t1 + super::super::UP_HOLD;
    assert_eq!(
        layers.choose(&mut choice, None, Some(H), t2),
        Some(LayerRequest::Switch {
            rid: "f".into(),
            ssrc: F,
            initial: false
        })
    );
}

#[test]
fn a_switch_waiting_for_its_keyframe_asks_again_each_retry_interval() {
    let t0 = Instant::now();
    let layers = three(t0, true);
    let mut choice = LayerChoice::new(10_000_000);
    layers.choose(&mut choice, Some(360), None, t0);
    assert_eq!(choice.target(), Some("h"));
    // The copy still carries nothing (no keyframe yet).
    assert_eq!(layers.choose(&mut choice, Some(360), None, t0), None);
    let later = t0 + KEYFRAME_RETRY;
    assert_eq!(
        layers.choose(&mut choice, Some(360), None, later),
        Some(LayerRequest::Keyframe { ssrc: H })
    );
    assert_eq!(
        layers.choose(&mut choice, Some(360), Some(H), later + KEYFRAME_RETRY),
        None,
        "switched: nothing more to ask"
    );
}

#[test]
fn a_height_learned_later_keeps_the_subscribers_layer_and_its_hysteresis() {
    let t0 = Instant::now();
    // Announced highest first and nothing measured: the announced order is taken, so the
    // "highest" is q.
    let mut layers = SimulcastLayers::new(["f", "h", "q"]);
    for (rid, ssrc) in [("f", F), ("h", H), ("q", Q)] {
        layers.set_ssrc(rid, ssrc);
    }
    let mut choice = LayerChoice::new(10_000_000);
    layers.choose(&mut choice, None, None, t0);
    assert_eq!(choice.target(), Some("q"));
    // Heights arrive: the order flips. The selector continues from q (now the lowest), so
    // going up to f waits for the hold like any switch up.
    measure(&mut layers, t0, 2, true);
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(layers.choose(&mut choice, None, Some(Q), t1), None);
    assert_eq!(choice.target(), Some("q"));
    assert_eq!(
        layers.choose(&mut choice, None, Some(Q), t1 + super::super::UP_HOLD),
        Some(LayerRequest::Switch {
            rid: "f".into(),
            ssrc: F,
            initial: false
        })
    );
}

#[test]
fn a_layer_the_publisher_stops_sending_is_left_while_another_flows() {
    let t0 = Instant::now();
    let mut layers = three(t0, true);
    let mut choice = LayerChoice::new(10_000_000);
    layers.choose(&mut choice, None, None, t0);
    assert_eq!(choice.target(), Some("f"));
    // The publisher drops its top layer: f brings nothing while q and h flow.
    let t1 = t0 + Duration::from_secs(2);
    let mut last = t1;
    for tick in 1..=25 {
        let now = t1 + Duration::from_millis(tick * 100);
        layers.on_sample("q", 150_000 / 80, None, now);
        layers.on_sample("h", 500_000 / 80, None, now);
        layers.on_sample("f", 0, None, now);
        last = now;
    }
    assert_eq!(
        layers.choose(&mut choice, None, Some(F), last),
        Some(LayerRequest::Switch {
            rid: "h".into(),
            ssrc: H,
            initial: false
        }),
        "the highest layer still flowing"
    );
    // Every layer silent (the camera stopped): nothing to switch to, nothing changes.
    let quiet = last + LAYER_SILENCE + Duration::from_secs(1);
    assert_eq!(layers.choose(&mut choice, None, Some(H), quiet), None);
}
