//! Device choice: `device = "auto" | "cpu" | "cuda" | "cuda:N"` in every
//! config and as `--device`. Asking for CUDA where there is none is an error
//! that says why, never a silent fall-back to the CPU.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::runtime::{load_cuda_backend, CudaBackend};

/// A device as written in a config or on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The first CUDA device when there is one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (device 0) or `cuda:N`.
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")]
    Parse(String),
    #[error("device {requested} was asked for, but CUDA is not available: {reason}")]
    CudaUnavailable { requested: String, reason: String },
    #[error("device cuda:{index} was asked for, but only {count} CUDA device(s) are visible")]
    NoSuchCudaDevice { index: usize, count: i64 },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The tch device this spec names on this machine.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        if self == Self::Cpu {
            return Ok(Device::Cpu);
        }
        let backend = load_cuda_backend();
        let available = tch::Cuda::is_available();
        match self {
            Self::Cpu => unreachable!(),
            Self::Auto => Ok(if available {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            Self::Cuda(index) => {
                if !available {
                    let reason = match backend {
                        CudaBackend::Loaded => "no CUDA device or driver was found".to_string(),
                        CudaBackend::Unavailable(why) => format!(
                            "LibTorch's CUDA library could not be loaded ({why}); \
                             install the CUDA set with `cargo xtask setup --cuda`"
                        ),
                    };
                    return Err(DeviceError::CudaUnavailable {
                        requested: self.to_string(),
                        reason,
                    });
                }
                let count = tch::Cuda::device_count();
                if index as i64 >= count {
                    return Err(DeviceError::NoSuchCudaDevice { index, count });
                }
                Ok(Device::Cuda(index))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_others() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(
            "gpu".parse::<DeviceSpec>(),
            Err(DeviceError::Parse("gpu".into()))
        );
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_fallback() {
        if tch::Cuda::is_available() {
            return; // on a GPU machine this test has nothing to check
        }
        assert_eq!(DeviceSpec::Auto.resolve(), Ok(Device::Cpu));
        let err = DeviceSpec::Cuda(0).resolve().unwrap_err();
        assert!(matches!(err, DeviceError::CudaUnavailable { .. }), "{err}");
        assert!(err.to_string().contains("cuda:0"));
    }
}
