//! TOML configs. Every config struct uses `#[serde(deny_unknown_fields)]`, so
//! an unknown or missing key is an error; the error names the file, the line
//! and the key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Reads and checks a TOML config file.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse_toml(&text, path)
}

/// Parses TOML text; `origin` names it in errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceSpec;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Model {
        d_model: i64,
        #[serde(default)]
        device: DeviceSpec,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Run {
        name: String,
        model: Model,
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teacher.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_file_and_line() {
        let (_dir, path) = write("name = \"a\"\n[model]\nd_model = 8\nd_modle = 9\n");
        let msg = load_toml::<Run>(&path).unwrap_err().to_string();
        assert!(msg.contains("d_modle"), "{msg}");
        assert!(msg.contains("teacher.toml"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn missing_key_and_bad_device_are_errors_naming_them() {
        let (_dir, path) = write("name = \"a\"\n[model]\n");
        let msg = load_toml::<Run>(&path).unwrap_err().to_string();
        assert!(
            msg.contains("d_model") && msg.contains("teacher.toml"),
            "{msg}"
        );

        let (_dir, path) = write("name = \"a\"\n[model]\nd_model = 8\ndevice = \"gpu\"\n");
        let msg = load_toml::<Run>(&path).unwrap_err().to_string();
        assert!(msg.contains("gpu") && msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn valid_config_parses() {
        let (_dir, path) = write("name = \"a\"\n[model]\nd_model = 8\ndevice = \"cuda:1\"\n");
        let run: Run = load_toml(&path).unwrap();
        assert_eq!(run.model.device, DeviceSpec::Cuda(1));
    }
}
