//! The wrapper on real speech: Debian's recorded `Front_Center.wav` (alsa-utils) and
//! espeak-ng's digits, decoded with Debian's `pocketsphinx-en-us` model (`make deps`).

use std::time::Instant;

use super::*;
use crate::media::Resampler;
use crate::pipeline::nodes::speech_engine::{parse_wav, EspeakNg, SpeechEngine, SPEECH_RATE};
use crate::pipeline::nodes::speech_recognizer::DEFAULT_MODEL_DIR;
use crate::pipeline::nodes::Params;

pub(crate) const FRONT_CENTER: &str = "/usr/share/sounds/alsa/Front_Center.wav";

pub(crate) fn config(search: Search) -> DecoderConfig {
    let base = Path::new(DEFAULT_MODEL_DIR);
    DecoderConfig {
        hmm: base.join("en-us"),
        dict: base.join("cmudict-en-us.dict"),
        search,
    }
}

pub(crate) fn language_model() -> Search {
    Search::LanguageModel(Path::new(DEFAULT_MODEL_DIR).join("en-us.lm.bin"))
}

/// 48 kHz mono samples as 16 kHz 16-bit.
pub(crate) fn to_16k(samples: &[f32]) -> Vec<i16> {
    let mut resampler = Resampler::new(SPEECH_RATE, DECODER_RATE).unwrap();
    let mut out = Vec::new();
    resampler.process(samples, &mut out).unwrap();
    resampler.flush(&mut out);
    out.into_iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32_767.0) as i16)
        .collect()
}

/// Front_Center.wav at 48 kHz ("front center", a recorded human voice).
pub(crate) fn front_center() -> Vec<f32> {
    parse_wav(&std::fs::read(FRONT_CENTER).expect("alsa-utils' Front_Center.wav (make deps)"))
        .unwrap()
}

/// espeak-ng speaking `text`, at 48 kHz.
pub(crate) fn espeak(text: &str) -> Vec<f32> {
    let params = serde_json::json!({});
    let engine = EspeakNg::new(&Params::new("tts", &params).unwrap()).unwrap();
    engine.synthesize(text).unwrap()
}

/// Decodes `audio` (16 kHz) as one utterance in 20 ms pieces, as a stream would; the final
/// hypothesis and the real-time factor of the decoding.
fn decode(decoder: &mut Decoder, audio: &[i16]) -> (String, f64) {
    let started = Instant::now();
    decoder.start().unwrap();
    for piece in audio.chunks(320) {
        decoder.process(piece).unwrap();
    }
    decoder.end().unwrap();
    let text = decoder.hypothesis();
    let rtf = started.elapsed().as_secs_f64() / (audio.len() as f64 / f64::from(DECODER_RATE));
    (text, rtf)
}

#[test]
fn a_keyword_list_finds_the_words_of_a_recorded_voice() {
    let mut decoder = Decoder::new(&config(Search::Keywords(vec![
        "front center".into(),
        "rear left".into(),
        "side right".into(),
    ])))
    .unwrap();
    let audio = to_16k(&front_center());
    let (text, rtf) = decode(&mut decoder, &audio);
    println!("Front_Center.wav with keywords: `{text}`, real-time factor {rtf:.3}");
    assert_eq!(text, "front center");
    // Another phrase of the list, another recorded voice file.
    let rear_left = parse_wav(&std::fs::read("/usr/share/sounds/alsa/Rear_Left.wav").unwrap());
    let (other, _) = decode(&mut decoder, &to_16k(&rear_left.unwrap()));
    assert_eq!(other, "rear left");
    // The decoder is reused for the next utterance.
    let (again, _) = decode(&mut decoder, &audio);
    assert!(again.contains("front center"), "`{again}`");
}

#[test]
fn the_language_model_transcribes_a_recorded_voice_faster_than_real_time() {
    let mut decoder = Decoder::new(&config(language_model())).unwrap();
    let audio = to_16k(&front_center());
    let (text, rtf) = decode(&mut decoder, &audio);
    println!("Front_Center.wav with the language model: `{text}`, real-time factor {rtf:.3}");
    // Measured: "friend center" (free speech is far less accurate than a keyword list).
    assert!(text.contains("center"), "`{text}`");
    assert!(rtf < 1.0, "real-time factor {rtf}");
}

/// How many of `expected`'s words came back in `text`, in order (a longest common
/// subsequence, so an inserted or a missed word costs only itself).
pub(crate) fn words_recognized(expected: &str, text: &str) -> usize {
    let expected: Vec<&str> = expected.split_whitespace().collect();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut table = vec![vec![0usize; words.len() + 1]; expected.len() + 1];
    for (i, want) in expected.iter().enumerate() {
        for (j, word) in words.iter().enumerate() {
            table[i + 1][j + 1] = if want == word {
                table[i][j] + 1
            } else {
                table[i][j + 1].max(table[i + 1][j])
            };
        }
    }
    table[expected.len()][words.len()]
}

#[test]
fn espeak_digits_come_back_as_most_of_the_digits() {
    const DIGITS: &str = "one two three four five";
    let mut decoder = Decoder::new(&config(language_model())).unwrap();
    let audio = to_16k(&espeak(DIGITS));
    // A fresh decoder's first utterance is decoded with the model's initial cepstral mean,
    // which is far from espeak-ng's: measured "want to report on" (0 of 5). From the second
    // utterance on, the mean has adapted (a pooled decoder lives for the process): measured
    // 5 of 5, twice in a row. The threshold is 4 of 5, from that.
    let (first, _) = decode(&mut decoder, &audio);
    let mut results = Vec::new();
    for _ in 0..2 {
        let (text, rtf) = decode(&mut decoder, &audio);
        let got = words_recognized(DIGITS, &text);
        println!("espeak digits: `{text}` ({got}/5), real-time factor {rtf:.3}");
        assert!(rtf < 1.0, "real-time factor {rtf}");
        results.push((got, text));
    }
    println!("espeak digits, the decoder's first utterance: `{first}`");
    for (got, text) in results {
        assert!(got >= 4, "`{text}`: {got} of 5 digits");
    }
}

#[test]
fn a_missing_model_path_is_named() {
    let mut missing = config(language_model());
    missing.hmm = "/nonexistent/acoustic".into();
    let err = Decoder::new(&missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/acoustic"), "{err}");
    let mut missing = config(language_model());
    missing.search = Search::LanguageModel("/nonexistent/lm.bin".into());
    let err = Decoder::new(&missing).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/lm.bin"), "{err}");
}

#[test]
fn a_file_that_is_not_a_model_is_refused_before_the_library_sees_it() {
    // libpocketsphinx would exit the process on this mdef: it must never reach it.
    let dir = std::env::temp_dir().join(format!("rm-not-a-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["mdef", "means", "variances", "transition_matrices"] {
        std::fs::write(dir.join(file), "not a model").unwrap();
    }
    let mut bad = config(language_model());
    bad.hmm = dir.clone();
    let err = Decoder::new(&bad).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(err, SphinxError::NotAModel { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
}
