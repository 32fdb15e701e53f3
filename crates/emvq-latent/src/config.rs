//! [`NatConfig`]: the configuration of the latent-Transformer NAT of Roy et
//! al. 2018 (arXiv 1805.11063; tensor2tensor's `transformer_nat`), read top
//! to bottom as the model runs: Transformer sizes, compression, bottleneck,
//! target length, training schedule.

use serde::{Deserialize, Serialize};

use crate::error::{LatentError, Result};
use crate::length::{LengthConfig, LengthRule};
use emvq_bottleneck::BottleneckConfig;
use emvq_transformer::{Activation, TransformerConfig};

fn one_block() -> i64 {
    1
}

/// The latent Transformer NAT. Every key is required except those marked
/// otherwise; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Joint source/target vocabulary (0 in a TOML file: the tokenizer's).
    pub vocab_size: i64,
    pub d_model: i64,
    pub heads: i64,
    /// Feed-forward inner width (T2T's `filter_size`).
    pub d_ff: i64,
    pub encoder_layers: i64,
    /// Layers of the one-pass (non-causal) decoder.
    pub decoder_layers: i64,
    /// Layers of the autoregressive latent predictor (T2T: as deep as the
    /// decoder; fewer layers make inference faster).
    pub predictor_layers: i64,
    /// Residual/embedding dropout, also inside the conv blocks.
    pub dropout: f64,
    pub attention_dropout: f64,
    pub relu_dropout: f64,
    pub prenorm: bool,
    /// One matrix for source and target embeddings and the softmax.
    pub tie_embeddings: bool,
    /// Longest source or (padded) target sequence.
    pub max_positions: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    /// k: the compressor halves the target length k times (n → n/2^k latents).
    pub compress_steps: i64,
    /// Residual conv blocks of the compressor (each LayerNorm, 3 × [ReLU,
    /// conv k=3, LayerNorm], residual add).
    pub residual_blocks: i64,
    /// Residual conv blocks in each decompression step: 1 (T2T's
    /// `decompress_step`, the default) or 0 (the step is only the 1×1
    /// expansion; about 2 ms less per batch-1 decode on the project's CPU).
    #[serde(default = "one_block")]
    pub decompress_blocks: i64,
    /// Adds the uniform copy of the encoder's output (the plain NAT's decoder
    /// input, spread over the target length) to the decompressed latents
    /// (beyond the paper): the latents refine a source-copy input instead of
    /// being the decoder's only view of the target side.
    #[serde(default)]
    pub source_copy: bool,
    /// Feeds the compressor's output straight to the decompressor (no codes,
    /// no latent predictor): an autoencoder check, not a translation model.
    #[serde(default)]
    pub bypass_bottleneck: bool,
    /// CTC output (beyond the paper; Libovický & Helcl 2018, arXiv
    /// 1811.04719, with the glance of Gu & Kong 2021, arXiv 2012.15833): the
    /// decoder runs on r× the target positions (each decompressed position
    /// repeated r times), is trained with CTC (blank = `bos_id`, which no
    /// target holds) and its output has repeats merged and blanks dropped,
    /// so a word may take any of the r·n positions. 0: off, the paper's one
    /// token per position; else r in 2..=4.
    #[serde(default)]
    pub ctc_upsample: i64,
    /// `vq` | `em` | `semhash`, bits, slices n_c, β (the commitment weight).
    pub bottleneck: BottleneckConfig,
    /// How the target length is chosen at inference (and, for `t2t`, how
    /// training targets are padded).
    pub length: LengthConfig,
    pub schedule: ScheduleConfig,
}

/// `[model.schedule]`: T2T's training curricula, in optimiser steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Mix gold target embeddings into the decoder input: per position the
    /// decompressed latent with probability p(t) = clip(ILD(T1)·IED(T2), 0, 1),
    /// the gold embedding otherwise. `false`: p = 1 from the start.
    pub mix_gold: bool,
    /// T1 of ILD(T) = 0.01 + 0.99·min(t/T, 1) (T2T: 50k).
    pub mix_linear_steps: i64,
    /// T2 of IED(T) = 0.01^(max(T − t, 0)/T) (T2T: 12.5k).
    pub mix_exp_steps: i64,
    /// The latent predictor's loss joins the total from this step on (T2T's
    /// `mask_startup_steps`, 50k).
    pub latent_loss_start: i64,
    /// Weight of the latent cross-entropy.
    pub latent_loss_weight: f64,
    /// Label smoothing of the token loss (T2T: 0).
    pub label_smoothing: f64,
    /// Glancing training (GLAT, Qian et al. 2021, arXiv 2008.07905; beyond
    /// the paper): a first pass without gradients decodes the batch; in
    /// each sentence ⌈ratio · wrong tokens⌉ random positions then get the
    /// gold embedding as decoder input, and the token loss counts the other
    /// positions. GLAT anneals 0.5 → 0.3 over 300k steps; a CPU budget of
    /// ~2k steps keeps it constant. 0: off. Not with `mix_gold`.
    #[serde(default)]
    pub glancing_ratio: f64,
    /// Latent scheduled sampling (beyond the paper): once the latent loss
    /// is on, this share of the training sentences decode from the latent
    /// predictor's own codes (the argmax of its teacher-forced output, as
    /// greedy inference picks them) instead of the target's, so the decoder
    /// learns to read the latents it will get at test time. 0: off.
    #[serde(default)]
    pub predicted_latents: f64,
}

impl ScheduleConfig {
    /// p(t): the probability that a decoder input position is the
    /// decompressed latent rather than the gold embedding at step `step`.
    pub fn latent_mix(&self, step: i64) -> f64 {
        if !self.mix_gold {
            return 1.0;
        }
        let t = step.max(0) as f64;
        let (t1, t2) = (self.mix_linear_steps as f64, self.mix_exp_steps as f64);
        let ild = 0.01 + 0.99 * (t / t1).min(1.0);
        let ied = 0.01f64.powf((t2 - t).max(0.0) / t2);
        (ild * ied).clamp(0.0, 1.0)
    }

    /// Whether the latent loss counts at `step`.
    pub fn latent_loss_on(&self, step: i64) -> bool {
        step >= self.latent_loss_start
    }
}

impl NatConfig {
    /// Checks sizes, ids and the schedule.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LatentError::Config(m));
        self.transformer().validate()?;
        if self.predictor_layers <= 0 {
            return bad(format!(
                "predictor_layers must be ≥ 1, got {}",
                self.predictor_layers
            ));
        }
        if !(1..=8).contains(&self.compress_steps) {
            return bad(format!(
                "compress_steps must be in 1..=8, got {}",
                self.compress_steps
            ));
        }
        if !(0..=1).contains(&self.decompress_blocks) {
            return bad(format!(
                "decompress_blocks must be 0 or 1, got {}",
                self.decompress_blocks
            ));
        }
        if self.residual_blocks < 1 {
            return bad(format!(
                "residual_blocks must be ≥ 1, got {}",
                self.residual_blocks
            ));
        }
        if self.max_positions % self.block() != 0 {
            return bad(format!(
                "max_positions ({}) must be a multiple of 2^compress_steps ({})",
                self.max_positions,
                self.block()
            ));
        }
        self.bottleneck.validate(self.d_model)?;
        let s = &self.schedule;
        if s.mix_gold && (s.mix_linear_steps < 1 || s.mix_exp_steps < 1) {
            return bad("schedule.mix_linear_steps and mix_exp_steps must be ≥ 1".into());
        }
        if !(0.0..1.0).contains(&s.glancing_ratio) {
            return bad(format!(
                "schedule.glancing_ratio must be in [0, 1), got {}",
                s.glancing_ratio
            ));
        }
        if s.mix_gold && s.glancing_ratio > 0.0 {
            return bad(
                "schedule.mix_gold and schedule.glancing_ratio both choose the gold decoder \
                 inputs: set mix_gold = false or glancing_ratio = 0"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&s.predicted_latents) {
            return bad(format!(
                "schedule.predicted_latents must be in [0, 1], got {}",
                s.predicted_latents
            ));
        }
        if s.latent_loss_start < 0 || s.latent_loss_weight < 0.0 {
            return bad("schedule.latent_loss_start and latent_loss_weight must be ≥ 0".into());
        }
        if !(0.0..1.0).contains(&s.label_smoothing) {
            return bad(format!(
                "schedule.label_smoothing must be in [0, 1), got {}",
                s.label_smoothing
            ));
        }
        if self.ctc_upsample != 0 {
            if !(2..=4).contains(&self.ctc_upsample) {
                return bad(format!(
                    "ctc_upsample must be 0 (off) or in 2..=4, got {}",
                    self.ctc_upsample
                ));
            }
            if s.mix_gold || s.label_smoothing > 0.0 || self.length.rule == LengthRule::T2t {
                return bad(
                    "ctc_upsample needs mix_gold = false, label_smoothing = 0 and a length rule \
                     other than t2t (its gold inputs come from the CTC alignment)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Decoder positions per target position: r with CTC, else 1.
    pub fn upsample(&self) -> i64 {
        self.ctc_upsample.max(1)
    }

    /// 2^k target positions per latent.
    pub fn block(&self) -> i64 {
        1 << self.compress_steps
    }

    /// `len` rounded up to a multiple of 2^k.
    pub fn round_up(&self, len: i64) -> i64 {
        (len.max(1) + self.block() - 1) / self.block() * self.block()
    }

    /// The padded target length of a training batch whose targets are
    /// `tgt_len` long (EOS included) and sources `src_len`: T2T's
    /// max(|y|, 2|x|) for the `t2t` length rule, |y| otherwise, rounded up
    /// to a multiple of 2^k.
    pub fn train_length(&self, tgt_len: i64, src_len: i64) -> i64 {
        match self.length.rule {
            LengthRule::T2t => self.round_up(tgt_len.max(2 * src_len)),
            _ => self.round_up(tgt_len),
        }
    }

    /// The Transformer part as the teacher's config (names and sizes line
    /// up, so a teacher checkpoint can initialise it).
    pub fn transformer(&self) -> TransformerConfig {
        TransformerConfig {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            heads: self.heads,
            d_ff: self.d_ff,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            dropout: self.dropout,
            attention_dropout: self.attention_dropout,
            relu_dropout: self.relu_dropout,
            prenorm: self.prenorm,
            tie_embeddings: self.tie_embeddings,
            max_positions: self.max_positions,
            layer_norm_eps: self.layer_norm_eps,
            activation: self.activation,
            pad_id: self.pad_id,
            bos_id: self.bos_id,
            eos_id: self.eos_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> ScheduleConfig {
        ScheduleConfig {
            mix_gold: true,
            mix_linear_steps: 50_000,
            mix_exp_steps: 12_500,
            latent_loss_start: 50_000,
            latent_loss_weight: 1.0,
            label_smoothing: 0.0,
            glancing_ratio: 0.0,
            predicted_latents: 0.0,
        }
    }

    #[test]
    fn mixing_curriculum_follows_t2t() {
        let s = schedule();
        // t = 0: ILD = 0.01, IED = 0.01 → 1e-4.
        assert!((s.latent_mix(0) - 1e-4).abs() < 1e-12);
        // t = T2: IED = 1, ILD = 0.01 + 0.99/4.
        assert!((s.latent_mix(12_500) - (0.01 + 0.99 * 0.25)).abs() < 1e-12);
        assert_eq!(s.latent_mix(50_000), 1.0);
        assert_eq!(s.latent_mix(80_000), 1.0);
        let off = ScheduleConfig {
            mix_gold: false,
            ..s
        };
        assert_eq!(off.latent_mix(0), 1.0);
        assert!(!off.latent_loss_on(49_999) && off.latent_loss_on(50_000));
    }

    #[test]
    fn glancing_is_a_ratio_below_one_and_excludes_gold_mixing() {
        let mut cfg: NatConfig =
            toml::from_str(include_str!("../../../configs/multi30k/nat_em.toml"))
                .map(|run: toml::Table| run["model"].clone().try_into().unwrap())
                .unwrap();
        cfg.vocab_size = 100;
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.schedule.glancing_ratio, 0.5);
        cfg.schedule.mix_gold = true;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("mix_gold") && err.contains("glancing_ratio"),
            "{err}"
        );
        cfg.schedule.mix_gold = false;
        cfg.schedule.glancing_ratio = 1.0;
        assert!(cfg.validate().unwrap_err().to_string().contains("[0, 1)"));
        cfg.schedule.glancing_ratio = 0.5;
        cfg.schedule.predicted_latents = 1.5;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("schedule.predicted_latents"), "{err}");
    }
}
