use super::*;

/// Opus TOC bytes (code 0, one frame) of a given duration: CELT FB 10/20 ms, SILK NB 40/60 ms.
fn toc(ms: u32) -> u8 {
    match ms {
        10 => 0xF0,
        20 => 0xF8,
        40 => 0x10,
        60 => 0x18,
        _ => panic!("no TOC for {ms} ms"),
    }
}

/// A fake Opus packet whose TOC gives its duration and whose body names its sequence number.
fn packet(ms: u32, seq: u16) -> Bytes {
    let [hi, lo] = seq.to_be_bytes();
    Bytes::from(vec![toc(ms), hi, lo])
}

fn id(payload: &Bytes) -> u16 {
    u16::from_be_bytes([payload[1], payload[2]])
}

/// A deterministic run: packets arrive at given ms, the player drains `pop` every 20 ms.
struct Sim {
    jb: JitterBuffer,
    t0: Instant,
    out: Vec<JitterOutput>,
    max_delay_seen: Duration,
    /// Next millisecond to simulate: runs continue where the last one stopped.
    next_ms: u64,
}

impl Sim {
    fn new(max_ms: u64) -> Self {
        Self {
            jb: JitterBuffer::new(Duration::from_millis(max_ms)),
            t0: Instant::now(),
            out: Vec::new(),
            max_delay_seen: Duration::ZERO,
            next_ms: 0,
        }
    }

    /// `arrivals`: (arrival ms, seq, rtp ts, packet ms), in any order. Runs until `end_ms`.
    fn run(&mut self, mut arrivals: Vec<(u64, u16, u32, u32)>, end_ms: u64) {
        arrivals.sort_by_key(|a| a.0);
        let mut next = 0;
        for t in self.next_ms..=end_ms {
            let now = self.t0 + Duration::from_millis(t);
            while next < arrivals.len() && arrivals[next].0 <= t {
                let (_, seq, ts, ms) = arrivals[next];
                self.jb.push(now, seq, ts, packet(ms, seq));
                next += 1;
            }
            if t % 20 == 0 {
                while let Some(output) = self.jb.pop(now) {
                    self.out.push(output);
                }
                self.max_delay_seen = self.max_delay_seen.max(self.jb.stats().delay);
            }
        }
        self.next_ms = end_ms + 1;
    }

    fn decoded(&self) -> Vec<u16> {
        self.out
            .iter()
            .filter_map(|o| match o {
                JitterOutput::Decode { payload, .. } => Some(id(payload)),
                _ => None,
            })
            .collect()
    }
}

/// `n` punctual 20 ms packets from `first_seq`/`first_ts`, one every 20 ms from `start_ms`.
fn steady(n: u16, first_seq: u16, first_ts: u32, start_ms: u64) -> Vec<(u64, u16, u32, u32)> {
    (0..n)
        .map(|i| {
            (
                start_ms + u64::from(i) * 20,
                first_seq.wrapping_add(i),
                first_ts.wrapping_add(u32::from(i) * 960),
                20,
            )
        })
        .collect()
}

/// Slots concealed after the last packet before the buffer treats the stream as paused.
const TAIL: u64 = 5;

#[test]
fn reordered_packets_play_in_sequence_order() {
    let mut sim = Sim::new(100);
    // Every 4th packet is 30 ms late, so it arrives after the next one. The first such
    // packet finds a 20 ms delay and is late; the delay then grows to cover the rest.
    let arrivals: Vec<_> = steady(40, 0, 0, 0)
        .into_iter()
        .map(|(t, s, ts, ms)| (if s % 4 == 1 { t + 30 } else { t }, s, ts, ms))
        .collect();
    sim.run(arrivals, 1_000);
    let expected: Vec<u16> = (0..40).filter(|&s| s != 1).collect();
    assert_eq!(sim.decoded(), expected);
    let stats = sim.jb.stats();
    assert_eq!((stats.lost, stats.late), (0, 1));
    assert!(stats.delay >= Duration::from_millis(30), "{stats:?}");
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut sim = Sim::new(100);
    let mut arrivals = steady(10, 0, 0, 0);
    arrivals.push((45, 2, 1920, 20)); // buffered twice
    arrivals.push((150, 1, 960, 20)); // already played
    sim.run(arrivals, 400);
    assert_eq!(sim.decoded(), (0..10).collect::<Vec<_>>());
    let stats = sim.jb.stats();
    assert_eq!(stats.duplicate, 2);
    assert_eq!(stats.received, 12);
    assert_eq!((stats.lost, stats.late), (0, 0));
}

#[test]
fn sequence_and_timestamp_wraparound_is_seamless() {
    let mut sim = Sim::new(100);
    let mut arrivals = steady(12, 65_530, u32::MAX - 960 * 3, 0);
    arrivals[7].0 += 15; // reordered and lost packets across the wrap
    arrivals.remove(9);
    sim.run(arrivals, 400);
    let expected: Vec<u16> = (0..12)
        .filter(|&i| i != 9)
        .map(|i| 65_530u16.wrapping_add(i))
        .collect();
    assert_eq!(sim.decoded(), expected);
    let stats = sim.jb.stats();
    assert_eq!((stats.lost, stats.late, stats.fec_recovered), (1, 0, 1));
    assert_eq!(stats.concealed, TAIL);
}

#[test]
fn a_burst_of_three_lost_packets_is_concealed_then_fec() {
    let mut sim = Sim::new(100);
    let arrivals: Vec<_> = steady(20, 100, 0, 0)
        .into_iter()
        .filter(|a| !(105..=107).contains(&a.1))
        .collect();
    sim.run(arrivals, 500);
    let slots: Vec<String> = sim.out[4..10]
        .iter()
        .map(|o| match o {
            JitterOutput::Decode { payload, .. } => format!("d{}", id(payload)),
            JitterOutput::Conceal { samples } => format!("c{samples}"),
            JitterOutput::Fec {
                next_payload,
                samples,
            } => format!("f{}:{samples}", id(next_payload)),
        })
        .collect();
    assert_eq!(slots, ["d104", "c960", "c960", "f108:960", "d108", "d109"]);
    let stats = sim.jb.stats();
    assert_eq!(
        (stats.lost, stats.concealed, stats.fec_recovered),
        (3, 2 + TAIL, 1)
    );
}

#[test]
fn a_single_loss_is_recovered_from_the_next_packets_fec() {
    let mut sim = Sim::new(100);
    let arrivals: Vec<_> = steady(10, 0, 0, 0)
        .into_iter()
        .filter(|a| a.1 != 4)
        .collect();
    sim.run(arrivals, 300);
    let fec = sim
        .out
        .iter()
        .position(|o| matches!(o, JitterOutput::Fec { .. }))
        .expect("an FEC output");
    assert_eq!(
        sim.out[fec],
        JitterOutput::Fec {
            next_payload: packet(20, 5),
            samples: 960
        }
    );
    assert_eq!(
        sim.out[fec + 1],
        JitterOutput::Decode {
            payload: packet(20, 5),
            samples: 960,
            skip: 0
        }
    );
    assert_eq!(sim.jb.stats().fec_recovered, 1);
    assert_eq!(sim.jb.stats().concealed, TAIL);
}

#[test]
fn a_lost_60_ms_packet_is_concealed_with_60_ms() {
    let mut sim = Sim::new(200);
    let arrivals: Vec<_> = (0..10u16)
        .filter(|&i| i != 4 && i != 5)
        .map(|i| (u64::from(i) * 60, i, u32::from(i) * 2880, 60))
        .collect();
    sim.run(arrivals, 900);
    // With a 5 ms delay the packet after the gap is not here yet: PLC, not FEC.
    let slots: Vec<_> = sim.out.iter().skip(4).take(4).cloned().collect();
    assert_eq!(
        slots,
        [
            JitterOutput::Conceal { samples: 2880 },
            JitterOutput::Conceal { samples: 2880 },
            JitterOutput::Decode {
                payload: packet(60, 6),
                samples: 2880,
                skip: 0
            },
            JitterOutput::Decode {
                payload: packet(60, 7),
                samples: 2880,
                skip: 0
            }
        ]
    );
    assert_eq!(sim.decoded(), [0, 1, 2, 3, 6, 7, 8, 9]);
}

#[test]
fn a_packet_after_its_slot_is_late_and_its_slot_concealed() {
    let mut sim = Sim::new(100);
    let mut arrivals = steady(3, 0, 0, 0);
    arrivals.push((200, 3, 2880, 20)); // its slot passed ~120 ms earlier
    arrivals.extend(steady(10, 4, 3840, 80));
    sim.run(arrivals, 600);
    let stats = sim.jb.stats();
    assert_eq!(stats.late, 1);
    assert_eq!(stats.lost, 0, "a late packet was still received");
    assert_eq!(stats.fec_recovered, 1);
    assert!(!sim.decoded().contains(&3));
}

/// 80 ms of jitter on every 5th packet for 4 s, then 6 s of a perfect network.
fn jittery_then_steady(max_ms: u64) -> (Sim, Duration) {
    let mut sim = Sim::new(max_ms);
    let arrivals: Vec<_> = steady(500, 0, 0, 0)
        .into_iter()
        .map(|(t, s, ts, ms)| {
            let late = if s < 200 && s % 5 == 3 { 80 } else { 0 };
            (t + late, s, ts, ms)
        })
        .collect();
    let (before, after): (Vec<_>, Vec<_>) = arrivals.into_iter().partition(|a| a.0 <= 4_000);
    sim.run(before, 4_000);
    let during = sim.jb.stats().delay;
    sim.run(after, 10_000);
    (sim, during)
}

#[test]
fn the_delay_grows_with_jitter_and_shrinks_after_it_stops() {
    let (sim, during) = jittery_then_steady(200);
    let stats = sim.jb.stats();
    assert!(
        during >= Duration::from_millis(80),
        "delay under jitter {during:?}"
    );
    assert!(
        stats.delay <= Duration::from_millis(30),
        "delay after {stats:?}"
    );
    assert!(stats.discarded >= 3, "shrinking drops packets: {stats:?}");
    assert_eq!(stats.lost, 0);
}

#[test]
fn the_delay_never_exceeds_the_maximum() {
    let (sim, during) = jittery_then_steady(50);
    assert!(
        sim.max_delay_seen <= Duration::from_millis(50),
        "{:?}",
        sim.max_delay_seen
    );
    assert_eq!(during, Duration::from_millis(50));
    let stats = sim.jb.stats();
    assert!(
        stats.late >= 30,
        "80 ms late packets miss a 50 ms buffer: {stats:?}"
    );
}

#[test]
fn a_stopped_stream_is_concealed_briefly_then_resumes_on_the_next_packet() {
    let mut sim = Sim::new(100);
    sim.run(steady(10, 0, 0, 0), 1_000);
    let conceals = sim
        .out
        .iter()
        .filter(|o| matches!(o, JitterOutput::Conceal { .. }))
        .count();
    assert_eq!(conceals, 5, "tail concealment is bounded");
    // One second later (DTX-like pause) the stream resumes.
    sim.run(steady(10, 10, 9600 + 48_000, 1_200), 1_800);
    assert_eq!(sim.decoded(), (0..20).collect::<Vec<_>>());
    assert_eq!(sim.jb.stats().lost, 0);
}

#[test]
fn next_due_is_when_pop_has_the_next_frame() {
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(Duration::from_millis(100));
    assert_eq!(jb.next_due(), None);
    jb.push(t0, 1, 0, Bytes::from_static(&[0xf8, 0xff, 0xfe]));
    let due = jb.next_due().unwrap();
    assert!(due > t0);
    assert_eq!(jb.pop(due - Duration::from_micros(500)), None);
    assert!(jb.pop(due).is_some());
}

#[test]
fn a_clean_path_plays_with_the_margin_only() {
    let mut sim = Sim::new(100);
    sim.run(steady(100, 0, 0, 0), 2_000);
    let stats = sim.jb.stats();
    assert_eq!(stats.delay, Duration::from_millis(5), "{stats:?}");
    assert_eq!(stats.concealed, 0);
    assert_eq!(sim.decoded(), (0..100).collect::<Vec<_>>());
}

#[test]
fn a_loss_raises_the_floor_to_one_packet_so_the_next_loss_is_rebuilt_from_fec() {
    // The sim plays on a 20 ms tick, which hides the floor: play every millisecond instead,
    // as the playout task does when it wakes at each frame's due time.
    let mut jb = JitterBuffer::new(Duration::from_millis(100));
    let t0 = Instant::now();
    let mut outputs = Vec::new();
    let lost = [50u16, 100];
    for t in 0..4_000u64 {
        let now = t0 + Duration::from_millis(t);
        let seq = (t / 20) as u16;
        if t % 20 == 0 && !lost.contains(&seq) {
            jb.push(now, seq, u32::from(seq) * 960, packet(20, seq));
        }
        while let Some(output) = jb.pop(now) {
            outputs.push(output);
        }
    }
    let first = outputs
        .iter()
        .position(|o| !matches!(o, JitterOutput::Decode { .. }))
        .expect("the first loss");
    // At a 5 ms delay the packet after the first loss is not here yet: concealment.
    assert!(
        matches!(outputs[first], JitterOutput::Conceal { .. }),
        "{:?}",
        outputs[first]
    );
    let stats = jb.stats();
    assert_eq!(stats.fec_recovered, 1, "{stats:?}");
    assert!(stats.delay >= Duration::from_millis(20), "{stats:?}");
}

#[test]
fn the_loss_floor_is_forgotten_after_ten_clean_seconds() {
    let mut sim = Sim::new(100);
    let arrivals: Vec<_> = steady(1_200, 0, 0, 0)
        .into_iter()
        .filter(|a| a.1 != 10)
        .collect();
    sim.run(arrivals, 24_000);
    let stats = sim.jb.stats();
    assert!(stats.delay <= Duration::from_millis(10), "{stats:?}");
    assert!(stats.discarded >= 1, "{stats:?}");
}

#[test]
fn a_target_less_than_a_granule_above_the_delay_is_not_due_now() {
    // 1 ms of jitter on every other packet: the target lands between granules of the delay.
    let mut jb = JitterBuffer::new(Duration::from_millis(100));
    let t0 = Instant::now();
    for i in 0..50u16 {
        let jitter = if i % 2 == 1 { 1 } else { 0 };
        let now = t0 + Duration::from_millis(u64::from(i) * 20 + jitter);
        jb.push(now, i, u32::from(i) * 960, packet(20, i));
        while jb.pop(now).is_some() {}
        let due = jb.next_due().expect("playing");
        assert!(
            due > now || jb.pop(now).is_some(),
            "due {due:?} at {now:?} with nothing to play: the playout would spin"
        );
    }
}

#[test]
fn late_packets_are_jitter_not_loss_and_leave_the_floor_alone() {
    // Every 10th packet 12 ms late: the delay covers it from the jitter, the loss floor
    // (20 ms) never comes.
    let mut jb = JitterBuffer::new(Duration::from_millis(100));
    let t0 = Instant::now();
    for t in 0..6_000u64 {
        let now = t0 + Duration::from_millis(t);
        for seq in 0..300u16 {
            let late = if seq % 10 == 9 { 12 } else { 0 };
            if u64::from(seq) * 20 + late == t {
                jb.push(now, seq, u32::from(seq) * 960, packet(20, seq));
            }
        }
        while jb.pop(now).is_some() {}
    }
    let stats = jb.stats();
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert!(stats.target_delay >= Duration::from_millis(12), "{stats:?}");
    assert!(stats.target_delay < Duration::from_millis(20), "{stats:?}");
}
