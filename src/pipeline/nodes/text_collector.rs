//! `TextCollectorNode`: turns a stream of text fragments (an LLM's tokens, partial transcripts)
//! into whole sentences, because TTS and displays want sentences.

use super::{Node, Params};
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
    buffer: String,
    language: String,
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
            language: String::new(),
        })
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
        // Byte index just past the last delimiter that closed an emitted sentence.
        let mut consumed = 0;
        for (i, c) in self.buffer.char_indices() {
            if !self.delimiters.contains(&c) {
                continue;
            }
            let end = i + c.len_utf8();
            let piece = self.buffer[consumed..end].trim();
            if piece.chars().count() >= self.min_len {
                out.push(self.sentence(piece));
                consumed = end;
            }
        }
        self.buffer.drain(..consumed);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let rest = std::mem::take(&mut self.buffer);
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
}
