//! `CalculatorNode`: the original's demo node. JSON `{"operation": "add", "operands": [a, b]}`
//! becomes `{"result": x, "operation": "add"}`. It proves the registry and the JSON path end to
//! end; clients use it to check a data channel works.

use serde::Deserialize;

use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Evaluates one arithmetic request per JSON input; other payload types are not taken.
#[derive(Debug, Default)]
pub struct CalculatorNode;

#[derive(Deserialize)]
struct Request {
    operation: String,
    operands: Vec<f64>,
}

impl CalculatorNode {
    /// Takes no params.
    ///
    /// # Errors
    /// None today; the signature matches every other node's constructor.
    pub fn new(_params: &Params<'_>) -> Result<Self, NodeError> {
        Ok(Self)
    }

    fn evaluate(payload: &str) -> Result<(f64, String), NodeError> {
        let request: Request = serde_json::from_str(payload).map_err(|e| {
            NodeError::Input(format!(
                "expected {{\"operation\", \"operands\": [a, b]}}: {e}"
            ))
        })?;
        let [a, b] = request.operands[..] else {
            return Err(NodeError::Input(format!(
                "operands must hold exactly 2 numbers, got {}",
                request.operands.len()
            )));
        };
        let result = match request.operation.as_str() {
            "add" => a + b,
            "subtract" => a - b,
            "multiply" => a * b,
            "divide" if b == 0.0 => return Err(NodeError::Input("division by zero".to_owned())),
            "divide" => a / b,
            other => {
                return Err(NodeError::Input(format!(
                    "unknown operation `{other}` (add, subtract, multiply, divide)"
                )))
            }
        };
        // JSON has no infinity or NaN; serde_json would silently write null.
        if !result.is_finite() {
            return Err(NodeError::Input(format!(
                "{} of {a} and {b} overflows",
                request.operation
            )));
        }
        Ok((result, request.operation))
    }
}

impl Node for CalculatorNode {
    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Json { payload, .. } = &input.data else {
            return Ok(());
        };
        let (result, operation) = Self::evaluate(payload)?;
        let answer = serde_json::json!({ "result": result, "operation": operation });
        out.push(Envelope {
            data: RuntimeData::Json {
                payload: answer.to_string(),
                schema_type: String::new(),
            },
            metadata: input.metadata,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(payload: &str) -> Result<serde_json::Value, NodeError> {
        let mut out = Vec::new();
        CalculatorNode.process(
            Envelope::new(RuntimeData::Json {
                payload: payload.into(),
                schema_type: String::new(),
            }),
            &mut out,
        )?;
        let [Envelope {
            data: RuntimeData::Json { payload, .. },
            ..
        }] = &out[..]
        else {
            panic!("{out:?}")
        };
        Ok(serde_json::from_str(payload).unwrap())
    }

    #[test]
    fn computes_each_operation() {
        for (op, expect) in [
            ("add", 8.0),
            ("subtract", 4.0),
            ("multiply", 12.0),
            ("divide", 3.0),
        ] {
            let v = run(&format!(r#"{{"operation":"{op}","operands":[6,2]}}"#)).unwrap();
            assert_eq!(v["result"], expect, "{op}");
            assert_eq!(v["operation"], op);
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(run(r#"{"operation":"divide","operands":[1,0]}"#)
            .unwrap_err()
            .to_string()
            .contains("division by zero"));
        assert!(run(r#"{"operation":"pow","operands":[1,2]}"#).is_err());
        assert!(run(r#"{"operation":"add","operands":[1]}"#).is_err());
        assert!(run(r#"{"operation":"multiply","operands":[1e308,1e308]}"#).is_err());
        assert!(run(r#"[1,2]"#).is_err());
    }

    #[test]
    fn only_json_is_taken() {
        let text = RuntimeData::Text {
            text: "1+1".into(),
            language: String::new(),
        };
        assert!(!CalculatorNode.accepts(&text));
    }
}
