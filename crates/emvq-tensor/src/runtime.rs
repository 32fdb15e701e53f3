//! The LibTorch this process runs on.
//!
//! `libtorch_cuda.so` is not linked (the linker would drop it, and on a
//! CPU-only install its own dependencies are missing); instead
//! [`load_cuda_backend`] opens it at run time when it can be loaded, which
//! registers LibTorch's CUDA hooks. Call it before any CUDA query —
//! [`crate::DeviceSpec::resolve`] does.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The tch version this workspace pins (`tch = "=0.24.0"` in Cargo.toml).
pub const TCH_VERSION: &str = "0.24.0";
/// The LibTorch version tch 0.24 requires.
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Whether LibTorch's CUDA backend could be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaBackend {
    /// `libtorch_cuda.so` is loaded; CUDA devices are usable if a driver is.
    Loaded,
    /// It could not be loaded; the dynamic loader's reason.
    Unavailable(String),
}

/// Loads `libtorch_cuda.so` once per process (`EMVQ_TORCH_CUDA_LIB` names
/// another file). The handle is kept for the life of the process.
pub fn load_cuda_backend() -> &'static CudaBackend {
    static BACKEND: OnceLock<CudaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let name =
            std::env::var("EMVQ_TORCH_CUDA_LIB").unwrap_or_else(|_| "libtorch_cuda.so".into());
        let mut candidates = vec![name.clone()];
        // The LibTorch this binary was built against, in case the loader's
        // search path (rpath, LD_LIBRARY_PATH) does not reach it.
        if let Some(dir) = option_env!("EMVQ_LIBTORCH_LIB") {
            if !name.contains('/') {
                candidates.push(format!("{dir}/{name}"));
            }
        }
        let mut reasons = Vec::new();
        for candidate in candidates {
            let c_name = CString::new(candidate).expect("library name without NUL");
            // SAFETY: dlopen with a valid C string; the handle is never closed.
            let handle =
                unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !handle.is_null() {
                return CudaBackend::Loaded;
            }
            // SAFETY: dlerror returns a thread-local C string or null.
            let err = unsafe { libc::dlerror() };
            if !err.is_null() {
                reasons.push(
                    unsafe { CStr::from_ptr(err) }
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        CudaBackend::Unavailable(reasons.first().cloned().unwrap_or_else(|| "unknown".into()))
    })
}

/// The file `libtorch_cpu.so` was loaded from, read from `/proc/self/maps`.
pub fn libtorch_path() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
}

/// The version of the LibTorch in use, read from the files that ship beside
/// its `lib/` folder (`version.py` in a Python wheel, `build-version` in a
/// LibTorch zip).
pub fn libtorch_version() -> Option<String> {
    let root = libtorch_path()?.parent()?.parent()?.to_path_buf();
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// A description of the runtime, as `emvq info` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    pub tch_version: &'static str,
    pub libtorch_version: Option<String>,
    pub libtorch_path: Option<PathBuf>,
    pub cuda_backend: String,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    pub cudnn_version: Option<i64>,
    pub cpu_threads: i32,
    pub cpu_interop_threads: i32,
    pub mkl: bool,
    pub openmp: bool,
}

impl RuntimeInfo {
    pub fn collect() -> Self {
        let cuda_backend = match load_cuda_backend() {
            CudaBackend::Loaded => "loaded".to_string(),
            CudaBackend::Unavailable(why) => format!("not loaded ({why})"),
        };
        let cuda_available = tch::Cuda::is_available();
        let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
        Self {
            tch_version: TCH_VERSION,
            libtorch_version: libtorch_version(),
            libtorch_path: libtorch_path(),
            cuda_backend,
            cuda_available,
            cuda_device_count: if cuda_available {
                tch::Cuda::device_count()
            } else {
                0
            },
            cudnn_available,
            cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
            cpu_threads: tch::get_num_threads(),
            cpu_interop_threads: tch::get_num_interop_threads(),
            mkl: tch::utils::has_mkl(),
            openmp: tch::utils::has_openmp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_tch_version_matches_the_workspace_manifest() {
        let manifest = include_str!("../../../Cargo.toml");
        assert!(manifest.contains(&format!("tch = \"={TCH_VERSION}\"")));
    }

    #[test]
    fn runtime_reports_the_libtorch_it_runs_on() {
        let info = RuntimeInfo::collect();
        let path = info.libtorch_path.expect("libtorch_cpu.so is mapped");
        assert!(path.exists());
        let version = info.libtorch_version.expect("version file beside lib/");
        assert!(version.starts_with(LIBTORCH_VERSION), "LibTorch {version}");
        assert!(info.cpu_threads >= 1);
    }
}
