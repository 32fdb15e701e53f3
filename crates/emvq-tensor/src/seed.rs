//! Seeding. On the CPU, LibTorch's kernels are deterministic for a fixed
//! thread count, so seeding its generator makes a run repeat bit for bit.

/// Seeds LibTorch's CPU generator and, when CUDA is up, every CUDA generator.
pub fn seed_all(seed: u64) {
    tch::manual_seed(seed as i64);
    if tch::Cuda::is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

    /// A small training computation: random init, dropout, backward, Adam.
    fn small_run(seed: u64) -> Vec<f32> {
        seed_all(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = nn::seq()
            .add(nn::linear(vs.root() / "l1", 16, 32, Default::default()))
            .add_fn(|x| x.relu().dropout(0.3, true))
            .add(nn::linear(vs.root() / "l2", 32, 4, Default::default()));
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let x = Tensor::randn([64, 16], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(4, [64], (Kind::Int64, Device::Cpu));
        for _ in 0..5 {
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
        }
        Vec::<f32>::try_from(net.forward(&x).flatten(0, -1)).unwrap()
    }

    #[test]
    fn same_seed_gives_identical_bits_other_seed_does_not() {
        let a = small_run(7);
        let b = small_run(7);
        let c = small_run(8);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
        assert_ne!(bits(&a), bits(&c));
    }
}
