//! Trained NAT runs as the evaluation commands (`translate`, `eval`,
//! `bench-latency`) see them: which kind of run a directory holds (the
//! autoregressive teacher, the latent-Transformer NAT of Roy et al. 2018,
//! arXiv 1805.11063, or the plain NAT baseline of Gu et al. 2018, arXiv
//! 1711.02281), the loaded model behind [`NatModel`] with its tokenizer,
//! teacher run and decoding settings, and translation of token ids: one pass
//! in batches, or one sentence at a time with `S` candidates rescored by the
//! teacher (`--rescore S`; for the plain NAT this is noisy parallel decoding
//! over the `S` best lengths).
//!
//! The kind is read from the run's `config.toml`: a NAT config names its
//! `teacher` run; a latent NAT's `[model]` has `compress_steps`, a plain
//! NAT's does not.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use emvq_bottleneck::BottleneckKind;
use emvq_data::{SubwordTokenizer, TranslationDataConfig, EOS_ID};
use emvq_latent::{rescore_by, LatentNat, NatDecode, NatModel, PlainNat, PlainNatConfig, Score};
use emvq_tensor::{DeviceSpec, RunDir};
use emvq_transformer::Seq2Seq;
use serde::Serialize;
use tch::{nn::VarStore, Device, Tensor};

mod train_plain;

pub use train_plain::train_plain;

use crate::nat::{pad_rows, NatRunConfig, NatRunConfigOf};
use crate::teacher::{LoadedTeacher, TeacherConfig};

/// What a run directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// The autoregressive Transformer (`runs/teacher/<name>`).
    Teacher,
    /// The latent-Transformer NAT (`emvq train-nat` with a latent config).
    LatentNat,
    /// The plain NAT without latents.
    PlainNat,
}

/// The kind of run in `run_dir`, from its `config.toml`.
pub fn run_kind(run_dir: &Path) -> Result<RunKind> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read the run's config (not a run directory?)",
            path.display()
        )
    })?;
    config_kind(&text).with_context(|| format!("{}", path.display()))
}

/// The kind of run a config file describes.
pub fn config_file_kind(path: &Path) -> Result<RunKind> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    config_kind(&text).with_context(|| format!("{}", path.display()))
}

/// The kind of run a config's text describes.
pub fn config_kind(text: &str) -> Result<RunKind> {
    let table: toml::Table = toml::from_str(text).context("not valid TOML")?;
    if !table.contains_key("teacher") {
        return Ok(RunKind::Teacher);
    }
    match table.get("model").and_then(toml::Value::as_table) {
        Some(model) if model.contains_key("compress_steps") => Ok(RunKind::LatentNat),
        Some(_) => Ok(RunKind::PlainNat),
        None => bail!("a NAT config (it names a `teacher`) without a [model] table"),
    }
}

/// A plain-NAT run's config (`configs/<dataset>/nat_plain*.toml`): the
/// latent NAT's keys with a [`PlainNatConfig`] as `[model]`.
pub type PlainRunConfig = NatRunConfigOf<PlainNatConfig>;

/// The network of a NAT run.
pub enum NatNet {
    Latent(Box<LatentNat>),
    Plain(Box<PlainNat>),
}

/// A trained NAT run ready to decode.
pub struct LoadedNatRun {
    pub kind: RunKind,
    pub name: String,
    pub tokenizer: SubwordTokenizer,
    pub net: NatNet,
    /// The model's variables (they own the weights).
    #[allow(dead_code)]
    pub vs: VarStore,
    pub device: Device,
    /// The weights file that was loaded.
    pub weights: PathBuf,
    /// The teacher run (tokenizer source, rescorer).
    pub teacher: PathBuf,
    pub data: TranslationDataConfig,
    pub decode: NatDecode,
    pub batch_sentences: usize,
    /// How the teacher ranks candidates in [`LoadedNatRun::translate_one`].
    pub rescore_score: Score,
    /// Bottleneck of a latent NAT: kind, bits, slices n_c.
    pub bottleneck: Option<(BottleneckKind, u32, i64)>,
    /// The output projection runs in bfloat16 (`[decode] bf16_output`).
    pub bf16_output: bool,
    max_positions: i64,
    pad_id: i64,
}

impl LoadedNatRun {
    /// Projects onto the vocabulary in bfloat16 (`on`) or float32
    /// ([`LatentNat::set_bf16_output`]); latent NAT runs only.
    pub fn set_bf16_output(&mut self, on: bool) -> Result<()> {
        match &mut self.net {
            NatNet::Latent(m) => m.set_bf16_output(on)?,
            NatNet::Plain(_) => ensure!(
                !on,
                "bf16_output applies to latent NAT runs; {} is a plain NAT",
                self.name
            ),
        }
        self.bf16_output = on;
        Ok(())
    }

    pub fn model(&self) -> &dyn NatModel {
        match &self.net {
            NatNet::Latent(m) => m.as_ref(),
            NatNet::Plain(m) => m.as_ref(),
        }
    }

    /// Trained on a distilled corpus (`[data] train_dir` set).
    pub fn distilled(&self) -> bool {
        self.data.train_dir.is_some()
    }

    /// `[1, len]` on the model's device: one sentence's ids (source or
    /// target, ending in EOS), cut to the model's `max_positions` with EOS
    /// kept.
    pub fn row_tensor(&self, ids: &[u32]) -> Tensor {
        let row = fit_row(ids, self.max_positions as usize);
        pad_rows(&[&row], self.pad_id, self.device)
    }

    /// One-pass translations of `sources` (ids ending in EOS) in batches of
    /// `batch` sentences of similar length; output ids without EOS, in input
    /// order.
    pub fn translate_ids(&self, sources: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<u32>>> {
        let shape = (self.max_positions, self.pad_id, self.device);
        translate_batched(self.model(), &self.decode, shape, sources, batch)
    }

    /// The translation of one source (ids ending in EOS): one pass, or with
    /// `rescore = Some((teacher, S))` the teacher's best of `S` candidates.
    pub fn translate_one(
        &self,
        source: &[u32],
        rescorer: Option<(&Seq2Seq, usize)>,
    ) -> Result<Vec<u32>> {
        let _guard = tch::no_grad_guard();
        let src = self.row_tensor(source); // [1, src_len]
        let tokens = match rescorer {
            None => self.model().translate(&src, &self.decode)?.swap_remove(0),
            Some((teacher, s)) => rescore_by(
                self.model(),
                teacher,
                &src,
                s,
                &self.decode,
                self.rescore_score,
            )?,
        };
        Ok(to_u32(tokens))
    }

    /// Autoencoding, a diagnostic upper bound of the latent predictor: the
    /// target (ids ending in EOS) compressed to its own latents, quantised,
    /// and decoded in one pass at its true length beside its source; output
    /// ids without EOS. A plain NAT has no latents: an error.
    pub fn reconstruct_one(&self, source: &[u32], target: &[u32]) -> Result<Vec<u32>> {
        let NatNet::Latent(model) = &self.net else {
            bail!(
                "run {} is a plain NAT: it has no latents to reconstruct from",
                self.name
            );
        };
        let src = self.row_tensor(source); // [1, src_len]
        let tgt = self.row_tensor(target); // [1, tgt_len]
        let mut rows = model.reconstruct(&src, &tgt)?;
        Ok(to_u32(rows.swap_remove(0)))
    }
}

/// `EM 2^8`, `VQ 2^12, n_c 4`, `semhash 2^8`; `—` without a bottleneck.
pub fn bottleneck_label(b: Option<(BottleneckKind, u32, i64)>) -> String {
    match b {
        None => "—".into(),
        Some((kind, bits, slices)) => {
            let name = match kind {
                BottleneckKind::Vq => "VQ",
                BottleneckKind::Em => "EM",
                BottleneckKind::Semhash => "semhash",
            };
            if slices > 1 {
                format!("{name} 2^{bits}, n_c {slices}")
            } else {
                format!("{name} 2^{bits}")
            }
        }
    }
}

/// One-pass translations of `sources` (ids ending in EOS; cut to
/// `max_positions` with EOS kept) by `model` in batches of `batch` sentences
/// of similar length, padded with `pad` on `device`; output ids without EOS,
/// in input order.
pub fn translate_batched(
    model: &dyn NatModel,
    decode: &NatDecode,
    (max_positions, pad, device): (i64, i64, Device),
    sources: &[Vec<u32>],
    batch: usize,
) -> Result<Vec<Vec<u32>>> {
    let _guard = tch::no_grad_guard();
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out = vec![Vec::new(); sources.len()];
    for chunk in order.chunks(batch.max(1)) {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| fit_row(&sources[i], max_positions as usize))
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let src = pad_rows(&refs, pad, device); // [batch, src_len]
        for (&i, tokens) in chunk.iter().zip(model.translate(&src, decode)?) {
            out[i] = to_u32(tokens);
        }
    }
    Ok(out)
}

/// The ids cut to `max_len` with EOS kept; an empty row becomes `[EOS]`.
fn fit_row(ids: &[u32], max_len: usize) -> Vec<u32> {
    let mut row = ids.to_vec();
    if row.len() > max_len {
        row.truncate(max_len - 1);
        row.push(EOS_ID);
    }
    if row.is_empty() {
        row.push(EOS_ID);
    }
    row
}

fn to_u32(tokens: Vec<i64>) -> Vec<u32> {
    tokens.into_iter().map(|t| t as u32).collect()
}

/// Sets LibTorch's thread counts from a run's config (0: keep LibTorch's);
/// the inter-op count only the first time (LibTorch refuses a second
/// setting), so several runs can be loaded in one process.
pub fn set_threads_once(threads: usize) {
    static INTEROP: std::sync::Once = std::sync::Once::new();
    if threads > 0 {
        tch::set_num_threads(threads as i32);
        INTEROP.call_once(|| tch::set_num_interop_threads(threads as i32));
    }
}

/// Loads a teacher run like `crate::teacher::load_teacher`, but sets the
/// threads with [`set_threads_once`] (a NAT and its teacher in one process).
pub fn load_teacher_run(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedTeacher> {
    let run = RunDir::open(run_dir)?;
    let config: TeacherConfig = run.load_config()?;
    set_threads_once(config.threads);
    let tokenizer = SubwordTokenizer::load(run_dir)?;
    let device = device.unwrap_or(config.device).resolve()?;
    let vs = VarStore::new(device);
    let model = Seq2Seq::new(vs.root(), &config.model)?;
    let weights = crate::teacher::run_steps::restore_run_weights(&run, &vs)?;
    Ok(LoadedTeacher {
        config,
        tokenizer,
        model,
        vs,
        device,
        weights,
    })
}

/// Loads a NAT run (latent or plain): `model.safetensors` when training
/// finished, else the best checkpoint, else the newest.
pub fn load_nat_run(run_dir: &Path, device: Option<DeviceSpec>) -> Result<LoadedNatRun> {
    match run_kind(run_dir)? {
        RunKind::Teacher => bail!("{} is a teacher run, not a NAT run", run_dir.display()),
        RunKind::LatentNat => {
            let run = RunDir::open(run_dir)?;
            let cfg: NatRunConfig = run.load_config()?;
            set_threads_once(cfg.threads);
            let tokenizer = SubwordTokenizer::load(run_dir)?;
            let device = device.unwrap_or(cfg.device).resolve()?;
            let vs = VarStore::new(device);
            let model = LatentNat::new(vs.root(), &cfg.model)?;
            let weights = crate::teacher::run_steps::restore_run_weights(&run, &vs)?;
            let m = &cfg.model;
            let bottleneck = (!m.bypass_bottleneck).then_some((
                m.bottleneck.kind,
                m.bottleneck.bits,
                m.bottleneck.slices,
            ));
            let bf16_output = cfg.decode.bf16_output;
            let mut loaded = LoadedNatRun {
                kind: RunKind::LatentNat,
                name: cfg.name.clone(),
                tokenizer,
                max_positions: m.max_positions,
                pad_id: m.pad_id,
                net: NatNet::Latent(Box::new(model)),
                vs,
                device,
                weights,
                teacher: cfg.teacher.clone(),
                decode: cfg.decode.nat(),
                batch_sentences: cfg.decode.batch_sentences,
                rescore_score: cfg.decode.rescore_score,
                data: cfg.data,
                bottleneck,
                bf16_output: false,
            };
            loaded.set_bf16_output(bf16_output)?;
            Ok(loaded)
        }
        RunKind::PlainNat => {
            let run = RunDir::open(run_dir)?;
            let cfg: PlainRunConfig = run.load_config()?;
            set_threads_once(cfg.threads);
            let tokenizer = SubwordTokenizer::load(run_dir)?;
            let device = device.unwrap_or(cfg.device).resolve()?;
            let vs = VarStore::new(device);
            let model = PlainNat::new(vs.root(), &cfg.model)?;
            let weights = crate::teacher::run_steps::restore_run_weights(&run, &vs)?;
            let bf16_output = cfg.decode.bf16_output;
            let mut loaded = LoadedNatRun {
                kind: RunKind::PlainNat,
                name: cfg.name.clone(),
                tokenizer,
                max_positions: cfg.model.max_positions,
                pad_id: cfg.model.pad_id,
                net: NatNet::Plain(Box::new(model)),
                vs,
                device,
                weights,
                teacher: cfg.teacher.clone(),
                decode: cfg.decode.nat(),
                batch_sentences: cfg.decode.batch_sentences,
                rescore_score: cfg.decode.rescore_score,
                data: cfg.data,
                bottleneck: None,
                bf16_output: false,
            };
            loaded.set_bf16_output(bf16_output)?;
            Ok(loaded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_config_text() {
        assert_eq!(
            config_kind("name = \"t\"\n[model]\nd_model = 8\n").unwrap(),
            RunKind::Teacher
        );
        let nat = "teacher = \"runs/teacher/t\"\n[model]\nd_model = 8\n";
        assert_eq!(config_kind(nat).unwrap(), RunKind::PlainNat);
        let latent = "teacher = \"runs/teacher/t\"\n[model]\ncompress_steps = 3\n";
        assert_eq!(config_kind(latent).unwrap(), RunKind::LatentNat);
        assert!(config_kind("teacher = \"t\"\n").is_err());
        assert!(config_kind("teacher = ").is_err());
    }

    #[test]
    fn shipped_variant_configs_parse_and_validate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, distilled) in [
            ("nat_semhash", true),
            ("nat_em_raw", false),
            ("nat_vq_raw", false),
        ] {
            let path = root.join(format!("configs/multi30k/{file}.toml"));
            let config: crate::nat::NatRunConfig = emvq_tensor::load_toml(&path).unwrap();
            config
                .validate()
                .unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert_eq!(config.data.train_dir.is_some(), distilled, "{file}");
            assert_eq!(config_file_kind(&path).unwrap(), RunKind::LatentNat);
        }
    }

    #[test]
    fn bottleneck_labels() {
        assert_eq!(bottleneck_label(None), "—");
        assert_eq!(bottleneck_label(Some((BottleneckKind::Em, 8, 1))), "EM 2^8");
        assert_eq!(
            bottleneck_label(Some((BottleneckKind::Vq, 12, 4))),
            "VQ 2^12, n_c 4"
        );
    }

    #[test]
    fn rows_are_cut_with_eos_kept() {
        assert_eq!(fit_row(&[5, 6, 7, EOS_ID], 3), vec![5, 6, EOS_ID]);
        assert_eq!(fit_row(&[], 3), vec![EOS_ID]);
        assert_eq!(fit_row(&[5, EOS_ID], 3), vec![5, EOS_ID]);
    }
}
