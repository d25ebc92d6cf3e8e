use super::*;

/// The usual three layers with measured bitrates.
fn three() -> [LayerInfo; 3] {
    [
        LayerInfo {
            height: Some(180),
            bitrate_bps: Some(150_000),
        },
        LayerInfo {
            height: Some(360),
            bitrate_bps: Some(500_000),
        },
        LayerInfo {
            height: Some(720),
            bitrate_bps: Some(1_500_000),
        },
    ]
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_highest_layer_that_fits_max_height_and_the_path() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&three(), None, t0), Some(2));
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&three(), Some(360), t0), Some(1));
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(
        s.choose(&three(), Some(100), t0),
        Some(0),
        "nothing fits: the lowest"
    );
    let mut s = LayerSelector::new(600_000);
    assert_eq!(
        s.choose(&three(), None, t0),
        Some(1),
        "720p does not fit 600 kbps"
    );
    assert_eq!(s.choose(&[], None, t0), None);
}

#[test]
fn layers_of_unknown_height_are_not_trusted_under_a_height_limit() {
    let t0 = Instant::now();
    let mut layers = three();
    for layer in &mut layers {
        layer.height = None;
    }
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&layers, Some(360), t0), Some(0));
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&layers, None, t0), Some(2));
}

#[test]
fn heavy_loss_switches_down_at_once() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(2_000_000);
    assert_eq!(s.choose(&three(), None, t0), Some(2));
    // 30 % loss: 2 Mbps × 0.85 = 1.7 Mbps, still fits 1.5 Mbps.
    s.on_receiver_report(77);
    assert_eq!(s.choose(&three(), None, t0 + secs(1)), Some(2));
    // Again: 1.445 Mbps no longer does.
    s.on_receiver_report(77);
    assert_eq!(s.choose(&three(), None, t0 + secs(2)), Some(1));
    // Moderate loss (2–10 %) holds the estimate.
    let before = s.available_bps(t0);
    s.on_receiver_report(13);
    assert_eq!(s.available_bps(t0), before);
}

#[test]
fn remb_caps_the_estimate_while_fresh() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(10_000_000);
    s.on_remb(400_000, t0);
    assert_eq!(s.available_bps(t0), 400_000);
    assert_eq!(s.choose(&three(), None, t0), Some(0));
    assert_eq!(
        s.available_bps(t0 + secs(6)),
        10_000_000,
        "a stale REMB is ignored"
    );
}

#[test]
fn switching_up_waits_for_two_seconds_of_headroom() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(400_000);
    assert_eq!(s.choose(&three(), None, t0), Some(0));
    // Seven clean reports grow the estimate to 686 kbps: 360p (500 kbps × 1.2) fits, and is
    // taken only 2 s later.
    for _ in 0..7 {
        s.on_receiver_report(0);
    }
    assert_eq!(s.choose(&three(), None, t0 + secs(1)), Some(0));
    assert_eq!(s.choose(&three(), None, t0 + secs(2)), Some(0));
    // A dip (30 % loss: 582 kbps) restarts the wait.
    s.on_receiver_report(77);
    assert_eq!(s.choose(&three(), None, t0 + secs(2)), Some(0));
    s.on_receiver_report(0);
    assert_eq!(s.choose(&three(), None, t0 + secs(3)), Some(0));
    assert_eq!(s.choose(&three(), None, t0 + secs(4)), Some(0));
    assert_eq!(s.choose(&three(), None, t0 + secs(5)), Some(1));
    // Within the margin but without headroom: no switch up, no switch down.
    assert_eq!(s.choose(&three(), None, t0 + secs(9)), Some(1));
}

#[test]
fn a_remb_that_keeps_up_does_not_hold_a_subscriber_down() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&three(), Some(180), t0), Some(0));
    // Chromium's REMB while it gets the 150 kbps layer: never more than 1.5× that.
    s.on_remb(225_000, t0 + secs(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(1)), Some(0));
    assert_eq!(
        s.choose(&three(), None, t0 + secs(3)),
        Some(2),
        "the limit lifted on a path that keeps up: the top layer after the hold"
    );
}

#[test]
fn a_congested_remb_caps_and_backs_switching_up_off() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&three(), None, t0), Some(2));
    // The receiver falls behind the 1.5 Mbps layer: down at once to what its REMB allows.
    s.on_remb(700_000, t0 + secs(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(1)), Some(1));
    // At 360p it keeps up, but switching up waits out the backoff (5 s), then the hold (2 s).
    s.on_remb(750_000, t0 + secs(2));
    assert_eq!(s.choose(&three(), None, t0 + secs(2)), Some(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(5)), Some(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(6)), Some(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(8)), Some(2));
    // Congested again right after that switch up: the next wait is twice as long.
    s.on_remb(700_000, t0 + secs(9));
    assert_eq!(s.choose(&three(), None, t0 + secs(9)), Some(1));
    s.on_remb(750_000, t0 + secs(10));
    assert_eq!(s.choose(&three(), None, t0 + secs(17)), Some(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(19)), Some(1));
    assert_eq!(s.choose(&three(), None, t0 + secs(21)), Some(2));
}

#[test]
fn a_lower_max_height_switches_down_at_once_and_a_higher_one_waits() {
    let t0 = Instant::now();
    let mut s = LayerSelector::new(10_000_000);
    assert_eq!(s.choose(&three(), None, t0), Some(2));
    assert_eq!(s.choose(&three(), Some(180), t0), Some(0));
    assert_eq!(s.choose(&three(), Some(720), t0), Some(0));
    assert_eq!(s.choose(&three(), Some(720), t0 + secs(2)), Some(2));
}

#[test]
fn a_clean_path_grows_the_estimate() {
    let mut s = LayerSelector::new(300_000);
    let t0 = Instant::now();
    for _ in 0..20 {
        s.on_receiver_report(0);
    }
    assert!(s.available_bps(t0) > 1_200_000);
    s.on_receiver_report(255);
    assert!(s.available_bps(t0) < 1_200_000);
}
