//! `TextCollectorNode`: turns a stream of text fragments (an LLM's tokens, partial transcripts)
//! into whole sentences, because TTS and displays want sentences.
//!
//! Each character is looked at once, however the text arrives (fragments used to rescan the
//! whole unfinished text, quadratic in its length), and the unfinished text is bounded by
//! `--max-text-buffer-bytes`: beyond it, it goes on as one piece, counted.

use super::{Node, Params};
use crate::metrics::{limit_hit, Limit};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Splits buffered text after any character of `splitPattern`.
///
/// `splitPattern` is a set of delimiter characters (the original's default `".!?,;:\n"`); a
/// regex-style class such as `[.!?]+` is read as the same set. A piece shorter than
/// `minSentenceLength` characters (trimmed) is not emitted alone: it stays and joins the next
/// piece, so "Hi." does not become its own sentence when the minimum is 4.
#[derive(Debug)]
pub struct TextCollectorNode {
    delimiters: Vec<char>,
    min_len: usize,
    yield_partial: bool,
    /// Text not yet emitted.
    buffer: String,
    /// Bytes of `buffer` already scanned.
    scanned: usize,
    /// The trimmed piece being collected in `buffer`, once it has a non-whitespace character.
    piece: Option<Piece>,
    /// `--max-text-buffer-bytes`.
    max_bytes: usize,
    language: String,
}

/// Where the unfinished piece's trimmed text lies in the buffer, and its length in characters.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Byte index of its first non-whitespace character.
    start: usize,
    /// Byte index just past its last non-whitespace character.
    end: usize,
    /// Characters from `start` to `end`.
    chars: usize,
    /// Characters from `start` to the scan position.
    scanned_chars: usize,
}

impl TextCollectorNode {
    /// `{splitPattern ".!?,;:\n", minSentenceLength 3, yieldPartialOnEnd true}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when mistyped or `splitPattern` is empty.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let pattern: String = params.get_or("splitPattern", ".!?,;:\n".to_owned())?;
        let set = pattern
            .strip_prefix('[')
            .and_then(|p| p.trim_end_matches(['+', '*']).strip_suffix(']'))
            .unwrap_or(&pattern);
        let mut delimiters = Vec::new();
        let mut chars = set.chars();
        while let Some(c) = chars.next() {
            // Regex escapes: `\n`, `\.`, ...
            let d = match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(other) => other,
                    None => '\\',
                },
                (c, false) => c,
            };
            delimiters.push(d);
        }
        if delimiters.is_empty() {
            return Err(params.error("splitPattern", "must not be empty".to_owned()));
        }
        Ok(Self {
            delimiters,
            min_len: params.get_or("minSentenceLength", 3)?,
            yield_partial: params.get_or("yieldPartialOnEnd", true)?,
            buffer: String::new(),
            scanned: 0,
            piece: None,
            max_bytes: usize::MAX,
            language: String::new(),
        })
    }

    /// The same node, its unfinished text bounded to `max_bytes` (at least one character).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(4);
        self
    }

    /// Scans the text added since the last call, emitting each piece that a delimiter ends
    /// once it has `min_len` characters; drops what was emitted from the buffer.
    fn scan(&mut self, out: &mut Vec<Envelope>) {
        // Byte index just past the last delimiter that closed an emitted sentence.
        let mut consumed = 0;
        let mut sentences = Vec::new();
        for (offset, c) in self.buffer[self.scanned..].char_indices() {
            let i = self.scanned + offset;
            let after = i + c.len_utf8();
            if !c.is_whitespace() {
                let piece = self.piece.get_or_insert(Piece {
                    start: i,
                    end: i,
                    chars: 0,
                    scanned_chars: 0,
                });
                piece.scanned_chars += 1;
                piece.chars = piece.scanned_chars;
                piece.end = after;
            } else if let Some(piece) = self.piece.as_mut() {
                piece.scanned_chars += 1;
            }
            if !self.delimiters.contains(&c) {
                continue;
            }
            match self.piece {
                Some(piece) if piece.chars >= self.min_len => {
                    sentences.push((piece.start, piece.end));
                    self.piece = None;
                    consumed = after;
                }
                _ => {}
            }
        }
        for (start, end) in sentences {
            out.push(self.sentence(&self.buffer[start..end]));
        }
        self.scanned = self.buffer.len() - consumed;
        self.buffer.drain(..consumed);
        if let Some(piece) = self.piece.as_mut() {
            piece.start -= consumed;
            piece.end -= consumed;
        }
    }

    /// Sends the unfinished text on as one piece if it is over the limit.
    fn bound(&mut self, out: &mut Vec<Envelope>) {
        if self.buffer.len() <= self.max_bytes {
            return;
        }
        tracing::debug!(
            len = self.buffer.len(),
            limit = self.max_bytes,
            "text without a sentence end over the limit; sent on as it is"
        );
        limit_hit(Limit::TextBufferBytes, 1);
        let rest = std::mem::take(&mut self.buffer);
        self.scanned = 0;
        self.piece = None;
        if !rest.trim().is_empty() {
            out.push(self.sentence(rest.trim()));
        }
    }

    fn sentence(&self, text: &str) -> Envelope {
        Envelope::new(RuntimeData::Text {
            text: text.to_owned(),
            language: self.language.clone(),
        })
    }
}

impl Node for TextCollectorNode {
    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Text { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Text { text, language } = input.data else {
            return Ok(());
        };
        if !language.is_empty() {
            self.language = language;
        }
        self.buffer.push_str(&text);
        self.scan(out);
        self.bound(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let rest = std::mem::take(&mut self.buffer);
        self.scanned = 0;
        self.piece = None;
        if self.yield_partial && !rest.trim().is_empty() {
            out.push(self.sentence(rest.trim()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(p: serde_json::Value, parts: &[&str]) -> Vec<String> {
        let mut n = TextCollectorNode::new(&Params::new("t", &p).unwrap()).unwrap();
        let mut out = Vec::new();
        for part in parts {
            let env = Envelope::new(RuntimeData::Text {
                text: (*part).into(),
                language: "en".into(),
            });
            n.process(env, &mut out).unwrap();
        }
        n.finish(&mut out).unwrap();
        out.into_iter()
            .map(|e| match e.data {
                RuntimeData::Text { text, language } => {
                    assert_eq!(language, "en");
                    text
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn fragments_become_sentences() {
        let got = run(
            json!({}),
            &["Hello wor", "ld. How are", " you? Fine", " thanks"],
        );
        assert_eq!(got, ["Hello world.", "How are you?", "Fine thanks"]);
    }

    #[test]
    fn short_pieces_join_the_next_and_partial_can_be_dropped() {
        let got = run(
            json!({"min_sentence_length": 6, "yield_partial_on_end": false}),
            &["Hi. Nice to meet you! bye"],
        );
        assert_eq!(got, ["Hi. Nice to meet you!"]);
    }

    #[test]
    fn regex_style_pattern_and_multibyte_text() {
        let got = run(
            json!({"splitPattern": "[.!?\\n]+"}),
            &["Ça va? Très bien!\nEt toi"],
        );
        assert_eq!(got, ["Ça va?", "Très bien!", "Et toi"]);
        let bad = json!({"splitPattern": ""});
        let err = TextCollectorNode::new(&Params::new("t", &bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("node `t`: params.splitPattern"), "{err}");
    }

    fn texts(out: Vec<Envelope>) -> Vec<String> {
        out.into_iter()
            .map(|e| match e.data {
                RuntimeData::Text { text, .. } => text,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn any_fragmentation_gives_the_same_sentences() {
        let text = "  Hi.  A bit longer, then short: ok!\n\n\nÇa va? x. Très bien!\nEt   toi  ";
        let whole = run(json!({"minSentenceLength": 4}), &[text]);
        for size in 1..8 {
            let chars: Vec<char> = text.chars().collect();
            let parts: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            assert_eq!(
                run(json!({"minSentenceLength": 4}), &parts),
                whole,
                "{size}"
            );
        }
        assert_eq!(
            whole,
            [
                "Hi.  A bit longer,",
                "then short:",
                "ok!\n\n\nÇa va?",
                "x. Très bien!",
                "Et   toi"
            ]
        );
    }

    #[test]
    fn text_without_an_end_is_sent_on_at_the_limit() {
        let hits = crate::metrics::metrics()
            .limit_hits
            .with_label_values(&["text_buffer_bytes"]);
        let before = hits.get();
        let params = json!({});
        let mut n = TextCollectorNode::new(&Params::new("t", &params).unwrap())
            .unwrap()
            .with_max_bytes(100);
        let mut out = Vec::new();
        let text = |t: &str| {
            Envelope::new(RuntimeData::Text {
                text: t.into(),
                language: String::new(),
            })
        };
        n.process(text(&"a".repeat(60)), &mut out).unwrap();
        assert!(out.is_empty());
        n.process(text(&"b".repeat(60)), &mut out).unwrap();
        n.process(text("c. Next"), &mut out).unwrap();
        n.finish(&mut out).unwrap();
        let want = ["a".repeat(60) + &"b".repeat(60), "c. Next".into()];
        assert_eq!(texts(out), want);
        assert!(hits.get() > before);
    }

    #[test]
    fn fragments_are_scanned_once_not_again_each_time() {
        // 200,000 one-character fragments and no sentence end: rescanning the unfinished
        // text for each took minutes (20 billion character checks).
        let params = json!({});
        let mut n = TextCollectorNode::new(&Params::new("t", &params).unwrap()).unwrap();
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        for _ in 0..200_000 {
            let fragment = Envelope::new(RuntimeData::Text {
                text: "a".into(),
                language: String::new(),
            });
            n.process(fragment, &mut out).unwrap();
        }
        assert!(out.is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
}
