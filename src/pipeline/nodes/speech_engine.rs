//! Text-to-speech engines, by name. An engine synthesizes one sentence to 48 kHz mono samples
//! and blocks while it does, so it runs on the offload pool, never on the runtime.
//!
//! `espeak-ng` runs Debian's `espeak-ng` program, one subprocess per sentence (`--stdout`, a
//! WAV parsed with `hound`): libespeak-ng is GPL-3.0 and keeps process-global state, so it is
//! not linked into this binary, and separate processes also synthesize in parallel, as many
//! at once as the pool has threads. Another engine (a neural one the operator installs)
//! plugs in by name in [`engine`].

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::Params;
use crate::media::Resampler;
use crate::pipeline::error::NodeError;

/// The rate every engine delivers (WebRTC's Opus rate).
pub const SPEECH_RATE: u32 = 48_000;

/// Engines [`engine`] knows.
pub const ENGINES: &[&str] = &["espeak-ng"];

/// A synthesis that failed (the sentence is skipped; the session goes on).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("`{program}` took longer than {seconds} s and was stopped")]
    Timeout { program: String, seconds: u64 },
    #[error("`{program}` wrote no readable WAV: {message}")]
    Wav { program: String, message: String },
}

/// Synthesizes speech.
pub trait SpeechEngine: Send + Sync + std::fmt::Debug {
    /// One sentence as mono samples at [`SPEECH_RATE`]. Blocks until done.
    ///
    /// # Errors
    /// [`EngineError`] when the engine cannot run or its output is unreadable.
    fn synthesize(&self, text: &str) -> Result<Vec<f32>, EngineError>;
}

/// The engine a `TextToSpeechNode`'s params name (`engine`, default `espeak-ng`), with its
/// voice params. Checked when the manifest loads: an unknown engine, a missing program or a
/// voice the engine does not have is an error naming the param.
///
/// # Errors
/// [`NodeError::Param`] naming the param.
pub fn engine(params: &Params<'_>) -> Result<Arc<dyn SpeechEngine>, NodeError> {
    let name: String = params.get_or("engine", "espeak-ng".to_owned())?;
    match name.as_str() {
        "espeak-ng" => Ok(Arc::new(EspeakNg::new(params)?)),
        other => Err(params.error(
            "engine",
            format!("unknown engine `{other}` (known: {})", ENGINES.join(", ")),
        )),
    }
}

/// The `espeak-ng` program, run once per sentence.
#[derive(Debug)]
pub struct EspeakNg {
    program: PathBuf,
    voice: String,
    /// Words per minute.
    rate: u32,
    /// 0..=99, 50 normal.
    pitch: u32,
}

/// A synthesis that takes longer than this is stopped (a sentence takes milliseconds).
const SYNTHESIS_TIMEOUT: Duration = Duration::from_secs(10);

impl EspeakNg {
    /// `{voice "en-us", rate 175 (words per minute, 80..=450), pitch 50 (0..=99), program
    /// "espeak-ng" (a path, or a name looked up on PATH; its file name must be espeak-ng)}`.
    ///
    /// # Errors
    /// [`NodeError::Param`]: a param out of range, the program not found, the voice unknown.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let voice: String = params.get_or("voice", "en-us".to_owned())?;
        // Passed as an argument: it must not read as an option.
        let valid_voice = voice
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-+_/".contains(c));
        if !valid_voice || voice.len() > 64 {
            return Err(params.error(
                "voice",
                format!("`{voice}` is not a voice name (such as en-us, en+f3, de)"),
            ));
        }
        let rate: u32 = params.get_or("rate", 175)?;
        if !(80..=450).contains(&rate) {
            return Err(params.error(
                "rate",
                format!("must be 80..=450 words per minute, got {rate}"),
            ));
        }
        let pitch: u32 = params.get_or("pitch", 50)?;
        if pitch > 99 {
            return Err(params.error("pitch", format!("must be 0..=99, got {pitch}")));
        }
        let name: String = params.get_or("program", "espeak-ng".to_owned())?;
        // Only ever espeak-ng runs (a manifest never names another program to run).
        let file_name = Path::new(&name).file_name().and_then(|n| n.to_str());
        if !matches!(file_name, Some("espeak-ng" | "espeak")) {
            return Err(params.error(
                "program",
                format!("`{name}` is not espeak-ng (its file name must be espeak-ng)"),
            ));
        }
        let program = find_program(&name).ok_or_else(|| {
            params.error(
                "engine",
                format!(
                    "espeak-ng: program `{name}` not found (install Debian's espeak-ng, as \
                     `make deps` does, or set params.program to its path)"
                ),
            )
        })?;
        let engine = Self {
            program,
            voice,
            rate,
            pitch,
        };
        engine.check_voice(params)?;
        Ok(engine)
    }

    /// Runs the program once with the voice, the first time this program and voice are seen
    /// in the process (manifest load), so a missing voice fails there, not at the first call.
    fn check_voice(&self, params: &Params<'_>) -> Result<(), NodeError> {
        static CHECKED: LazyLock<Mutex<HashSet<(PathBuf, String)>>> =
            LazyLock::new(|| Mutex::new(HashSet::new()));
        let key = (self.program.clone(), self.voice.clone());
        if CHECKED.lock().contains(&key) {
            return Ok(());
        }
        let output = Command::new(&self.program)
            .args(["-q", "-v", &self.voice, "x"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| {
                params.error(
                    "engine",
                    format!("espeak-ng: cannot run `{}`: {err}", self.program.display()),
                )
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(params.error(
                "voice",
                format!(
                    "espeak-ng has no voice `{}` ({}); `espeak-ng --voices` lists them",
                    self.voice,
                    stderr.trim()
                ),
            ));
        }
        CHECKED.lock().insert(key);
        Ok(())
    }

    fn program_name(&self) -> String {
        self.program.display().to_string()
    }
}

impl SpeechEngine for EspeakNg {
    fn synthesize(&self, text: &str) -> Result<Vec<f32>, EngineError> {
        let program = self.program_name();
        let mut child = Command::new(&self.program)
            .args(["--stdout", "-b", "1", "-v", &self.voice])
            .args(["-s", &self.rate.to_string(), "-p", &self.pitch.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| EngineError::Spawn {
                program: program.clone(),
                source,
            })?;
        // On stdin, not as an argument: text is never read as an option. A sentence is far
        // smaller than the pipe, so this write does not wait for the reader.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(text.as_bytes());
        }
        let (wav, timed_out) = read_with_deadline(child, SYNTHESIS_TIMEOUT);
        let (wav, status, stderr) = wav.map_err(|source| EngineError::Spawn {
            program: program.clone(),
            source,
        })?;
        if timed_out {
            return Err(EngineError::Timeout {
                program,
                seconds: SYNTHESIS_TIMEOUT.as_secs(),
            });
        }
        if !status.success() {
            return Err(EngineError::Failed {
                program,
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        parse_wav(&wav).map_err(|message| EngineError::Wav { program, message })
    }
}

/// What a child wrote to stdout and stderr and how it ended; killed after `deadline` (then
/// the flag is set).
#[allow(clippy::type_complexity)]
fn read_with_deadline(
    mut child: Child,
    deadline: Duration,
) -> (
    std::io::Result<(Vec<u8>, std::process::ExitStatus, String)>,
    bool,
) {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let child = Arc::new(Mutex::new(child));
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let child = Arc::clone(&child);
        std::thread::spawn(move || {
            // Not reaped before this thread ends, so the kill reaches our own child.
            if stop.recv_timeout(deadline) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                let _ = child.lock().kill();
                return true;
            }
            false
        })
    };
    let mut wav = Vec::new();
    let read = stdout.map_or(Ok(0), |mut out| out.read_to_end(&mut wav));
    let mut message = String::new();
    if let Some(mut err) = stderr {
        let _ = err.read_to_string(&mut message);
    }
    drop(done);
    let timed_out = watchdog.join().unwrap_or(false);
    let status = child.lock().wait();
    let result = read.and(status).map(|status| (wav, status, message));
    (result, timed_out)
}

/// A 16-bit mono WAV (espeak-ng's 22 050 Hz) as samples at [`SPEECH_RATE`]. Its header's
/// length is a placeholder when written to a pipe: the samples are read to the end.
///
/// # Errors
/// A message when the header is unreadable or the format is not 16-bit integer PCM.
pub fn parse_wav(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let reader = hound::WavReader::new(bytes).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!(
            "{} {}-bit samples, expected 16-bit integer PCM",
            match spec.sample_format {
                hound::SampleFormat::Int => "integer",
                hound::SampleFormat::Float => "float",
            },
            spec.bits_per_sample
        ));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f32> = reader
        .into_samples::<i16>()
        .map_while(Result::ok)
        .map(|s| f32::from(s) / 32_768.0)
        .collect();
    let mono: Vec<f32> = if channels == 1 {
        samples
    } else {
        samples
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect()
    };
    let mut resampler = Resampler::new(spec.sample_rate, SPEECH_RATE).map_err(|e| e.to_string())?;
    let mut out =
        Vec::with_capacity(mono.len() * SPEECH_RATE as usize / spec.sample_rate as usize + 1);
    resampler
        .process(&mono, &mut out)
        .map_err(|e| e.to_string())?;
    resampler.flush(&mut out);
    Ok(out)
}

/// `name` if it is a path to a file, else the first executable file of that name on PATH.
fn find_program(name: &str) -> Option<PathBuf> {
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| executable(path))
}
