//! JSON-RPC 2.0 framing of the WebSocket dialects: parsing requests, writing results, errors
//! and notifications. No signaling rule lives here.

use serde_json::{json, Map, Value};

use crate::signaling::error::RpcError;

/// One request read from a text frame.
#[derive(Debug)]
pub struct Call {
    /// `None` for a JSON-RPC notification (no `id` member): it is executed but not answered.
    pub id: Option<Value>,
    pub method: String,
    /// Named params; absent params read as `{}`.
    pub params: Value,
}

/// A request that could not be read, with the id to answer it under (null when unknown).
#[derive(Debug)]
pub struct Rejected {
    pub id: Value,
    pub error: RpcError,
}

/// Parses one text frame into a call.
///
/// # Errors
/// `Parse` for invalid JSON, `InvalidRequest` for anything that is not a single request
/// object (batches are not supported), `InvalidParams` for positional params.
pub fn parse(text: &str) -> Result<Call, Rejected> {
    let reject = |id: Value, error: RpcError| Rejected { id, error };
    let value: Value = serde_json::from_str(text)
        .map_err(|err| reject(Value::Null, RpcError::Parse(err.to_string())))?;
    let Value::Object(mut object) = value else {
        let what = if value.is_array() {
            "batches are not supported; send one request per frame"
        } else {
            "a request must be a JSON object"
        };
        return Err(reject(Value::Null, RpcError::InvalidRequest(what.into())));
    };
    let id = object.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_number() || id.is_null()) {
            return Err(reject(
                Value::Null,
                RpcError::InvalidRequest("id must be a string, a number or null".into()),
            ));
        }
    }
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(reject(
            answer_id,
            RpcError::InvalidRequest("\"jsonrpc\" must be \"2.0\"".into()),
        ));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(reject(
            answer_id,
            RpcError::InvalidRequest("\"method\" must be a string".into()),
        ));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(params @ Value::Object(_)) => params,
        Some(_) => {
            return Err(reject(
                answer_id,
                RpcError::InvalidParams("params must be an object (by name)".into()),
            ))
        }
    };
    Ok(Call { id, method, params })
}

/// A successful response.
pub fn result(id: Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

/// An error response.
pub fn error(id: Value, error: &RpcError) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": error.code(), "message": error.to_string()},
    })
    .to_string()
}

/// A server-to-client notification frame (the dialect picked `method` and `params`).
pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_have_their_codes() {
        let code = |text: &str| parse(text).map(|_| 0).unwrap_or_else(|r| r.error.code());
        assert_eq!(code("{not json"), -32700);
        assert_eq!(code("[]"), -32600);
        assert_eq!(code("42"), -32600);
        assert_eq!(code(r#"{"id":1,"method":"x"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#),
            -32602
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#), 0);
    }

    #[test]
    fn a_request_without_id_is_a_notification() {
        let call = parse(r#"{"jsonrpc":"2.0","method":"peer.list"}"#).unwrap();
        assert!(call.id.is_none());
        assert_eq!(call.params, json!({}));
    }
}
