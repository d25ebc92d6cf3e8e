//! The pipelines a server offers: the default (`--manifest`) and the named ones found in
//! `--manifest-dir`, all loaded and built at start so a broken file stops the server early.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::PipelineError;
use super::graph::Pipeline;
use super::manifest::Manifest;

/// Why the catalog could not be loaded, or a session asked for a pipeline it does not have.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("pipeline manifest {path}: {source}")]
    Manifest {
        path: String,
        #[source]
        source: PipelineError,
    },
    #[error("manifest directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifests {first} and {second} both have the name {name:?}")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
    #[error("unknown manifest {name:?}; this server has: {known}")]
    UnknownManifest { name: String, known: String },
}

/// Named pipelines, ready to start sessions.
pub struct PipelineCatalog {
    default: Pipeline,
    named: BTreeMap<String, (PathBuf, Pipeline)>,
}

/// File extensions read from a manifest directory.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

impl PipelineCatalog {
    /// Loads `default` (none: loopback) and every `*.yaml|*.yml|*.json` of `dir`, each named
    /// by its file stem.
    ///
    /// # Errors
    /// The first manifest that fails to load or build, naming its file; an unreadable
    /// directory; two files with the same stem.
    pub fn load(default: Option<&Path>, dir: Option<&Path>) -> Result<Self, CatalogError> {
        let default = match default {
            Some(path) => build(path)?,
            None => {
                Pipeline::new(Manifest::loopback()).map_err(|source| CatalogError::Manifest {
                    path: "(built-in loopback)".into(),
                    source,
                })?
            }
        };
        let mut named: BTreeMap<String, (PathBuf, Pipeline)> = BTreeMap::new();
        if let Some(dir) = dir {
            for path in manifest_files(dir)? {
                let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                let pipeline = build(&path)?;
                if let Some((first, _)) = named.get(&name) {
                    return Err(CatalogError::DuplicateName {
                        name,
                        first: display(first),
                        second: display(&path),
                    });
                }
                named.insert(name, (path, pipeline));
            }
        }
        Ok(Self { default, named })
    }

    /// The same catalog, every session's nodes bounded by `limits`.
    #[must_use]
    pub fn with_limits(self, limits: super::nodes::NodeLimits) -> Self {
        Self {
            default: self.default.with_limits(limits),
            named: self
                .named
                .into_iter()
                .map(|(name, (path, pipeline))| (name, (path, pipeline.with_limits(limits))))
                .collect(),
        }
    }

    /// A catalog of one pipeline, used for every session.
    pub fn single(pipeline: Pipeline) -> Self {
        Self {
            default: pipeline,
            named: BTreeMap::new(),
        }
    }

    /// The pipeline named `name`, or the default for `None`.
    ///
    /// # Errors
    /// `UnknownManifest` listing the names this server has.
    pub fn get(&self, name: Option<&str>) -> Result<&Pipeline, CatalogError> {
        match name {
            None => Ok(&self.default),
            Some(name) => self
                .named
                .get(name)
                .map(|(_, pipeline)| pipeline)
                .ok_or_else(|| CatalogError::UnknownManifest {
                    name: name.to_owned(),
                    known: if self.named.is_empty() {
                        "no named manifests (see --manifest-dir)".to_owned()
                    } else {
                        self.names().collect::<Vec<_>>().join(", ")
                    },
                }),
        }
    }

    /// The pipeline of sessions that name none (`--manifest`, or loopback).
    pub fn default_pipeline(&self) -> &Pipeline {
        &self.default
    }

    /// Names of the pipelines of `--manifest-dir`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }
}

fn build(path: &Path) -> Result<Pipeline, CatalogError> {
    Manifest::load(path)
        .map_err(PipelineError::from)
        .and_then(Pipeline::new)
        .map_err(|source| CatalogError::Manifest {
            path: display(path),
            source,
        })
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, CatalogError> {
    let dir_error = |source| CatalogError::Dir {
        path: display(dir),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e));
        if is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rm-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_every_manifest_of_a_directory_by_name() {
        let dir = temp_dir("ok");
        std::fs::write(dir.join("echo.yaml"), "version: v1\nnodes: []\n").unwrap();
        std::fs::write(
            dir.join("pass.json"),
            r#"{"version":"v1","nodes":[{"id":"p","node_type":"PassThrough"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        let catalog = PipelineCatalog::load(None, Some(&dir)).unwrap();
        assert_eq!(catalog.names().collect::<Vec<_>>(), ["echo", "pass"]);
        assert_eq!(catalog.get(Some("pass")).unwrap().manifest().nodes.len(), 1);
        assert!(catalog.get(None).unwrap().manifest().nodes.is_empty());
        let err = catalog.get(Some("nope")).err().unwrap().to_string();
        assert!(err.contains("nope") && err.contains("echo, pass"), "{err}");
    }

    #[test]
    fn a_broken_manifest_in_the_directory_names_its_file() {
        let dir = temp_dir("broken");
        std::fs::write(
            dir.join("bad.yaml"),
            "version: v1\nnodes:\n  - {id: x, node_type: Nope}\n",
        )
        .unwrap();
        let err = PipelineCatalog::load(None, Some(&dir))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad.yaml") && err.contains("Nope"), "{err}");
    }

    #[test]
    fn same_stem_twice_is_an_error() {
        let dir = temp_dir("dup");
        std::fs::write(dir.join("a.yaml"), "version: v1\n").unwrap();
        std::fs::write(dir.join("a.json"), r#"{"version":"v1"}"#).unwrap();
        assert!(matches!(
            PipelineCatalog::load(None, Some(&dir)),
            Err(CatalogError::DuplicateName { .. })
        ));
    }
}
