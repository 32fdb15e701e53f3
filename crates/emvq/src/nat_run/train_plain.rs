//! `emvq train-nat --config configs/multi30k/nat_plain.toml`: training of
//! the plain NAT baseline ([`emvq_latent::PlainNat`], Gu et al. 2018, arXiv
//! 1711.02281, as the "NAT" rows of Roy et al. 2018's table) into
//! `runs/nat/<name>/`, in the latent NAT's training loop
//! (`crate::nat::train_loop`) with its run layout: resolved `config.toml`,
//! the teacher's `tokenizer.json`, `metrics.jsonl` (token NLL, length CE,
//! tokens/s; validation loss and one-pass BLEU), `checkpoints/` with exact
//! resume (model, Adam moments, step, data position, elapsed time), and
//! `model.safetensors`, the average of the last `average_last` checkpoints.
//! `train-nat` hands a config whose `[model]` has no `compress_steps` here
//! ([`super::config_kind`]). This module is what the plain NAT brings to that
//! loop: its [`NatKind`] (checks, the model it builds).

use std::path::PathBuf;

use anyhow::{ensure, Result};
use emvq_data::TranslationDataConfig;
use emvq_latent::{NatModel, PlainNat, PlainNatConfig};

use crate::nat::train_loop::{self, NatHook, NatKind};
use crate::nat::TrainArgs;

impl NatKind for PlainNatConfig {
    const BAR: &'static str = "train-nat (plain)";

    train_loop::nat_kind_common_fields!();

    fn check_lengths(&self, data: &TranslationDataConfig) -> Result<()> {
        ensure!(
            self.max_positions > data.filters.max_len as i64,
            "model.max_positions ({}) must exceed data.filters.max_len",
            self.max_positions
        );
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("plain NAT {name}")
    }

    fn build(&self, root: tch::nn::Path) -> Result<Box<dyn NatHook>> {
        Ok(Box::new(PlainHook(PlainNat::new(root, self)?)))
    }
}

/// The plain NAT in the shared loop: nothing counted besides the loss.
struct PlainHook(PlainNat);

impl NatHook for PlainHook {
    fn model(&self) -> &dyn NatModel {
        &self.0
    }
}

/// Trains (or resumes) a plain NAT; returns the run directory.
pub fn train_plain(args: &TrainArgs) -> Result<PathBuf> {
    train_loop::train::<PlainNatConfig>(args)
}

#[cfg(test)]
mod tests {
    use super::super::PlainRunConfig;
    use emvq_tensor::load_toml;

    #[test]
    fn shipped_plain_config_parses_and_validates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config: PlainRunConfig =
            load_toml(&root.join("configs/multi30k/nat_plain.toml")).unwrap();
        config.validate().unwrap();
        assert!(
            config.data.train_dir.is_some(),
            "the paper's plain NAT is trained on distilled targets"
        );
        assert_eq!(
            super::super::config_kind(
                &std::fs::read_to_string(root.join("configs/multi30k/nat_plain.toml")).unwrap()
            )
            .unwrap(),
            super::super::RunKind::PlainNat
        );
    }
}
