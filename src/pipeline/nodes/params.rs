//! Reading a node's `params` the way the original's manifests write them: the same key may be
//! spelled `chunkSize` or `chunk_size`, and errors must name the node and the key.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::pipeline::error::NodeError;

/// A node's params map, with the node id kept for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    id: &'a str,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    /// Wraps `params` of node `id`; `null` counts as empty.
    ///
    /// # Errors
    /// [`NodeError::Params`] when `params` is neither a map nor null.
    pub fn new(id: &'a str, params: &'a Value) -> Result<Self, NodeError> {
        match params {
            Value::Null => Ok(Self { id, map: None }),
            Value::Object(map) => Ok(Self { id, map: Some(map) }),
            other => Err(NodeError::Params {
                id: id.to_owned(),
                message: format!("must be a map, got {other}"),
            }),
        }
    }

    /// The node id, for nodes that build their own errors.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Reads `name` (either spelling) as `T`; `None` when absent or null.
    ///
    /// # Errors
    /// [`NodeError::Param`] when the value has the wrong type, or when both spellings are
    /// present with different values.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, NodeError> {
        let Some(map) = self.map else {
            return Ok(None);
        };
        let camel = to_camel(name);
        let snake = to_snake(name);
        let value = match (map.get(&camel), map.get(&snake)) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.error(
                    &camel,
                    format!("given as both `{camel}` ({a}) and `{snake}` ({b})"),
                ))
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => return Ok(None),
        };
        if value.is_null() {
            return Ok(None);
        }
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| self.error(&camel, format!("{e} (got {value})")))
    }

    /// Reads `name`, or `default` when absent.
    ///
    /// # Errors
    /// As [`Params::get`].
    pub fn get_or<T: DeserializeOwned>(&self, name: &str, default: T) -> Result<T, NodeError> {
        Ok(self.get(name)?.unwrap_or(default))
    }

    /// Reads `name`, which must be present.
    ///
    /// # Errors
    /// As [`Params::get`], plus a missing key.
    pub fn required<T: DeserializeOwned>(&self, name: &str) -> Result<T, NodeError> {
        self.get(name)?
            .ok_or_else(|| self.error(&to_camel(name), "is required".to_owned()))
    }

    /// A [`NodeError::Param`] for `field` of this node, for range checks after reading.
    pub fn error(&self, field: &str, message: String) -> NodeError {
        NodeError::Param {
            id: self.id.to_owned(),
            field: field.to_owned(),
            message,
        }
    }
}

/// `chunk_size` / `chunkSize` → `chunkSize`.
fn to_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `chunkSize` / `chunk_size` → `chunk_size`.
fn to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_uppercase() {
            out.push('_');
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spellings_convert() {
        assert_eq!(to_camel("min_speech_duration_ms"), "minSpeechDurationMs");
        assert_eq!(to_snake("minSpeechDurationMs"), "min_speech_duration_ms");
        assert_eq!(to_camel("chunkSize"), "chunkSize");
        assert_eq!(to_snake("chunk_size"), "chunk_size");
    }

    #[test]
    fn both_spellings_are_read() {
        for v in [json!({"chunkSize": 960}), json!({"chunk_size": 960})] {
            let p = Params::new("c", &v).unwrap();
            assert_eq!(p.get_or("chunkSize", 512u32).unwrap(), 960);
            assert_eq!(p.get_or("chunk_size", 512u32).unwrap(), 960);
        }
        let empty = Value::Null;
        let p = Params::new("c", &empty).unwrap();
        assert_eq!(p.get_or("chunkSize", 512u32).unwrap(), 512);
    }

    #[test]
    fn errors_name_node_and_field() {
        let v = json!({"chunk_size": "big", "a_b": 1, "aB": 2});
        let p = Params::new("chunker", &v).unwrap();
        let err = p.get::<u32>("chunkSize").unwrap_err().to_string();
        assert!(
            err.starts_with("node `chunker`: params.chunkSize:"),
            "{err}"
        );
        let err = p.get::<u32>("a_b").unwrap_err().to_string();
        assert!(err.contains("both"), "{err}");
        let err = p.required::<u32>("target_rate").unwrap_err().to_string();
        assert!(err.contains("params.targetRate: is required"), "{err}");
    }
}
