//! Reports and silence on paper: counts, loss, LSR/DLSR round trips, no sockets or clocks.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;

use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn ntp_time_counts_from_1900_with_a_binary_fraction() {
    let at = UNIX_EPOCH + Duration::from_millis(1_500);
    let ntp = ntp_time(at);
    assert_eq!(ntp >> 32, NTP_UNIX_OFFSET + 1);
    assert_eq!(ntp & 0xffff_ffff, 1 << 31, "half a second");
    assert!(ntp_time(SystemTime::now()) > ntp);
}

#[test]
fn an_idle_link_still_reports_and_a_busy_one_reports_each_track() {
    let now = Instant::now();
    let mut reports = SendReports::default();
    let empty = reports.report(now, 1);
    assert_eq!(empty.len(), 1);
    let rr = empty[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
    assert_eq!(rr.ssrc, LINK_SSRC);
    assert!(rr.reports.is_empty());
    assert!(!marshal(&empty).is_empty());

    reports.on_rtp(0x11, 960, 100, now);
    reports.on_rtp(0x11, 1920, 120, now);
    reports.on_rtp(0x21, 3000, 1000, now);
    let busy = reports.report(now, 7 << 32);
    let srs: Vec<&SenderReport> = busy
        .iter()
        .map(|p| p.as_any().downcast_ref::<SenderReport>().unwrap())
        .collect();
    assert_eq!(srs.len(), 2);
    assert_eq!(
        (
            srs[0].ssrc,
            srs[0].packet_count,
            srs[0].octet_count,
            srs[0].rtp_time
        ),
        (0x11, 2, 220, 1920)
    );
    assert_eq!(srs[1].ntp_time, 7 << 32);

    // A track that stopped long ago is reported no more; the link still is.
    let later = now + SENDER_IDLE;
    let idle = reports.report(later, 8 << 32);
    assert!(idle[0].as_any().downcast_ref::<ReceiverReport>().is_some());
}

#[test]
fn the_round_trip_is_a_s_time_minus_lsr_minus_b_s_hold() {
    // LSR at A's 10 s, B held it 0.25 s, back at A's 10.3 s: 50 ms.
    let lsr = 10 << 16;
    let dlsr = 65_536 / 4;
    let now = (10 << 16) + (65_536 * 3 / 10);
    let rtt = round_trip(now, lsr, dlsr).unwrap();
    assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
    assert_eq!(round_trip(now, 0, dlsr), None, "no sender report yet");
    assert_eq!(
        round_trip(lsr, lsr, dlsr),
        None,
        "a hold longer than the trip is no trip"
    );
}

#[test]
fn a_receiver_report_says_what_was_lost_and_answers_the_sender_report() {
    let start = Instant::now();
    let mut b = ReceiveReports::new(start);
    // 20 ms audio packets at 48 kHz: 10 sent, 2 lost, none late.
    for seq in [1u16, 2, 3, 5, 6, 7, 9, 10] {
        let at = start + MS * 20 * u32::from(seq);
        b.on_rtp(0x11, seq, u32::from(seq) * 960, 48_000, at);
    }
    let sr_ntp = 42u64 << 32;
    let sr_at = start + MS * 200;
    b.on_sender_report(0x11, sr_ntp, sr_at);
    b.on_sender_report(0x99, sr_ntp, sr_at); // not a track here: ignored
    let report = b.report(sr_at + MS * 10);
    assert_eq!(report.ssrc, LINK_SSRC);
    assert_eq!(report.reports.len(), 1);
    let block = &report.reports[0];
    assert_eq!(block.ssrc, 0x11);
    assert_eq!(block.total_lost, 2);
    assert_eq!(block.fraction_lost, 51, "2 of 10, in 256ths");
    assert_eq!(block.last_sequence_number, 10);
    assert_eq!(block.last_sender_report, 42 << 16);
    assert!(
        (i64::from(block.delay) - 655).abs() <= 1,
        "10 ms held: {}",
        block.delay
    );
    assert_eq!(block.jitter, 0, "evenly spaced");

    // Nothing lost since: the next report's fraction is zero, the total stays.
    for seq in 11u16..=20 {
        b.on_rtp(
            0x11,
            seq,
            u32::from(seq) * 960,
            48_000,
            start + MS * 20 * u32::from(seq),
        );
    }
    let block = &b.report(start + MS * 500).reports[0];
    assert_eq!((block.fraction_lost, block.total_lost), (0, 2));

    // What A reads from it, at A's clock 20 ms after its sender report went out.
    let quality = SendReports::on_receiver_report(
        &b.report(sr_at + MS * 10).reports,
        sr_ntp + (20 << 32) / 1000,
    );
    assert_eq!(quality.len(), 1);
    let rtt = quality[0].rtt.unwrap();
    assert!((rtt.as_secs_f64() - 0.010).abs() < 0.001, "{rtt:?}");
    assert_eq!(quality[0].fraction_lost, 0.0);
}

#[test]
fn sequence_numbers_wrap_without_counting_a_loss() {
    let start = Instant::now();
    let mut b = ReceiveReports::new(start);
    for (i, seq) in [65_534u16, 65_535, 0, 1].into_iter().enumerate() {
        b.on_rtp(
            0x11,
            seq,
            i as u32 * 960,
            48_000,
            start + MS * 20 * i as u32,
        );
    }
    let block = &b.report(start + MS * 100).reports[0];
    assert_eq!(block.total_lost, 0);
    assert_eq!(block.last_sequence_number, (1 << 16) | 1);
    b.retain(|ssrc| ssrc != 0x11);
    assert!(b.report(start).reports.is_empty(), "a track that left");
}

#[test]
fn jitter_grows_with_uneven_arrival() {
    let start = Instant::now();
    let mut b = ReceiveReports::new(start);
    for i in 0u32..50 {
        let wobble = if i % 2 == 0 { 0 } else { 10 };
        b.on_rtp(
            0x11,
            i as u16,
            i * 960,
            48_000,
            start + MS * (20 * i + wobble),
        );
    }
    let jitter = f64::from(b.report(start + MS * 1_000).reports[0].jitter) / 65_536.0;
    assert!(jitter > 0.004 && jitter < 0.011, "{jitter}");
}

#[test]
fn a_link_is_silent_once_nothing_came_for_its_limit() {
    let start = Instant::now();
    let mut silence = Silence::new(start, RECEIVE_SILENCE);
    assert!(!silence.is_silent(start + MS * 1_999));
    silence.heard(start + MS * 1_500);
    assert!(!silence.is_silent(start + MS * 3_000));
    assert_eq!(silence.deadline(), start + MS * 3_500);
    silence.heard(start); // an older packet changes nothing
    assert!(silence.is_silent(start + MS * 3_500));
}
