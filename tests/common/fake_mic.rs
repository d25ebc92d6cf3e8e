//! Fake microphones for headless chromium (`--use-file-for-fake-audio-capture`): WAV files of
//! one sine tone or of a recording with pauses, and the directory browser tests leave their
//! files and screenshots in.

use std::path::{Path, PathBuf};

/// Writes ten seconds of a `hz` sine at half scale, 48 kHz mono 16-bit (chromium loops it).
pub fn write_tone_wav(path: &Path, hz: f32) {
    let rate = 48_000u32;
    let samples: Vec<i16> = (0..rate * 10)
        .map(|n| {
            let t = n as f32 / rate as f32;
            (0.5 * (2.0 * std::f32::consts::PI * hz * t).sin() * f32::from(i16::MAX)) as i16
        })
        .collect();
    write_wav(path, rate, &samples);
}

/// Writes `recording` (a 16-bit mono WAV file) followed by `silence_s` seconds of silence, at
/// the recording's rate: chromium loops it, so the pipeline hears an utterance, a pause, and
/// the utterance again.
pub fn write_speech_wav(path: &Path, recording: &Path, silence_s: u32) {
    let mut reader = hound::WavReader::open(recording).expect("open the recording");
    let rate = reader.spec().sample_rate;
    let mut samples: Vec<i16> = reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("read the recording");
    samples.extend(std::iter::repeat_n(0, (rate * silence_s) as usize));
    write_wav(path, rate, &samples);
}

/// 16-bit mono PCM at `rate`.
fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write the WAV file");
}

/// `<target>/browser`: fake-mic files and screenshots of the browser tests.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser");
    std::fs::create_dir_all(&dir).expect("create the browser artifact dir");
    dir
}
