//! Media path costs: `cargo bench --bench media`. A plain timing loop (no bench framework):
//! each figure is the mean over many iterations after a warm-up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should stop

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use remotemedia_webrtc::media::{
    JitterBuffer, OpusConfig, OpusDecoder, OpusEncoder, Resampler, SineGenerator, FRAME_SAMPLES,
    SAMPLE_RATE,
};

/// Frames encoded or decoded per measurement (20 s of audio).
const FRAMES: usize = 1_000;

/// Runs `f` `n` times after `n / 10` warm-up runs; returns the mean time per run.
fn time(n: usize, mut f: impl FnMut(usize)) -> Duration {
    for i in 0..n / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed() / u32::try_from(n).unwrap()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Encodes and decodes one complexity's 1,000 frames; returns (encode, decode) per frame.
fn opus_costs(complexity: u8) -> (Duration, Duration) {
    let config = OpusConfig {
        complexity,
        ..OpusConfig::default()
    };
    let mut tone = SineGenerator::new(440.0, SAMPLE_RATE, 0.5);
    let frames: Vec<Vec<f32>> = (0..FRAMES).map(|_| tone.generate(FRAME_SAMPLES)).collect();
    let mut encoder = OpusEncoder::new(&config).unwrap();
    let encode = time(FRAMES, |i| {
        black_box(encoder.encode(black_box(&frames[i % FRAMES])).unwrap());
    });
    let mut encoder = OpusEncoder::new(&config).unwrap();
    let packets: Vec<Bytes> = frames.iter().map(|f| encoder.encode(f).unwrap()).collect();
    let mut decoder = OpusDecoder::new().unwrap();
    let decode = time(FRAMES, |i| {
        black_box(decoder.decode(black_box(&packets[i % FRAMES])).unwrap());
    });
    (encode, decode)
}

/// Prints each complexity's best of three rounds, interleaved, so neither pays for a cold
/// CPU (the first round measured alone once made complexity 5 look dearer than 10).
fn opus() {
    let complexities = [5, 10];
    let mut best = [(Duration::MAX, Duration::MAX); 2];
    for _ in 0..3 {
        for (slot, &complexity) in best.iter_mut().zip(&complexities) {
            let (encode, decode) = opus_costs(complexity);
            slot.0 = slot.0.min(encode);
            slot.1 = slot.1.min(decode);
        }
    }
    for ((encode, decode), complexity) in best.into_iter().zip(complexities) {
        println!(
            "opus complexity {complexity:>2}: encode {:>6.1} µs/frame, decode {:>6.1} µs/frame (20 ms, 64 kb/s, best of 3)",
            us(encode),
            us(decode)
        );
    }
}

fn resampler() {
    let mut resampler = Resampler::new(16_000, SAMPLE_RATE).unwrap();
    let chunk = SineGenerator::new(440.0, 16_000, 0.5).generate(320); // 20 ms at 16 kHz
    let mut out = Vec::with_capacity(4_096);
    let per_chunk = time(FRAMES * 5, |_| {
        out.clear();
        resampler.process(black_box(&chunk), &mut out).unwrap();
        black_box(&out);
    });
    let realtime = 0.020 / per_chunk.as_secs_f64();
    println!(
        "resampler 16k->48k: {:>6.1} µs per 20 ms chunk, {:.1} Msamples/s in, {realtime:.0}x real time",
        us(per_chunk),
        320.0 / per_chunk.as_secs_f64() / 1e6
    );
}

fn jitter_buffer() {
    let packet = Bytes::from_static(&[0xF8, 0, 0]); // a 20 ms Opus TOC
    let mut buffer = JitterBuffer::new(Duration::from_millis(100));
    let t0 = Instant::now();
    let n = 200_000;
    // Every 10th packet arrives 30 ms late, so reordering and delay adaptation are exercised.
    let mut next = 0usize;
    let per_packet = time(n, |_| {
        let i = next;
        next += 1;
        let late = if i % 10 == 3 { 30 } else { 0 };
        let now = t0 + Duration::from_millis(i as u64 * 20 + late);
        buffer.push(now, i as u16, (i * FRAME_SAMPLES) as u32, packet.clone());
        while let Some(out) = buffer.pop(black_box(now)) {
            black_box(out);
        }
    });
    println!(
        "jitter buffer: {:>6.3} µs per packet (push + pop)",
        us(per_packet)
    );
}

fn main() {
    opus();
    resampler();
    jitter_buffer();
}
