//! Parameter counting.

use tch::nn::VarStore;

/// Numbers of scalar parameters in a var store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParamCount {
    /// Parameters the optimiser trains.
    pub trainable: i64,
    /// All variables, including non-trained state such as EMA statistics.
    pub total: i64,
}

pub fn count_parameters(vs: &VarStore) -> ParamCount {
    let numel = |t: &tch::Tensor| t.size().iter().product::<i64>();
    ParamCount {
        trainable: vs.trainable_variables().iter().map(numel).sum(),
        total: vs.variables().values().map(numel).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn counts_trainable_and_frozen_variables() {
        let vs = VarStore::new(Device::Cpu);
        let _linear = nn::linear(vs.root() / "proj", 10, 4, Default::default()); // 44
        let _counts = vs.root().zeros_no_train("ema_counts", &[7]);
        assert_eq!(
            count_parameters(&vs),
            ParamCount {
                trainable: 44,
                total: 51
            }
        );
    }
}
