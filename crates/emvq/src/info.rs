//! `emvq info`: what LibTorch this binary runs on, and a tensor check on the
//! chosen device (a matmul and a softmax compared with the CPU result).

use anyhow::{ensure, Context, Result};
use emvq_tensor::runtime::RuntimeInfo;
use emvq_tensor::DeviceSpec;
use tch::{Device, Kind, Tensor};

pub fn run(spec: DeviceSpec, json: bool) -> Result<()> {
    let info = RuntimeInfo::collect();
    let device = spec.resolve().context("emvq info --device")?;
    let check = tensor_check(device)?;
    if json {
        let mut value = serde_json::to_value(&info)?;
        value["device"] = format!("{device:?}").into();
        value["check_max_abs_diff"] = check.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    println!("emvq            {}", env!("CARGO_PKG_VERSION"));
    println!("tch             {}", info.tch_version);
    println!("libtorch        {}", or_unknown(info.libtorch_version));
    println!(
        "library         {}",
        or_unknown(info.libtorch_path.map(|p| p.display().to_string()))
    );
    println!("cuda backend    {}", info.cuda_backend);
    println!(
        "cuda available  {} ({} device(s))",
        info.cuda_available, info.cuda_device_count
    );
    println!(
        "cudnn           {} {}",
        info.cudnn_available,
        info.cudnn_version
            .map(|v| v.to_string())
            .unwrap_or_default()
    );
    println!(
        "cpu threads     {} (inter-op {}), mkl {}, openmp {}",
        info.cpu_threads, info.cpu_interop_threads, info.mkl, info.openmp
    );
    println!("tensor check    {device:?}: max |device − cpu| = {check:.2e}");
    Ok(())
}

/// Runs a matmul + softmax on `device` and returns the largest difference
/// from the same computation on the CPU.
fn tensor_check(device: Device) -> Result<f64> {
    tch::manual_seed(0);
    let a = Tensor::randn([256, 128], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([128, 64], (Kind::Float, Device::Cpu));
    let on_cpu = a.matmul(&b).softmax(-1, Kind::Float);
    let on_device = a
        .to(device)
        .matmul(&b.to(device))
        .softmax(-1, Kind::Float)
        .to(Device::Cpu);
    let diff = (on_device - &on_cpu).abs().max().double_value(&[]);
    ensure!(
        diff < 1e-3,
        "tensor check on {device:?} differs from the CPU by {diff}"
    );
    Ok(diff)
}
