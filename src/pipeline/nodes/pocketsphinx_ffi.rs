//! A small hand-written FFI over Debian's libpocketsphinx 0.8+5prealpha (`libpocketsphinx-dev`,
//! `libsphinxbase-dev`; BSD-2-Clause, linked by `build.rs`), and [`Decoder`], its safe wrapper.
//!
//! Only what speech-to-text needs: a decoder built from a command-line style configuration
//! (`cmd_ln_parse_r` + `ps_init`), one utterance at a time (`ps_start_utt`, `ps_process_raw`,
//! `ps_end_utt`), its hypothesis (`ps_get_hyp`), `ps_free`. The crates on crates.io that wrap
//! it are unmaintained, hence this.
//!
//! A decoder is not thread-safe: [`Decoder`] is `Send` (moved between the offload pool's
//! threads) but every call takes `&mut self`. Decoders are built one at a time (the library's
//! logging and model loading keep process-global state) and the library's own log, which
//! writes to stderr by default, is turned off once per process: errors come back as
//! [`SphinxError`]s naming what was loaded.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, Once};

/// The opaque types of the C API.
#[repr(C)]
struct PsDecoder {
    _private: [u8; 0],
}
#[repr(C)]
struct CmdLn {
    _private: [u8; 0],
}
#[repr(C)]
struct ArgDef {
    _private: [u8; 0],
}

// Linked by build.rs (pkg-config pocketsphinx, else -lpocketsphinx -lsphinxbase).
extern "C" {
    fn ps_args() -> *const ArgDef;
    fn cmd_ln_parse_r(
        inout: *mut CmdLn,
        defn: *const ArgDef,
        argc: i32,
        argv: *mut *mut c_char,
        strict: i32,
    ) -> *mut CmdLn;
    fn cmd_ln_free_r(config: *mut CmdLn) -> c_int;
    fn ps_init(config: *mut CmdLn) -> *mut PsDecoder;
    fn ps_free(ps: *mut PsDecoder) -> c_int;
    fn ps_start_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_process_raw(
        ps: *mut PsDecoder,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    fn ps_end_utt(ps: *mut PsDecoder) -> c_int;
    fn ps_get_hyp(ps: *mut PsDecoder, out_best_score: *mut i32) -> *const c_char;
    /// `FILE *`; NULL turns the library's logging off.
    fn err_set_logfp(stream: *mut c_void);
}

/// The rate every decoder here takes (the acoustic models' rate).
pub const DECODER_RATE: u32 = 16_000;

/// What pocketsphinx could not do.
#[derive(Debug, thiserror::Error)]
pub enum SphinxError {
    #[error("{what} `{}` does not exist", path.display())]
    Missing { what: &'static str, path: PathBuf },
    #[error("`{}` is not a pocketsphinx model definition (mdef)", path.display())]
    NotAModel { path: PathBuf },
    #[error("`{value}` cannot be passed to pocketsphinx (it contains a NUL byte)")]
    Nul { value: String },
    #[error("pocketsphinx rejected its configuration ({args})")]
    Config { args: String },
    #[error(
        "pocketsphinx could not load the decoder (acoustic model `{}`, dictionary `{}`, {search}): \
         a file is unreadable or not a pocketsphinx model, a word is not in the dictionary, or \
         the grammar does not parse",
        hmm.display(), dict.display()
    )]
    Init {
        hmm: PathBuf,
        dict: PathBuf,
        search: String,
    },
    #[error("cannot write the keyword grammar to `{}`: {source}", path.display())]
    KeywordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pocketsphinx failed to {call} ({code})")]
    Call { call: &'static str, code: i32 },
}

/// What a decoder listens for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Search {
    /// Free speech under an n-gram language model (`-lm`, such as `en-us.lm.bin`).
    LanguageModel(PathBuf),
    /// A closed set of phrases (lower-case dictionary words): each utterance is read as one
    /// or more of them, through a JSGF grammar built from the list (pocketsphinx's keyword
    /// spotting, `-kws`, found nothing in short utterances here, see docs/pipelines.md).
    Keywords(Vec<String>),
    /// A JSGF grammar file (`-jsgf`): only its sentences are recognized.
    Grammar(PathBuf),
}

impl std::fmt::Display for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LanguageModel(path) => write!(f, "language model `{}`", path.display()),
            Self::Keywords(list) => write!(f, "a grammar of {} keyword phrases", list.len()),
            Self::Grammar(path) => write!(f, "grammar `{}`", path.display()),
        }
    }
}

/// Everything a decoder is built from; equal configurations share one pool of decoders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecoderConfig {
    /// The acoustic model's directory (`-hmm`).
    pub hmm: PathBuf,
    /// The pronunciation dictionary (`-dict`).
    pub dict: PathBuf,
    pub search: Search,
}

impl DecoderConfig {
    /// Whether every file this configuration names exists (the first one missing otherwise).
    ///
    /// # Errors
    /// [`SphinxError::Missing`] naming the path.
    pub fn check_paths(&self) -> Result<(), SphinxError> {
        let missing = |what, path: &Path| SphinxError::Missing {
            what,
            path: path.to_owned(),
        };
        if !self.hmm.is_dir() {
            return Err(missing("acoustic model directory", &self.hmm));
        }
        for file in ["mdef", "means", "variances", "transition_matrices"] {
            if !self.hmm.join(file).is_file() {
                return Err(missing("acoustic model file", &self.hmm.join(file)));
            }
        }
        // libpocketsphinx exits the process on an unreadable model definition rather than
        // failing: at least its format is checked here (binary `BMDF`, or text `0.3`).
        let mdef = self.hmm.join("mdef");
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(&mdef)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
        if read.is_err() || !(magic == *b"BMDF" || magic.starts_with(b"0.3")) {
            return Err(SphinxError::NotAModel { path: mdef });
        }
        if !self.dict.is_file() {
            return Err(missing("dictionary", &self.dict));
        }
        match &self.search {
            Search::LanguageModel(path) if !path.is_file() => Err(missing("language model", path)),
            Search::Grammar(path) if !path.is_file() => Err(missing("grammar", path)),
            _ => Ok(()),
        }
    }
}

/// One pocketsphinx decoder.
#[derive(Debug)]
pub struct Decoder {
    ps: NonNull<PsDecoder>,
    /// Between `ps_start_utt` and `ps_end_utt`.
    in_utterance: bool,
}

// SAFETY: a ps_decoder_t is heap state owned solely by this value (the library keeps no
// per-thread state for it); moving it to another thread between calls is sound, and every
// call takes `&mut self`, so access stays exclusive.
unsafe impl Send for Decoder {}

/// Serializes decoder construction (model loading and the library's logging are global).
static BUILD: Mutex<()> = Mutex::new(());

impl Decoder {
    /// Loads a decoder: the acoustic model, the dictionary and the search (blocks for a
    /// fraction of a second to seconds: at manifest load or on the offload pool).
    ///
    /// # Errors
    /// [`SphinxError::Missing`] for a path that does not exist, [`SphinxError::Init`] when
    /// the library cannot load it.
    pub fn new(config: &DecoderConfig) -> Result<Self, SphinxError> {
        config.check_paths()?;
        static QUIET: Once = Once::new();
        let _build = BUILD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        QUIET.call_once(|| {
            // SAFETY: NULL is the documented "no logging" value; called before any decoder.
            unsafe { err_set_logfp(std::ptr::null_mut()) }
        });
        let mut keyword_file = None;
        let mut args: Vec<(String, String)> = vec![
            ("-hmm".into(), path_arg(&config.hmm)?),
            ("-dict".into(), path_arg(&config.dict)?),
            ("-samprate".into(), DECODER_RATE.to_string()),
        ];
        match &config.search {
            Search::LanguageModel(path) => args.push(("-lm".into(), path_arg(path)?)),
            Search::Grammar(path) => args.push(("-jsgf".into(), path_arg(path)?)),
            Search::Keywords(list) => {
                let file = KeywordFile::write(list)?;
                args.push(("-jsgf".into(), path_arg(&file.0)?));
                keyword_file = Some(file);
            }
        }
        let c_args = args
            .iter()
            .flat_map(|(k, v)| [k, v])
            .map(|s| CString::new(s.as_str()).map_err(|_| SphinxError::Nul { value: s.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv: Vec<*mut c_char> = c_args.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).unwrap_or(i32::MAX);
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the call (the
        // library copies each value it keeps); ps_args() is the library's static table.
        let cmd =
            unsafe { cmd_ln_parse_r(std::ptr::null_mut(), ps_args(), argc, argv.as_mut_ptr(), 1) };
        if cmd.is_null() {
            return Err(SphinxError::Config {
                args: args
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        // SAFETY: cmd is a valid configuration; ps_init takes its own reference.
        let ps = unsafe { ps_init(cmd) };
        // SAFETY: our reference to cmd, released once (the decoder keeps its own).
        unsafe { cmd_ln_free_r(cmd) };
        // The keyword grammar is read by ps_init; the file can go now.
        drop(keyword_file);
        let ps = NonNull::new(ps).ok_or_else(|| SphinxError::Init {
            hmm: config.hmm.clone(),
            dict: config.dict.clone(),
            search: config.search.to_string(),
        })?;
        Ok(Self {
            ps,
            in_utterance: false,
        })
    }

    /// Starts an utterance (ending the one in progress, if any, unheard).
    ///
    /// # Errors
    /// [`SphinxError::Call`] when the library refuses.
    pub fn start(&mut self) -> Result<(), SphinxError> {
        if self.in_utterance {
            self.end()?;
        }
        // SAFETY: ps is a live decoder owned by self.
        check("start an utterance", unsafe {
            ps_start_utt(self.ps.as_ptr())
        })?;
        self.in_utterance = true;
        Ok(())
    }

    /// Decodes 16 kHz mono samples of the utterance (starting one if none is).
    ///
    /// # Errors
    /// [`SphinxError::Call`] when the library refuses.
    pub fn process(&mut self, samples: &[i16]) -> Result<(), SphinxError> {
        if !self.in_utterance {
            self.start()?;
        }
        if samples.is_empty() {
            return Ok(());
        }
        // SAFETY: the pointer and length describe `samples`, read only during the call.
        let code =
            unsafe { ps_process_raw(self.ps.as_ptr(), samples.as_ptr(), samples.len(), 0, 0) };
        check("decode audio", code)
    }

    /// Ends the utterance: the hypothesis is final after this.
    ///
    /// # Errors
    /// [`SphinxError::Call`] when the library refuses.
    pub fn end(&mut self) -> Result<(), SphinxError> {
        if !self.in_utterance {
            return Ok(());
        }
        self.in_utterance = false;
        // SAFETY: ps is a live decoder in an utterance.
        check("end an utterance", unsafe { ps_end_utt(self.ps.as_ptr()) })
    }

    /// The best hypothesis so far (partial during an utterance, final after [`Self::end`]);
    /// empty when nothing was recognized.
    pub fn hypothesis(&mut self) -> String {
        let mut score = 0;
        // SAFETY: ps is live; the returned string is owned by the decoder and valid until its
        // next call, so it is copied at once.
        let hyp = unsafe { ps_get_hyp(self.ps.as_ptr(), &mut score) };
        if hyp.is_null() {
            return String::new();
        }
        // SAFETY: non-null and NUL-terminated, per the API.
        let text = unsafe { CStr::from_ptr(hyp) }.to_string_lossy();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Whether an utterance is in progress.
    pub fn in_utterance(&self) -> bool {
        self.in_utterance
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.end();
        // SAFETY: ps is live and owned by self; it is not used again.
        unsafe { ps_free(self.ps.as_ptr()) };
    }
}

fn check(call: &'static str, code: c_int) -> Result<(), SphinxError> {
    if code < 0 {
        Err(SphinxError::Call { call, code })
    } else {
        Ok(())
    }
}

fn path_arg(path: &Path) -> Result<String, SphinxError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| SphinxError::Nul {
            value: path.display().to_string(),
        })
}

/// The keyword list as a JSGF grammar (an utterance is one or more of the phrases), in a file
/// of this process that is removed when dropped.
struct KeywordFile(PathBuf);

impl KeywordFile {
    fn write(list: &[String]) -> Result<Self, SphinxError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "remotemedia-keywords-{}-{}.gram",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let text = format!(
            "#JSGF V1.0;\ngrammar keywords;\npublic <utterance> = <phrase>+;\n<phrase> = {};\n",
            list.join(" | ")
        );
        std::fs::write(&path, text).map_err(|source| SphinxError::KeywordFile {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for KeywordFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
#[path = "pocketsphinx_ffi_tests.rs"]
pub(crate) mod tests;
