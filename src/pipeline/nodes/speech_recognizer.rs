//! Speech-recognition engines, by name, and the process's shared pools of decoders.
//!
//! `pocketsphinx` ([`super::pocketsphinx_ffi`]) loads its model (tens of MB) when a manifest
//! naming it loads: the first decoder is built there, so a missing or broken model fails the
//! load, never a session. Equal configurations (model, dictionary, search, pool size) share one
//! [`DecoderPool`] per process, kept for the process's life; sessions lease a decoder for one
//! utterance at a time and give it back at its end. More decoders are built on demand, up to
//! the pool's size, on the offload pool (never on the async runtime or the answer path).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use super::pocketsphinx_ffi::{Decoder, DecoderConfig, Search, SphinxError};
use super::Params;
use crate::pipeline::error::NodeError;

/// Engines [`recognizer`] knows.
pub const RECOGNIZERS: &[&str] = &["pocketsphinx"];

/// Debian's `pocketsphinx-en-us` model directory.
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

/// Decoders one pool builds at most, unless `decoders` says otherwise (each holds its own
/// copy of the model: about 100 MB with the en-us language model, 30 MB with keywords).
pub const DEFAULT_DECODERS: usize = 2;

/// Every pool of the process, by configuration and size.
type Pools = HashMap<(DecoderConfig, usize), Arc<DecoderPool>>;
static POOLS: LazyLock<Mutex<Pools>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Decoders of one configuration, shared by every session of the process.
#[derive(Debug)]
pub struct DecoderPool {
    config: DecoderConfig,
    size: usize,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Decoder>,
    /// Decoders in existence (idle, leased, or being built).
    built: usize,
}

/// A decoder lent to one utterance; back to its pool when dropped.
#[derive(Debug)]
pub struct Lease {
    decoder: Option<Decoder>,
    pool: Arc<DecoderPool>,
}

impl Lease {
    /// The leased decoder.
    pub fn decoder(&mut self) -> &mut Decoder {
        // Invariant: `decoder` is Some until drop.
        #[allow(clippy::expect_used)]
        self.decoder
            .as_mut()
            .expect("a lease holds its decoder until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut decoder) = self.decoder.take() {
            // An utterance left open (dropped, failed) is closed before the next one.
            if decoder.end().is_err() {
                let mut state = self.pool.state.lock();
                state.built = state.built.saturating_sub(1);
                return;
            }
            self.pool.state.lock().idle.push(decoder);
        }
    }
}

impl DecoderPool {
    /// A pool of `size` decoders (at least one) with its first decoder built (the model
    /// loaded) now.
    ///
    /// # Errors
    /// [`SphinxError`] when the first decoder cannot be built.
    pub fn new(config: DecoderConfig, size: usize) -> Result<Arc<Self>, SphinxError> {
        let first = Decoder::new(&config)?;
        Ok(Arc::new(Self {
            config,
            size: size.max(1),
            state: Mutex::new(PoolState {
                idle: vec![first],
                built: 1,
            }),
        }))
    }

    /// The process's pool for `config` and `size`, built (the model loaded) on first use.
    ///
    /// # Errors
    /// As [`DecoderPool::new`]; a failure is not cached, so a fixed model loads next time.
    pub fn shared(config: DecoderConfig, size: usize) -> Result<Arc<Self>, SphinxError> {
        let key = (config, size);
        if let Some(pool) = POOLS.lock().get(&key) {
            return Ok(Arc::clone(pool));
        }
        // Built outside the lock: other configurations load meanwhile. Two first loads of the
        // same one race harmlessly: the first stored wins.
        let pool = Self::new(key.0.clone(), size)?;
        Ok(Arc::clone(POOLS.lock().entry(key).or_insert(pool)))
    }

    /// The process's pool for `config` and `size` if it was built.
    pub fn cached(config: &DecoderConfig, size: usize) -> Option<Arc<Self>> {
        POOLS.lock().get(&(config.clone(), size)).map(Arc::clone)
    }

    /// An idle decoder, or a new one while fewer than the pool's size exist; `None` when
    /// every decoder is leased. Building one blocks (call it on the offload pool).
    ///
    /// # Errors
    /// [`SphinxError`] when a new decoder cannot be built.
    pub fn try_lease(self: &Arc<Self>) -> Result<Option<Lease>, SphinxError> {
        {
            let mut state = self.state.lock();
            if let Some(decoder) = state.idle.pop() {
                return Ok(Some(self.lease(decoder)));
            }
            if state.built >= self.size {
                return Ok(None);
            }
            state.built += 1;
        }
        match Decoder::new(&self.config) {
            Ok(decoder) => Ok(Some(self.lease(decoder))),
            Err(err) => {
                let mut state = self.state.lock();
                state.built = state.built.saturating_sub(1);
                Err(err)
            }
        }
    }

    fn lease(self: &Arc<Self>, decoder: Decoder) -> Lease {
        Lease {
            decoder: Some(decoder),
            pool: Arc::clone(self),
        }
    }

    /// Decoders this pool builds at most.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// The engine a `SpeechToTextNode`'s params name (`engine`, default `pocketsphinx`) and its
/// model, loaded now (once per process per configuration).
///
/// # Errors
/// [`NodeError::Param`] naming the param: an unknown engine, a missing model file (named),
/// a keyword not in the dictionary, a model the engine cannot load.
pub fn recognizer(params: &Params<'_>) -> Result<Arc<DecoderPool>, NodeError> {
    let name: String = params.get_or("engine", "pocketsphinx".to_owned())?;
    if name != "pocketsphinx" {
        return Err(params.error(
            "engine",
            format!(
                "unknown engine `{name}` (known: {})",
                RECOGNIZERS.join(", ")
            ),
        ));
    }
    let config = pocketsphinx_config(params)?;
    let size: usize = params.get_or("decoders", DEFAULT_DECODERS)?;
    if !(1..=64).contains(&size) {
        return Err(params.error("decoders", format!("must be 1..=64, got {size}")));
    }
    // A session's nodes find the pool built at manifest load: no file is read again.
    if let Some(pool) = DecoderPool::cached(&config, size) {
        return Ok(pool);
    }
    config
        .check_paths()
        .map_err(|err| sphinx_error(params, &err))?;
    if let Search::Keywords(list) = &config.search {
        check_in_dictionary(params, &config.dict, list)?;
    }
    DecoderPool::shared(config, size).map_err(|err| sphinx_error(params, &err))
}

/// `err` as the error of the param it is about.
fn sphinx_error(params: &Params<'_>, err: &SphinxError) -> NodeError {
    let field = match err {
        SphinxError::Missing { what, .. } if *what == "dictionary" => "dict",
        SphinxError::Missing { what, .. } if *what == "language model" => "languageModel",
        SphinxError::Missing { what, .. } if *what == "grammar" => "grammar",
        SphinxError::KeywordFile { .. } => "keywords",
        _ => "model",
    };
    params.error(field, format!("pocketsphinx: {err}"))
}

/// `{model (acoustic model directory), dict, languageModel | keywords [phrases] | grammar
/// (a JSGF file)}`, defaults from Debian's `pocketsphinx-en-us`.
fn pocketsphinx_config(params: &Params<'_>) -> Result<DecoderConfig, NodeError> {
    let base = Path::new(DEFAULT_MODEL_DIR);
    let model: PathBuf = params.get_or("model", base.join("en-us"))?;
    let dict: PathBuf = params.get_or("dict", base.join("cmudict-en-us.dict"))?;
    let lm: Option<PathBuf> = params.get("languageModel")?;
    let keywords: Option<Vec<String>> = params.get("keywords")?;
    let grammar: Option<PathBuf> = params.get("grammar")?;
    let given = [lm.is_some(), keywords.is_some(), grammar.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(params.error(
            "keywords",
            "give one of languageModel, keywords and grammar".to_owned(),
        ));
    }
    let search = match (lm, keywords, grammar) {
        (_, Some(keywords), _) => Search::Keywords(keyword_phrases(params, &keywords)?),
        (_, _, Some(grammar)) => Search::Grammar(grammar),
        (lm, _, _) => Search::LanguageModel(lm.unwrap_or_else(|| base.join("en-us.lm.bin"))),
    };
    Ok(DecoderConfig {
        hmm: model,
        dict,
        search,
    })
}

/// The keyword phrases, lower case, single-spaced; each must have a word.
fn keyword_phrases(params: &Params<'_>, keywords: &[String]) -> Result<Vec<String>, NodeError> {
    if keywords.is_empty() || keywords.len() > 1000 {
        return Err(params.error(
            "keywords",
            format!("must list 1..=1000 phrases, got {}", keywords.len()),
        ));
    }
    keywords
        .iter()
        .map(|phrase| {
            let words: Vec<String> = phrase.split_whitespace().map(str::to_lowercase).collect();
            let valid = words
                .iter()
                .all(|w| w.chars().all(|c| c.is_alphanumeric() || "'-".contains(c)));
            if words.is_empty() || !valid {
                return Err(params.error(
                    "keywords",
                    format!("`{phrase}` is not a phrase of dictionary words"),
                ));
            }
            Ok(words.join(" "))
        })
        .collect()
}

/// Every keyword's words are in the dictionary (pocketsphinx would refuse the list without
/// saying which word).
fn check_in_dictionary(params: &Params<'_>, dict: &Path, list: &[String]) -> Result<(), NodeError> {
    let text = std::fs::read_to_string(dict).map_err(|err| {
        params.error(
            "dict",
            format!("pocketsphinx: cannot read `{}`: {err}", dict.display()),
        )
    })?;
    let known: HashSet<&str> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        // Alternative pronunciations are listed as word(2).
        .map(|word| word.split('(').next().unwrap_or(word))
        .collect();
    for phrase in list {
        if let Some(word) = phrase.split(' ').find(|w| !known.contains(w)) {
            return Err(params.error(
                "keywords",
                format!(
                    "`{word}` (in `{phrase}`) is not in the dictionary `{}`",
                    dict.display()
                ),
            ));
        }
    }
    Ok(())
}
