//! Pipelines: the manifest, the graph runner and the nodes.

pub mod data;
