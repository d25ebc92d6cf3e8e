//! `PassThrough`: emits every input unchanged. The smallest real node, used to exercise the
//! graph runner and as a placeholder while building graphs.

use super::{Node, Params};
use crate::pipeline::data::Envelope;
use crate::pipeline::error::NodeError;

/// Forwards every input, metadata included.
#[derive(Debug, Default)]
pub struct PassThrough;

impl PassThrough {
    /// Takes no params; any given are ignored, as the original did.
    ///
    /// # Errors
    /// None today; the signature matches every other node's constructor.
    pub fn new(_params: &Params<'_>) -> Result<Self, NodeError> {
        Ok(Self)
    }
}

impl Node for PassThrough {
    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        out.push(input);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::data::RuntimeData;

    #[test]
    fn forwards_unchanged() {
        let mut node = PassThrough;
        let mut input = Envelope::new(RuntimeData::Text {
            text: "hi".into(),
            language: String::new(),
        });
        input.metadata.insert("sequence".into(), "3".into());
        let mut out = Vec::new();
        node.process(input.clone(), &mut out).unwrap();
        node.finish(&mut out).unwrap();
        assert_eq!(out, vec![input]);
    }
}
