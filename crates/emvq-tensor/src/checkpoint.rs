//! Checkpoints in the safetensors format: named tensors plus a string map of
//! metadata (step, config, data position…). Files are written atomically
//! (temp file, fsync, rename); a truncated or corrupt file is an error that
//! names the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is truncated or corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("checkpoint {path}: tensor {name:?} has unsupported type {dtype}")]
    UnsupportedType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("checkpoint {path} has no tensor {name:?}")]
    Missing { path: PathBuf, name: String },
    #[error(
        "checkpoint {path}: tensor {name:?} has shape {found:?}, the model expects {expected:?}"
    )]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("checkpoint {path} has no metadata key {key:?}")]
    MissingMetadata { path: PathBuf, key: String },
}

/// Named tensors (on the CPU) and string metadata.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

fn to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

impl Checkpoint {
    /// Every variable of `vs`, copied to the CPU, under its var-store name.
    pub fn from_var_store(vs: &VarStore) -> Self {
        let tensors = vs
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.detach().to(Device::Cpu)))
            .collect();
        Self {
            tensors,
            metadata: BTreeMap::new(),
        }
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let mut raw = Vec::with_capacity(self.tensors.len());
        for (name, tensor) in &self.tensors {
            let tensor = tensor.to(Device::Cpu).contiguous();
            let dtype =
                to_dtype(tensor.kind()).ok_or_else(|| CheckpointError::UnsupportedType {
                    path: path.into(),
                    name: name.clone(),
                    dtype: format!("{:?}", tensor.kind()),
                })?;
            let numel = tensor.numel();
            let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
            tensor.copy_data_u8(&mut bytes, numel);
            let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
            raw.push((name.clone(), dtype, shape, bytes));
        }
        let views = raw.iter().map(|(name, dtype, shape, bytes)| {
            let view =
                TensorView::new(*dtype, shape.clone(), bytes).expect("byte length matches shape");
            (name.clone(), view)
        });
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let bytes = safetensors::serialize(views, &Some(metadata)).map_err(|e| {
            CheckpointError::Corrupt {
                path: path.into(),
                reason: e.to_string(),
            }
        })?;
        write_atomic(path, &bytes).map_err(|source| CheckpointError::Write {
            path: path.into(),
            source,
        })
    }

    /// Reads a checkpoint; tensors stay on the CPU.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
            path: path.into(),
            source,
        })?;
        let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
            path: path.into(),
            reason: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
        let file = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let kind = to_kind(view.dtype()).ok_or_else(|| CheckpointError::UnsupportedType {
                path: path.into(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|e| {
                CheckpointError::Corrupt {
                    path: path.into(),
                    reason: format!("tensor {name:?}: {e}"),
                }
            })?;
            tensors.insert(name, tensor);
        }
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Self { tensors, metadata })
    }

    /// Copies the checkpoint's tensors into the variables of `vs`; every
    /// variable must be present with the same shape.
    pub fn restore_into(&self, vs: &VarStore, path: &Path) -> Result<(), CheckpointError> {
        let _guard = tch::no_grad_guard();
        for (name, mut var) in vs.variables() {
            let saved = self
                .tensors
                .get(&name)
                .ok_or_else(|| CheckpointError::Missing {
                    path: path.into(),
                    name: name.clone(),
                })?;
            if saved.size() != var.size() {
                return Err(CheckpointError::Shape {
                    path: path.into(),
                    name,
                    found: saved.size(),
                    expected: var.size(),
                });
            }
            var.copy_(saved);
        }
        Ok(())
    }

    /// A metadata value, or an error naming the key and file.
    pub fn meta(&self, key: &str, path: &Path) -> Result<&str, CheckpointError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckpointError::MissingMetadata {
                path: path.into(),
                key: key.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn model(seed: i64) -> VarStore {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let _l = nn::linear(vs.root() / "encoder" / "proj", 8, 4, Default::default());
        let _e = vs.root().zeros_no_train("ema_count", &[5]);
        vs
    }

    #[test]
    fn round_trip_restores_every_tensor_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let src = model(1);
        let mut ckpt = Checkpoint::from_var_store(&src);
        ckpt.tensors
            .insert("step_tokens".into(), Tensor::from_slice(&[1i64, 2, 3]));
        ckpt.metadata.insert("step".into(), "42".into());
        ckpt.save(&path).unwrap();

        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded.meta("step", &path).unwrap(), "42");
        assert_eq!(
            Vec::<i64>::try_from(&loaded.tensors["step_tokens"]).unwrap(),
            vec![1, 2, 3]
        );
        let dst = model(2);
        loaded.restore_into(&dst, &path).unwrap();
        for (name, t) in src.variables() {
            assert!(t.equal(&dst.variables()[&name]), "{name}");
        }
        assert!(matches!(
            loaded.meta("absent", &path),
            Err(CheckpointError::MissingMetadata { .. })
        ));
    }

    #[test]
    fn truncated_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        Checkpoint::from_var_store(&model(1)).save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() - 7, 12, 3] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = Checkpoint::load(&path).unwrap_err();
            assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
        }
        let missing = Checkpoint::load(&dir.path().join("nope.safetensors")).unwrap_err();
        assert!(missing.to_string().contains("nope.safetensors"));
    }

    #[test]
    fn shape_mismatch_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut ckpt = Checkpoint::from_var_store(&model(1));
        ckpt.tensors.insert(
            "ema_count".into(),
            Tensor::zeros([6], (Kind::Float, Device::Cpu)),
        );
        ckpt.save(&path).unwrap();
        let err = Checkpoint::load(&path)
            .unwrap()
            .restore_into(&model(1), &path)
            .unwrap_err();
        assert!(err.to_string().contains("ema_count"), "{err}");
    }
}
