//! How an `HttpNode` reads a response body into outputs, chunk by chunk as the bytes come
//! (sans-IO: bytes in, items out): newline-delimited JSON (one item per line), server-sent
//! events (one item per event's data; OpenAI's `[DONE]` is the end, not an item), or the whole
//! body as one item.

/// How a response's body is cut into items, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/x-ndjson`, `application/jsonl`, `application/json-seq`: one per line.
    Lines,
    /// `text/event-stream`: one per event.
    Events,
    /// Anything else: the whole body.
    Whole,
}

impl Framing {
    /// The framing of a response with this `Content-Type` (parameters ignored).
    pub fn of(content_type: &str) -> Self {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-seq" => Self::Lines,
            "text/event-stream" => Self::Events,
            _ => Self::Whole,
        }
    }
}

/// A body too large for the node's `maxResponseBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Cuts a body into items as its bytes arrive.
#[derive(Debug)]
pub struct BodyDecoder {
    framing: Framing,
    /// Bytes not yet part of an item (a partial line; the whole body).
    pending: Vec<u8>,
    /// The current event's data lines (server-sent events).
    data: Vec<String>,
    /// Most bytes `pending` may hold: a line, or the whole body.
    max_bytes: usize,
}

impl BodyDecoder {
    pub fn new(framing: Framing, max_bytes: usize) -> Self {
        Self {
            framing,
            pending: Vec::new(),
            data: Vec::new(),
            max_bytes,
        }
    }

    /// Takes the next bytes of the body; the items they complete go to `items`.
    ///
    /// # Errors
    /// [`TooLarge`] when an item outgrows the limit.
    pub fn push(&mut self, bytes: &[u8], items: &mut Vec<String>) -> Result<(), TooLarge> {
        self.pending.extend_from_slice(bytes);
        if self.framing != Framing::Whole {
            let mut start = 0;
            while let Some(at) = self.pending[start..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.pending[start..start + at]).into_owned();
                start += at + 1;
                self.line(line.trim_end_matches('\r'), items);
            }
            self.pending.drain(..start);
        }
        if self.pending.len() > self.max_bytes {
            return Err(TooLarge);
        }
        Ok(())
    }

    /// The body ended: what is left becomes the last item.
    pub fn finish(&mut self, items: &mut Vec<String>) {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        match self.framing {
            Framing::Whole => {
                if !rest.trim().is_empty() {
                    items.push(rest);
                }
            }
            Framing::Lines | Framing::Events => {
                let rest = rest.trim_end_matches('\r').to_owned();
                self.line(&rest, items);
                // An event not closed by a blank line still counts.
                self.line("", items);
            }
        }
    }

    fn line(&mut self, line: &str, items: &mut Vec<String>) {
        match self.framing {
            Framing::Whole => {}
            Framing::Lines => {
                if !line.trim().is_empty() {
                    items.push(line.trim().to_owned());
                }
            }
            Framing::Events => {
                if line.is_empty() {
                    let data = std::mem::take(&mut self.data).join("\n");
                    if !data.is_empty() && data.trim() != "[DONE]" {
                        items.push(data);
                    }
                } else if let Some(value) = line.strip_prefix("data") {
                    // `data:value`, `data: value`, or `data` alone (an empty line of data).
                    if let Some(value) = value.strip_prefix(':') {
                        self.data
                            .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    } else if value.is_empty() {
                        self.data.push(String::new());
                    }
                }
                // Comments (`:`), `event`, `id` and `retry` lines carry no data.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, parts: &[&str]) -> Vec<Vec<String>> {
        let mut decoder = BodyDecoder::new(framing, 1 << 20);
        let mut got = Vec::new();
        for part in parts {
            let mut items = Vec::new();
            decoder.push(part.as_bytes(), &mut items).unwrap();
            got.push(items);
        }
        let mut items = Vec::new();
        decoder.finish(&mut items);
        got.push(items);
        got
    }

    #[test]
    fn framing_follows_the_content_type() {
        assert_eq!(Framing::of("application/x-ndjson"), Framing::Lines);
        assert_eq!(
            Framing::of("Text/Event-Stream; charset=utf-8"),
            Framing::Events
        );
        assert_eq!(Framing::of("application/json"), Framing::Whole);
        assert_eq!(Framing::of(""), Framing::Whole);
    }

    #[test]
    fn lines_come_out_as_they_complete_across_chunk_boundaries() {
        let got = decode(
            Framing::Lines,
            &["{\"a\":1}\n{\"b\"", ":2}\r\n\n", "{\"c\":3}"],
        );
        assert_eq!(
            got,
            [
                vec!["{\"a\":1}".to_owned()],
                vec!["{\"b\":2}".to_owned()],
                vec![],
                vec!["{\"c\":3}".to_owned()]
            ]
        );
    }

    #[test]
    fn events_join_their_data_lines_and_skip_comments_and_done() {
        let got = decode(
            Framing::Events,
            &[
                ": keep-alive\n\nevent: delta\ndata: one\n",
                "data:two\n\ndata: {\"x\":1}\n\n",
                "data: [DONE]\n\n",
                "data: last",
            ],
        );
        assert_eq!(
            got,
            [
                vec![],
                vec!["one\ntwo".to_owned(), "{\"x\":1}".to_owned()],
                vec![],
                vec![],
                vec!["last".to_owned()]
            ]
        );
    }

    #[test]
    fn a_whole_body_is_one_item_and_bounded() {
        let got = decode(Framing::Whole, &["hello ", "world"]);
        assert_eq!(got.concat(), ["hello world"]);
        let mut decoder = BodyDecoder::new(Framing::Whole, 4);
        let mut items = Vec::new();
        assert_eq!(decoder.push(b"12345", &mut items), Err(TooLarge));
        let mut decoder = BodyDecoder::new(Framing::Lines, 4);
        assert!(
            decoder.push(b"1\n2\n3\n", &mut items).is_ok(),
            "lines are each bounded"
        );
        assert_eq!(decoder.push(b"123456", &mut items), Err(TooLarge));
    }
}
