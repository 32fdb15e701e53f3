//! `emvq train-nat --config FILE [--name N] [--resume] [--max-steps N]
//! [--max-minutes M] [--train-dir DIR] [--teacher DIR]`: trains the
//! latent-Transformer NAT of Roy et al. 2018 (arXiv 1805.11063,
//! [`emvq_latent::LatentNat`]) into `runs/nat/<name>/`.
//!
//! The NAT uses its teacher's vocabulary: `teacher = "runs/teacher/NAME"`
//! names the run whose `tokenizer.json` is copied into the run directory
//! (and whose weights initialise the embeddings, encoder and decoder layers
//! by name with `init_from_teacher = true`). `[data]` is the teacher's data
//! table, usually with `train_dir` pointing at the distilled corpus.
//!
//! The run directory holds, like a teacher run's: the resolved `config.toml`,
//! `tokenizer.json`, `metrics.jsonl` (loss parts, codebook perplexity and dead
//! codes, tokens/s every `log_every` steps; validation loss and one-pass
//! greedy BLEU every `eval_every` steps), `log.txt`, `checkpoints/` (exact
//! resume: model, codebook statistics, Adam moments, step, data position,
//! elapsed time) and at the end `model.safetensors`, the average of the last
//! `average_last` checkpoints. The training loop is shared with the plain
//! NAT baseline ([`train_loop`]); this module adds the latent NAT's model and
//! its codebook statistics ([`NatKind`] for [`NatConfig`]).

pub mod bench;
pub mod train_loop;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clap::Args;
use emvq_bottleneck::CodeUsage;
use emvq_data::{SubwordTokenizer, TranslationDataConfig};
use emvq_latent::{LatentNat, NatConfig, NatDecode, NatLoss, NatModel, Score};
use emvq_tensor::{DeviceSpec, RunDir};
use emvq_transformer::CheckpointKeeper;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::teacher::run_steps::RunArgs;
use crate::teacher::{set_threads, MODEL_FILE};
use train_loop::{NatHook, NatKind};

/// A NAT run's config (`configs/<dataset>/nat_*.toml`), generic over its
/// `[model]`: [`NatRunConfig`] for the latent NAT, `PlainRunConfig`
/// (`crate::nat_run`) for the plain NAT baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatRunConfigOf<M> {
    /// Run name: the run directory is `runs/nat/<name>/`.
    pub name: String,
    #[serde(default)]
    pub device: DeviceSpec,
    /// Seed of the initialisation and of every step's random draws.
    pub seed: u64,
    /// LibTorch intra-op threads; 0 keeps LibTorch's default.
    pub threads: usize,
    /// The teacher run whose tokenizer (and optionally weights) the NAT uses,
    /// and which rescores candidates.
    pub teacher: PathBuf,
    /// Copy the teacher's tensors whose names and shapes match (embeddings,
    /// encoder, decoder layers) before training.
    #[serde(default)]
    pub init_from_teacher: bool,
    /// With `init_from_teacher`, the latent predictor's layers and final
    /// norm also start from the teacher's decoder layers (beyond the paper;
    /// latent NATs only).
    #[serde(default)]
    pub init_predictor_from_teacher: bool,
    pub data: TranslationDataConfig,
    /// `vocab_size = 0` takes the tokenizer's size.
    pub model: M,
    pub train: NatTrainSettings,
    pub decode: NatDecodeSettings,
}

/// The latent NAT's run config.
pub type NatRunConfig = NatRunConfigOf<NatConfig>;

/// `[train]`: optimisation, stopping, evaluation and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatTrainSettings {
    /// The constant `c` of `lr = c · min(1, t/w) · max(t, w)^−½ · d^−½`.
    pub lr_scale: f64,
    pub warmup_steps: i64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Global gradient-norm clip; 0 turns it off.
    pub clip_norm: f64,
    #[serde(default)]
    pub max_steps: Option<i64>,
    #[serde(default)]
    pub max_minutes: Option<f64>,
    pub log_every: i64,
    pub eval_every: i64,
    /// One-pass greedy BLEU on the validation set at each evaluation.
    pub eval_bleu: bool,
    pub checkpoint_every: i64,
    pub keep_last: usize,
    pub average_last: usize,
}

/// `[decode]`: inference settings of validation BLEU, `translate`, `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatDecodeSettings {
    /// Beam over latent codes (1: greedy).
    pub latent_beam: usize,
    /// Sentences per decoding batch.
    pub batch_sentences: usize,
    /// How the teacher ranks candidates (`--rescore S`, NPD): `log_prob`
    /// (the paper's, summed over tokens; favours short candidates) or
    /// `per_token` (divided by the candidate's length + 1).
    #[serde(default)]
    pub rescore_score: Score,
    /// Collapse neighbouring repeated tokens of every output, one pass or
    /// candidate ("a a b" → "a b"; beyond the paper). Absent: `false`, the
    /// raw argmax.
    #[serde(default)]
    pub collapse_repeats: bool,
    /// Latent NAT runs: decoder passes after the first, each feeding the
    /// most confident tokens so far back as inputs and predicting the rest
    /// again (mask-predict's schedule; beyond the paper). Absent: 0, the
    /// paper's single pass.
    #[serde(default)]
    pub refine_steps: usize,
    /// Latent NAT runs, inference only: project the decoder states onto the
    /// vocabulary in bfloat16 (beyond the paper). ~2.7× faster than float32
    /// for the ~30 positions of a batch-1 decode on CPUs with AVX-512 BF16,
    /// slower without it; near-tied argmaxes may flip. Absent: `false`.
    #[serde(default)]
    pub bf16_output: bool,
}

impl NatDecodeSettings {
    pub fn nat(&self) -> NatDecode {
        NatDecode {
            latent_beam: self.latent_beam,
            collapse_repeats: self.collapse_repeats,
            refine_steps: self.refine_steps,
            ..Default::default()
        }
    }
}

impl NatKind for NatConfig {
    const BAR: &'static str = "train-nat";

    train_loop::nat_kind_common_fields!();

    fn check_lengths(&self, data: &TranslationDataConfig) -> Result<()> {
        let longest = data.filters.max_len as i64 + 1;
        let needed = match self.length.rule {
            emvq_latent::LengthRule::T2t => self.round_up(2 * longest),
            _ => self.round_up(longest),
        };
        ensure!(
            self.max_positions >= needed,
            "model.max_positions ({}) must hold the padded targets of data.filters.max_len + EOS ({needed})",
            self.max_positions
        );
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!(
            "NAT {name} ({:?} bottleneck, {} bits × {} slices, k = {}, length {:?})",
            self.bottleneck.kind,
            self.bottleneck.bits,
            self.bottleneck.slices,
            self.compress_steps,
            self.length.rule
        )
    }

    fn build(&self, root: tch::nn::Path) -> Result<Box<dyn NatHook>> {
        let model = LatentNat::new(root, self)?;
        let bn = model.bottleneck();
        let usage = || CodeUsage::new(bn.slices(), bn.codebook_size());
        let (train_usage, valid_usage) = (usage(), usage());
        Ok(Box::new(LatentHook {
            model,
            train_usage,
            valid_usage,
        }))
    }
}

/// The latent NAT in the shared loop: it counts the codes of the training
/// window and of a validation pass (codebook perplexity, dead codes).
struct LatentHook {
    model: LatentNat,
    train_usage: CodeUsage,
    valid_usage: CodeUsage,
}

impl NatHook for LatentHook {
    fn model(&self) -> &dyn NatModel {
        &self.model
    }

    fn loss(&mut self, src: &Tensor, tgt: &Tensor, step: i64, train: bool) -> Result<NatLoss> {
        let (loss, codes) = self.model.loss_with_codes(src, tgt, step, train)?;
        if let Some(c) = codes {
            let usage = if train {
                &mut self.train_usage
            } else {
                &mut self.valid_usage
            };
            usage.add_codes(&c.codes)?;
        }
        Ok(loss)
    }

    /// Training records: `code_perplexity` and `dead_codes` per slice;
    /// validation records: `ppl` (of the token NLL), `code_perplexity` and
    /// `codes_used` per slice.
    fn finish_record(&mut self, record: &mut serde_json::Value, train: bool) -> Result<()> {
        let usage = if train {
            &mut self.train_usage
        } else {
            &mut self.valid_usage
        };
        if !train {
            record["ppl"] = serde_json::json!((record["token_nll"].as_f64().unwrap_or(0.0)).exp());
        }
        if usage.vectors() > 0.0 {
            record["code_perplexity"] = serde_json::json!(usage.perplexity());
            if train {
                record["dead_codes"] = serde_json::json!(usage.dead_count());
            } else {
                let size = self.model.bottleneck().codebook_size() as usize;
                let used: Vec<usize> = usage.dead_count().iter().map(|&d| size - d).collect();
                record["codes_used"] = serde_json::json!(used);
            }
        }
        usage.reset();
        Ok(())
    }
}

/// `emvq train-nat`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "configs/multi30k/nat_em.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
    /// Override `data.train_dir` (e.g. another distilled corpus).
    #[arg(long)]
    pub train_dir: Option<PathBuf>,
    /// Override `teacher` (the run whose tokenizer the NAT uses).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Folder holding the run directories.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
}

/// Token rows (each ending in EOS) → `[batch, max_len]` padded with `pad`.
pub fn pad_rows(rows: &[&[u32]], pad: i64, device: Device) -> Tensor {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for row in rows {
        flat.extend(row.iter().map(|&t| t as i64));
        flat.extend(std::iter::repeat_n(pad, width - row.len()));
    }
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, width as i64])
        .to_device(device) // [batch, width]
}

/// Trains (or resumes) a NAT; returns the run directory. A plain-NAT config
/// (no latents) trains the plain NAT baseline, in the same loop.
pub fn train(args: &TrainArgs) -> Result<PathBuf> {
    if crate::nat_run::config_file_kind(&args.config)? == crate::nat_run::RunKind::PlainNat {
        return crate::nat_run::train_plain(args);
    }
    train_loop::train::<NatConfig>(args)
}

/// The teacher's final weights (`model.safetensors`), else its best
/// checkpoint.
pub(crate) fn teacher_weights(teacher: &Path) -> Result<PathBuf> {
    let keeper = CheckpointKeeper::new(&teacher.join("checkpoints"), 1)?;
    [teacher.join(MODEL_FILE), keeper.best_path()]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "teacher run {} has no model.safetensors or best checkpoint",
                teacher.display()
            )
        })
}

/// A trained NAT ready to decode.
#[allow(dead_code)]
pub struct LoadedNat {
    pub config: NatRunConfig,
    pub tokenizer: SubwordTokenizer,
    pub model: LatentNat,
    #[allow(dead_code)]
    pub vs: VarStore,
    pub device: Device,
    pub weights: PathBuf,
}

/// Loads a NAT run: `model.safetensors` when training finished, else
/// `checkpoints/best.safetensors`, else the newest step checkpoint.
#[allow(dead_code)] // for the commands that decode NAT runs (translate, eval)
pub fn load_nat(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedNat> {
    let run = RunDir::open(run_dir)?;
    let config: NatRunConfig = run.load_config()?;
    set_threads(config.threads);
    load_nat_unthreaded(run_dir, device)
}

/// [`load_nat`] without setting LibTorch's thread counts (which can be set
/// only once per process, e.g. when a teacher was loaded first).
pub fn load_nat_unthreaded(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedNat> {
    let run = RunDir::open(run_dir)?;
    let config: NatRunConfig = run.load_config()?;
    let tokenizer = SubwordTokenizer::load(run_dir)?;
    let device = device.unwrap_or(config.device).resolve()?;
    let vs = VarStore::new(device);
    let model = LatentNat::new(vs.root(), &config.model)?;
    let weights = crate::teacher::run_steps::restore_run_weights(&run, &vs)?;
    Ok(LoadedNat {
        config,
        tokenizer,
        model,
        vs,
        device,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use emvq_tensor::load_toml;

    #[test]
    fn shipped_nat_configs_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in [
            "nat_em",
            "nat_vq",
            "nat_em_nc4",
            "nat_em_paper",
            "nat_em_lean",
            "nat_em_lean1",
            "nat_em_fast",
        ] {
            let path = root.join(format!("configs/multi30k/{file}.toml"));
            let config: NatRunConfig = load_toml(&path).unwrap();
            config
                .validate()
                .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
        let paper: NatRunConfig =
            load_toml(&root.join("configs/multi30k/nat_em_paper.toml")).unwrap();
        assert_eq!(paper.model.length.rule, emvq_latent::LengthRule::T2t);
        assert_eq!(paper.model.predictor_layers, paper.model.decoder_layers);
        assert_eq!(paper.model.bottleneck.bits, 12);
        assert!(!paper.init_predictor_from_teacher);
        assert!(!paper.decode.nat().collapse_repeats);
        let mut em: NatRunConfig = load_toml(&root.join("configs/multi30k/nat_em.toml")).unwrap();
        assert!(em.init_from_teacher && em.init_predictor_from_teacher);
        assert!(em.decode.nat().collapse_repeats);
        assert_eq!(em.model.schedule.predicted_latents, 0.5);
        assert_eq!(em.model.ctc_upsample, 2);
        assert_eq!(paper.model.ctc_upsample, 0);
        assert_eq!(paper.model.schedule.predicted_latents, 0.0);
        em.init_from_teacher = false;
        let err = format!("{:#}", em.validate().unwrap_err());
        assert!(err.contains("init_predictor_from_teacher"), "{err}");
    }
}
