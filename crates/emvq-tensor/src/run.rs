//! Run directories: every run lives in `runs/<stage>/<name>/` and holds the
//! resolved config (`config.toml`), checkpoints (`checkpoints/`),
//! `metrics.jsonl` (one JSON object a line) and the log (`log.txt`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::config::{load_toml, ConfigError};
use crate::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("run directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot serialise the config of run {path}: {message}")]
    Serialize { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates (or reopens) `<runs_root>/<stage>/<name>/`.
    pub fn create(runs_root: &Path, stage: &str, name: &str) -> Result<Self, RunError> {
        let root = runs_root.join(stage).join(name);
        fs::create_dir_all(&root).map_err(|source| RunError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Self { root })
    }

    /// Opens an existing run directory.
    pub fn open(root: &Path) -> Result<Self, RunError> {
        if !root.join("config.toml").is_file() {
            let source = io::Error::new(
                io::ErrorKind::NotFound,
                "no config.toml: not a run directory",
            );
            return Err(RunError::Io {
                path: root.into(),
                source,
            });
        }
        Ok(Self { root: root.into() })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// Where checkpoints go; created by the first checkpoint written there.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.txt")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// Saves the resolved config (every default filled in) as `config.toml`.
    pub fn save_config<T: Serialize>(&self, config: &T) -> Result<(), RunError> {
        let path = self.config_path();
        let text = toml::to_string_pretty(config).map_err(|e| RunError::Serialize {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes()).map_err(|source| RunError::Io { path, source })
    }

    pub fn load_config<T: DeserializeOwned>(&self) -> Result<T, RunError> {
        Ok(load_toml(&self.config_path())?)
    }

    /// Appends one JSON object to `metrics.jsonl` (one write per line).
    pub fn log_metrics<T: Serialize>(&self, record: &T) -> Result<(), RunError> {
        let path = self.metrics_path();
        let mut line = serde_json::to_string(record).map_err(|e| RunError::Serialize {
            path: path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        let io_err = |source| RunError::Io {
            path: path.clone(),
            source,
        };
        let mut file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        file.write_all(line.as_bytes()).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        steps: u64,
    }

    #[test]
    fn run_dir_holds_config_and_metrics() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path(), "teacher", "small").unwrap();
        assert!(run.path().ends_with("teacher/small"));
        assert!(run.path().is_dir());
        assert!(run.checkpoint_dir().starts_with(run.path()));
        let cfg = Cfg {
            name: "small".into(),
            steps: 10,
        };
        run.save_config(&cfg).unwrap();
        assert_eq!(
            RunDir::open(run.path())
                .unwrap()
                .load_config::<Cfg>()
                .unwrap(),
            cfg
        );
        run.log_metrics(&serde_json::json!({"step": 1, "loss": 2.5}))
            .unwrap();
        run.log_metrics(&serde_json::json!({"step": 2, "loss": 2.0}))
            .unwrap();
        let lines = fs::read_to_string(run.metrics_path()).unwrap();
        assert_eq!(lines.lines().count(), 2);
        assert!(RunDir::open(tmp.path()).is_err());
    }
}
