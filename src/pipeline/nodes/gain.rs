//! `GainNode`: scales audio by `db` decibels; a level trim, and a visible effect for checking
//! that audio really flows through a graph.

use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Multiplies every sample by 10^(db/20), clamped to [-1, 1] so a boost cannot wrap; other
/// payloads pass through unchanged.
#[derive(Debug)]
pub struct GainNode {
    factor: f32,
}

impl GainNode {
    /// `{db 0}` (−120 ..= 60).
    ///
    /// # Errors
    /// [`NodeError::Param`] for a non-number or out-of-range `db`.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let db: f64 = params.get_or("db", 0.0)?;
        if !(-120.0..=60.0).contains(&db) {
            return Err(params.error("db", format!("must be between -120 and 60, got {db}")));
        }
        Ok(Self {
            factor: 10f64.powf(db / 20.0) as f32,
        })
    }
}

impl Node for GainNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn process(&mut self, mut input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        if let RuntimeData::Audio(frame) = &mut input.data {
            for s in &mut frame.samples {
                *s = (*s * self.factor).clamp(-1.0, 1.0);
            }
        }
        out.push(input);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{rms_dbfs, sine};
    use crate::pipeline::data::AudioFrame;
    use serde_json::json;

    #[test]
    fn minus_six_db_halves_the_level() {
        let p = json!({"db": -6.0});
        let mut n = GainNode::new(&Params::new("g", &p).unwrap()).unwrap();
        let input = sine(440.0, 48_000, 4800, 0.5);
        let mut out = Vec::new();
        let f = AudioFrame {
            samples: input.clone(),
            sample_rate: 48_000,
            channels: 1,
        };
        n.process(Envelope::new(RuntimeData::Audio(f)), &mut out)
            .unwrap();
        let RuntimeData::Audio(f) = &out[0].data else {
            panic!()
        };
        assert!((rms_dbfs(&f.samples) - rms_dbfs(&input) + 6.0).abs() < 0.1);
    }

    #[test]
    fn bad_db_is_rejected() {
        for bad in [json!({"db": "loud"}), json!({"db": 500})] {
            let err = GainNode::new(&Params::new("g", &bad).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("node `g`: params.db"), "{err}");
        }
    }
}
