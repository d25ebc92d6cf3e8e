use std::time::Duration;

use super::*;

const OUT: u32 = 0xABCD;

fn header(ssrc: u32, seq: u16, ts: u32) -> Header {
    Header {
        version: 2,
        ssrc,
        sequence_number: seq,
        timestamp: ts,
        ..Header::default()
    }
}

/// Feeds one packet; returns (out seq, out ts) when forwarded.
fn feed(
    r: &mut RtpRewriter,
    ssrc: u32,
    seq: u16,
    ts: u32,
    keyframe: bool,
    now: Instant,
) -> Option<(u16, u32)> {
    let mut h = header(ssrc, seq, ts);
    match r.rewrite(&mut h, keyframe, now) {
        Verdict::Forward { .. } => {
            assert_eq!(
                h.ssrc, OUT,
                "every forwarded packet carries the subscriber's SSRC"
            );
            Some((h.sequence_number, h.timestamp))
        }
        Verdict::Drop => None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn audio_passes_with_the_ssrc_rewritten_and_numbering_kept() {
    let t0 = Instant::now();
    let mut r = RtpRewriter::new(OUT, 48_000, false);
    assert_eq!(feed(&mut r, 1, 100, 5000, false, t0), Some((100, 5000)));
    assert_eq!(
        feed(&mut r, 1, 101, 5960, false, t0 + ms(20)),
        Some((101, 5960))
    );
    // Reordered and lost packets keep their place: the subscriber's NACKs still work.
    assert_eq!(
        feed(&mut r, 1, 104, 8840, false, t0 + ms(80)),
        Some((104, 8840))
    );
    assert_eq!(
        feed(&mut r, 1, 103, 7880, false, t0 + ms(81)),
        Some((103, 7880))
    );
}

#[test]
fn a_pause_leaves_no_gap_and_time_moves_on_by_the_wall_clock() {
    let t0 = Instant::now();
    let mut r = RtpRewriter::new(OUT, 48_000, false);
    assert_eq!(feed(&mut r, 1, 10, 0, false, t0), Some((10, 0)));
    r.pause();
    assert_eq!(feed(&mut r, 1, 11, 960, false, t0 + ms(20)), None);
    assert_eq!(feed(&mut r, 1, 12, 1920, false, t0 + ms(40)), None);
    r.resume();
    // 500 packets later upstream; one packet later downstream, 1 s of clock later.
    assert_eq!(
        feed(&mut r, 1, 510, 480_000, false, t0 + ms(1000)),
        Some((11, 48_000))
    );
    assert_eq!(
        feed(&mut r, 1, 511, 480_960, false, t0 + ms(1020)),
        Some((12, 48_960))
    );
    // A straggler from before the resume would collide with packets sent: dropped.
    assert_eq!(feed(&mut r, 1, 509, 479_040, false, t0 + ms(1021)), None);
}

#[test]
fn video_starts_and_resumes_only_at_a_keyframe() {
    let t0 = Instant::now();
    let mut r = RtpRewriter::new(OUT, 90_000, true);
    assert!(r.wants_keyframe());
    assert_eq!(feed(&mut r, 7, 1, 0, false, t0), None);
    assert_eq!(feed(&mut r, 7, 2, 3000, true, t0 + ms(33)), Some((2, 3000)));
    assert!(!r.wants_keyframe());
    r.pause();
    assert!(!r.wants_keyframe(), "no keyframe wanted while paused");
    r.resume();
    assert!(r.wants_keyframe());
    assert_eq!(feed(&mut r, 7, 50, 90_000, false, t0 + ms(1000)), None);
    assert_eq!(
        feed(&mut r, 7, 51, 93_000, true, t0 + ms(1033)),
        Some((3, 3000 + 90_000))
    );
}

#[test]
fn a_layer_switch_waits_for_the_new_layers_keyframe_and_stays_continuous() {
    let t0 = Instant::now();
    let (low, high) = (100, 200);
    let mut r = RtpRewriter::new(OUT, 90_000, true);
    r.switch_to(low);
    assert_eq!(
        feed(&mut r, high, 9000, 777, true, t0),
        None,
        "not the target"
    );
    assert_eq!(feed(&mut r, low, 50, 1000, true, t0), Some((50, 1000)));
    assert_eq!(
        feed(&mut r, low, 51, 4000, false, t0 + ms(33)),
        Some((51, 4000))
    );
    assert_eq!(r.current_source(), Some(low));

    r.switch_to(high);
    assert!(r.wants_keyframe());
    // The high layer's delta frames are dropped; the low layer flows until the keyframe.
    assert_eq!(feed(&mut r, high, 9001, 800_000, false, t0 + ms(40)), None);
    assert_eq!(
        feed(&mut r, low, 52, 7000, false, t0 + ms(66)),
        Some((52, 7000))
    );
    let mut h = header(high, 9002, 803_000);
    assert_eq!(
        r.rewrite(&mut h, true, t0 + ms(100)),
        Verdict::Forward { resync: true }
    );
    // Next sequence number; 34 ms of 90 kHz clock after the last packet sent.
    assert_eq!((h.sequence_number, h.timestamp), (53, 7000 + 3060));
    assert_eq!(r.current_source(), Some(high));
    assert_eq!(
        feed(&mut r, low, 53, 10_000, false, t0 + ms(101)),
        None,
        "old layer"
    );
    assert_eq!(
        feed(&mut r, high, 9003, 806_000, false, t0 + ms(133)),
        Some((54, 13_060))
    );
}

#[test]
fn switching_back_to_the_current_layer_cancels_the_switch() {
    let t0 = Instant::now();
    let mut r = RtpRewriter::new(OUT, 90_000, true);
    r.switch_to(1);
    feed(&mut r, 1, 10, 0, true, t0);
    r.switch_to(2);
    r.switch_to(1);
    assert!(!r.wants_keyframe());
    assert_eq!(feed(&mut r, 2, 500, 0, true, t0 + ms(10)), None);
}

#[test]
fn sequence_numbers_wrap() {
    let t0 = Instant::now();
    let mut r = RtpRewriter::new(OUT, 48_000, false);
    assert_eq!(
        feed(&mut r, 1, 65_535, u32::MAX, false, t0),
        Some((65_535, u32::MAX))
    );
    assert_eq!(feed(&mut r, 1, 0, 959, false, t0 + ms(20)), Some((0, 959)));
    r.pause();
    r.resume();
    assert_eq!(
        feed(&mut r, 1, 9, 9_000, false, t0 + ms(40)),
        Some((1, 959 + 960))
    );
    assert!(seq_before(65_535, 0));
    assert!(!seq_before(0, 65_535));
    assert!(!seq_before(5, 5));
}
