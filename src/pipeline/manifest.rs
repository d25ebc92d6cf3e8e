//! The pipeline manifest: the original's JSON format (also accepted as YAML) plus our `media`
//! block, checked as a graph when it is parsed so a bad file fails at server start.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ManifestError;

/// A whole pipeline description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Not interpreted. The original's `loopback.yaml` had none: a missing version is taken as
    /// [`DEFAULT_VERSION`] with a warning; an empty one is an error.
    #[serde(default = "missing_version")]
    pub version: String,
    #[serde(default)]
    pub metadata: ManifestMetadata,
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub connections: Vec<Connection>,
    #[serde(default)]
    pub media: MediaSettings,
}

/// Descriptive only; other keys the original allowed here are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestMetadata {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// One node. Keys the original had that mean nothing here (`capabilities`, `host`,
/// `runtime_hint`, `execution`) are accepted and ignored so its manifests load unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    /// `nodeType` in some of the original's manifests (its Next.js examples).
    #[serde(alias = "nodeType")]
    pub node_type: String,
    /// Node-specific; read through [`Params`](super::Params), which takes camelCase and
    /// snake_case names alike.
    #[serde(default = "empty_params")]
    pub params: serde_json::Value,
    #[serde(default, alias = "isStreaming")]
    pub is_streaming: bool,
}

/// The version a manifest without one is taken as.
pub const DEFAULT_VERSION: &str = "v1";

/// Marks a manifest that had no `version` until [`Manifest::parse`] warns and fills it in; no
/// real manifest's version starts with a NUL.
const MISSING_VERSION: &str = "\u{0}missing";

fn missing_version() -> String {
    MISSING_VERSION.to_owned()
}

fn empty_params() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// An edge: everything `from` emits goes to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub from: String,
    pub to: String,
}

/// Our own block: what the server peer does with media around the pipeline.
/// Unknown keys are rejected here, since a typo would otherwise silently keep a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    pub audio: AudioMode,
    pub video: VideoMode,
    pub opus: OpusSettings,
}

/// Whether inbound audio is decoded into the pipeline or forwarded as RTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioMode {
    #[default]
    Transcode,
    Forward,
    /// No decode, no encode, no audio track of the session's own: a room participant's
    /// default (its audio reaches the others of its room as RTP, never itself).
    None,
}

/// What happens to inbound video (never decoded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoMode {
    #[default]
    Loopback,
    Drop,
    Forward,
}

/// Outbound Opus encoder settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpusSettings {
    /// Bits per second, 6000..=510000 (Opus's own limits).
    pub bitrate: u32,
    /// 0..=10; higher costs CPU for quality.
    pub complexity: u8,
    /// In-band forward error correction.
    pub fec: bool,
    /// Discontinuous transmission (silence sends almost nothing).
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate: 64_000,
            complexity: 10,
            fec: true,
            dtx: false,
        }
    }
}

impl Manifest {
    /// Parses and validates a manifest: JSON when the text starts with `{`, YAML otherwise.
    ///
    /// # Errors
    /// [`ManifestError`] for syntax errors (with line and column) and for every rule
    /// [`Manifest::validate`] checks.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Self::parse_from(text, None)
    }

    /// [`Manifest::parse`], naming `file` in the missing-version warning.
    fn parse_from(text: &str, file: Option<&Path>) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(ManifestError::Json)?
        } else {
            serde_yaml::from_str(text).map_err(ManifestError::Yaml)?
        };
        if manifest.version == MISSING_VERSION {
            tracing::warn!(
                file = ?file.map(Path::display).map(|f| f.to_string()),
                manifest = %manifest.metadata.name,
                "manifest has no `version`: taken as {DEFAULT_VERSION:?} (add `version: {DEFAULT_VERSION}`)"
            );
            manifest.version = DEFAULT_VERSION.to_owned();
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads, parses and validates a manifest file.
    ///
    /// # Errors
    /// As [`Manifest::parse`], each message prefixed with the file name.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse_from(&text, Some(path)).map_err(|e| e.in_file(path.to_path_buf()))
    }

    /// The built-in default: no nodes, so every input comes straight back.
    pub fn loopback() -> Manifest {
        Manifest {
            version: DEFAULT_VERSION.to_owned(),
            metadata: ManifestMetadata {
                name: "loopback".to_owned(),
                description: "Returns every input unchanged".to_owned(),
            },
            nodes: Vec::new(),
            connections: Vec::new(),
            media: MediaSettings::default(),
        }
    }

    /// Checks what serde cannot: non-empty ids, unique ids, edges between existing nodes, no
    /// self loops or cycles, media values in range.
    ///
    /// # Errors
    /// The first problem found, naming the node, connection or field.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version.trim().is_empty() {
            return Err(ManifestError::EmptyVersion);
        }
        self.media.validate()?;
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id.trim().is_empty() {
                return Err(ManifestError::EmptyNodeId { index: i });
            }
            if node.node_type.trim().is_empty() {
                return Err(ManifestError::EmptyNodeType {
                    id: node.id.clone(),
                });
            }
            if let Some(first) = index.insert(&node.id, i) {
                return Err(ManifestError::DuplicateNodeId {
                    id: node.id.clone(),
                    first,
                    second: i,
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, edge) in self.connections.iter().enumerate() {
            for (field, id) in [("from", &edge.from), ("to", &edge.to)] {
                if !index.contains_key(id.as_str()) {
                    return Err(ManifestError::UnknownNode {
                        index: i,
                        field,
                        id: id.clone(),
                    });
                }
            }
            if edge.from == edge.to {
                return Err(ManifestError::SelfLoop {
                    index: i,
                    id: edge.from.clone(),
                });
            }
            if !seen.insert((&edge.from, &edge.to)) {
                return Err(ManifestError::DuplicateConnection {
                    index: i,
                    from: edge.from.clone(),
                    to: edge.to.clone(),
                });
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Node indices such that every edge goes forward (Kahn's algorithm), keeping manifest order
    /// among independent nodes.
    ///
    /// # Errors
    /// [`ManifestError::Cycle`] naming the nodes of a cycle; assumes ids and edges are valid.
    pub(crate) fn topological_order(&self) -> Result<Vec<usize>, ManifestError> {
        let successors = self.successors();
        let mut indegree = vec![0usize; self.nodes.len()];
        for next in successors.iter().flatten() {
            indegree[*next] += 1;
        }
        let mut ready: std::collections::VecDeque<usize> = (0..self.nodes.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &next in &successors[i] {
                indegree[next] -= 1;
                if indegree[next] == 0 {
                    ready.push_back(next);
                }
            }
        }
        match indegree.iter().position(|&d| d > 0) {
            Some(stuck) => Err(ManifestError::Cycle {
                path: self.cycle_through(stuck, &indegree, &successors),
            }),
            None => Ok(order),
        }
    }

    /// Names the nodes of one cycle, e.g. `a -> b -> a`, for the error message. Every node Kahn's
    /// algorithm left behind has a left-behind predecessor, so walking predecessors `n` times from
    /// one lands on a cycle, and walking on closes it.
    fn cycle_through(&self, start: usize, indegree: &[usize], successors: &[Vec<usize>]) -> String {
        let stuck_pred = |node: usize| {
            (0..self.nodes.len()).find(|&p| indegree[p] > 0 && successors[p].contains(&node))
        };
        let mut on_cycle = start;
        for _ in 0..self.nodes.len() {
            match stuck_pred(on_cycle) {
                Some(p) => on_cycle = p,
                None => break,
            }
        }
        let mut path = vec![on_cycle];
        let mut cur = on_cycle;
        while let Some(p) = stuck_pred(cur) {
            if p == on_cycle || path.len() > self.nodes.len() {
                break;
            }
            path.push(p);
            cur = p;
        }
        path.reverse();
        path.push(path[0]);
        let names: Vec<&str> = path.iter().map(|&i| self.nodes[i].id.as_str()).collect();
        names.join(" -> ")
    }

    /// For each node (by index), the indices of the nodes it sends to; unknown ids are skipped.
    pub(crate) fn successors(&self) -> Vec<Vec<usize>> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut successors = vec![Vec::new(); self.nodes.len()];
        for edge in &self.connections {
            if let (Some(&from), Some(&to)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            {
                successors[from].push(to);
            }
        }
        successors
    }
}

impl MediaSettings {
    fn validate(&self) -> Result<(), ManifestError> {
        if !(6_000..=510_000).contains(&self.opus.bitrate) {
            return Err(ManifestError::Media {
                field: "opus.bitrate",
                message: format!("{} is outside 6000..=510000", self.opus.bitrate),
            });
        }
        if self.opus.complexity > 10 {
            return Err(ManifestError::Media {
                field: "opus.complexity",
                message: format!("{} is outside 0..=10", self.opus.complexity),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
