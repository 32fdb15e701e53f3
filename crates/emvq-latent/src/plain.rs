//! The plain non-autoregressive Transformer, the "NAT" baseline rows of
//! Roy et al. 2018 ("Theory and Experiments on Vector Quantized
//! Autoencoders", arXiv 1805.11063, Table 3), after Gu et al. 2018
//! ("Non-Autoregressive Neural Machine Translation", arXiv 1711.02281) with
//! the fertilities replaced by a target-length predictor and uniform copy:
//!
//! - a Transformer encoder over the source;
//! - a target length `T` from the [`LengthPredictor`] (EOS included);
//! - decoder input: the uniform copy of the source embeddings — target
//!   position `i ∈ [0, T)` takes source token `⌊i·S/T⌋` of the `S` real
//!   (non-padding, EOS included) source tokens, embedded by the source
//!   embedding table (scaled, plus the sinusoid of target position `i`);
//! - a Transformer decoder with non-causal self-attention (only target
//!   padding masked) attending to the source, the output projection;
//! - loss: token cross-entropy over the real target tokens (EOS included;
//!   label smoothing optional) plus `length_loss_weight` × the length
//!   cross-entropy; training uses the gold length;
//! - translation: the predicted length, one pass, argmax, cut at the first EOS;
//!   noisy parallel decoding (NPD) decodes the `n` best lengths in one batch
//!   and lets the teacher pick ([`crate::rescore`]).
//!
//! Parameter names are those of [`emvq_transformer::Seq2Seq`] (`embed_tokens`
//! when tied, else `encoder.embed_tokens` and `output_projection`;
//! `encoder.layers.{i}`, `decoder.layers.{i}`, `encoder.norm`,
//! `decoder.norm`) plus `length_predictor`, so a teacher checkpoint of the
//! same sizes initialises every shared tensor by name. There is no
//! `decoder.embed_tokens`: the decoder never embeds target tokens.
//! Sources and targets are right-padded with `pad_id`.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::api::{NatDecode, NatLoss, NatModel};
use crate::error::{LatentError, Result};
use crate::length::{LengthConfig, LengthPredictor};
use emvq_tensor::mask::{length_mask, padding_mask};
use emvq_transformer::{
    label_smoothed_cross_entropy, Activation, Decoder, Embeddings, Encoder, Mask, TransformerConfig,
};

/// Configuration of a [`PlainNat`] (every key required in TOML; the sizes
/// mean what they mean in [`TransformerConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainNatConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    pub heads: i64,
    pub d_ff: i64,
    pub encoder_layers: i64,
    pub decoder_layers: i64,
    pub dropout: f64,
    pub attention_dropout: f64,
    pub relu_dropout: f64,
    pub prenorm: bool,
    pub tie_embeddings: bool,
    /// Longest source or target (decoded lengths are clamped to it).
    pub max_positions: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    /// Target length rule (`predicted` by default).
    pub length: LengthConfig,
    /// Label smoothing of the token cross-entropy, in `[0, 1)`.
    pub label_smoothing: f64,
    /// Weight of the length cross-entropy in the loss (≥ 0).
    pub length_loss_weight: f64,
}

impl PlainNatConfig {
    /// The NAT with the sizes, dropouts and token ids of a teacher, the
    /// predicted length (offsets ±20), no label smoothing, length weight 0.1.
    pub fn from_teacher(t: &TransformerConfig) -> Self {
        Self {
            vocab_size: t.vocab_size,
            d_model: t.d_model,
            heads: t.heads,
            d_ff: t.d_ff,
            encoder_layers: t.encoder_layers,
            decoder_layers: t.decoder_layers,
            dropout: t.dropout,
            attention_dropout: t.attention_dropout,
            relu_dropout: t.relu_dropout,
            prenorm: t.prenorm,
            tie_embeddings: t.tie_embeddings,
            max_positions: t.max_positions,
            layer_norm_eps: t.layer_norm_eps,
            activation: t.activation,
            pad_id: t.pad_id,
            bos_id: t.bos_id,
            eos_id: t.eos_id,
            length: LengthConfig::default(),
            label_smoothing: 0.0,
            length_loss_weight: 0.1,
        }
    }

    /// The Transformer part of this config.
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

    /// Checks sizes, token ids, the length rule and the loss weights.
    pub fn validate(&self) -> Result<()> {
        self.transformer().validate()?;
        self.length.validate()?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(LatentError::Config(format!(
                "label_smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if !(self.length_loss_weight.is_finite() && self.length_loss_weight >= 0.0) {
            return Err(LatentError::Config(format!(
                "length_loss_weight must be finite and ≥ 0, got {}",
                self.length_loss_weight
            )));
        }
        Ok(())
    }
}

/// Source index `⌊i·S/T⌋` for each target position `i ∈ [0, T)`: the uniform
/// copy of `S ≥ 1` source tokens onto `T ≥ 1` target positions (every index
/// in `[0, S)`, non-decreasing, the first position copies the first token).
pub fn uniform_copy_index(src_len: i64, tgt_len: i64) -> Vec<i64> {
    (0..tgt_len).map(|i| i * src_len / tgt_len).collect()
}

/// The source positions of the uniform copy, per row: `src_lens`,
/// `tgt_lens` `[batch]` → `[batch, width]` with [`uniform_copy_index`] over
/// each row's lengths (positions past `tgt_lens[i]` keep counting, capped
/// at the last source token).
pub(crate) fn uniform_copy_positions(
    src_lens: &Tensor,
    tgt_lens: &Tensor,
    width: i64,
) -> Result<Tensor> {
    let s = src_lens.f_clamp_min(1)?.f_unsqueeze(1)?; // [batch, 1]
    let t = tgt_lens.f_clamp_min(1)?.f_unsqueeze(1)?; // [batch, 1]
    let i = Tensor::f_arange(width, (Kind::Int64, src_lens.device()))?.f_unsqueeze(0)?; // [1, width]
    Ok(i.f_mul(&s)?
        .f_div_tensor_mode(&t, "floor")?
        .f_minimum(&s.f_sub_scalar(1)?)?) // [batch, width]
}

/// The decoder input ids of the uniform copy: `src` `[batch, src_len]`
/// (right-padded), `src_lens` `[batch]`, `tgt_lens` `[batch]` (≥ 1) →
/// (`[batch, width]` source ids copied per [`uniform_copy_index`], `pad_id`
/// past each row's length; `[batch, width]` target padding mask).
pub fn uniform_copy(
    src: &Tensor,
    src_lens: &Tensor,
    tgt_lens: &Tensor,
    width: i64,
    pad_id: i64,
) -> Result<(Tensor, Tensor)> {
    let index = uniform_copy_positions(src_lens, tgt_lens, width)?; // [batch, width]
    let tgt_pad = length_mask(tgt_lens, width); // [batch, width]
    let ids = src
        .f_gather(1, &index, false)?
        .f_masked_fill(&tgt_pad, pad_id)?;
    Ok((ids, tgt_pad))
}

/// Splits the packed tokens of consecutive rows of lengths `lens` and keeps
/// each row up to (not including) its first EOS.
fn cut_at_eos(packed: &[i64], lens: &[i64], eos_id: i64) -> Vec<Vec<i64>> {
    let mut rest = packed;
    lens.iter()
        .map(|&len| {
            let (row, tail) = rest.split_at((len as usize).min(rest.len()));
            rest = tail;
            row.iter().copied().take_while(|&t| t != eos_id).collect()
        })
        .collect()
}

/// An encoded source batch.
struct Encoded {
    /// `[batch, src_len]` token ids.
    ids: Tensor,
    /// `[batch, src_len, d_model]`
    memory: Tensor,
    /// `[batch, src_len]`, `true` at padding.
    pad: Tensor,
    /// `[batch]` real source lengths.
    lens: Tensor,
}

impl Encoded {
    /// Row `b` repeated `repeats[b]` times in a row (`repeats` `[batch]`).
    fn repeat_rows(&self, repeats: &Tensor) -> Result<Self> {
        let rep = |t: &Tensor| t.f_repeat_interleave_self_tensor(repeats, 0, None);
        Ok(Self {
            ids: rep(&self.ids)?,
            memory: rep(&self.memory)?,
            pad: rep(&self.pad)?,
            lens: rep(&self.lens)?,
        })
    }
}

/// The plain NAT (see the module doc).
#[derive(Debug)]
pub struct PlainNat {
    cfg: PlainNatConfig,
    src_embed: Embeddings,
    /// `[vocab, d_model]`; `None` when tied.
    output_projection: Option<Tensor>,
    encoder: Encoder,
    decoder: Decoder,
    length: LengthPredictor,
}

impl PlainNat {
    pub fn new(vs: nn::Path, cfg: &PlainNatConfig) -> Result<Self> {
        cfg.validate()?;
        let t = cfg.transformer();
        let emb = t.embedding();
        let (src_embed, output_projection) = if cfg.tie_embeddings {
            (Embeddings::new(&vs / "embed_tokens", &emb)?, None)
        } else {
            let bound = 1.0 / (cfg.d_model as f64).sqrt();
            (
                Embeddings::new(&vs / "encoder" / "embed_tokens", &emb)?,
                Some((&vs / "output_projection").f_uniform(
                    "weight",
                    &[cfg.vocab_size, cfg.d_model],
                    -bound,
                    bound,
                )?),
            )
        };
        Ok(Self {
            cfg: cfg.clone(),
            src_embed,
            output_projection,
            encoder: Encoder::new(&vs / "encoder", &t.encoder())?,
            decoder: Decoder::new(&vs / "decoder", &t.decoder())?,
            length: LengthPredictor::new(&vs / "length_predictor", cfg.d_model, &cfg.length)?,
        })
    }

    pub fn config(&self) -> &PlainNatConfig {
        &self.cfg
    }

    /// Decoder states `[…, d_model]` → logits `[…, vocab_size]`.
    fn project(&self, h: &Tensor) -> Result<Tensor> {
        Ok(match &self.output_projection {
            Some(w) => h.f_linear::<&Tensor>(w, None)?,
            None => self.src_embed.project(h)?,
        })
    }

    /// Source `[batch, src_len]` → its encoding.
    fn encode(&self, src: &Tensor, train: bool) -> Result<Encoded> {
        if src.dim() != 2 || src.kind() != Kind::Int64 {
            return Err(LatentError::Shape(format!(
                "source must be [batch, len] int64, got {:?} {:?}",
                src.size(),
                src.kind()
            )));
        }
        let pad = padding_mask(src, self.cfg.pad_id); // [batch, src_len]
        let lens = pad
            .f_logical_not()?
            .f_sum_dim_intlist(1, false, Kind::Int64)?; // [batch]
        let x = self.src_embed.forward(src, 0, train)?; // [batch, src_len, d_model]
        let memory = self.encoder.forward(&x, &Mask::padding(&pad)?, train)?;
        Ok(Encoded {
            ids: src.shallow_clone(),
            memory,
            pad,
            lens,
        })
    }

    /// One decoder pass at the target lengths `tgt_lens` `[batch]` (≤ `width`)
    /// → decoder states `[batch, width, d_model]`.
    fn decode_hidden(
        &self,
        enc: &Encoded,
        tgt_lens: &Tensor,
        width: i64,
        train: bool,
    ) -> Result<Tensor> {
        let (ids, tgt_pad) = uniform_copy(&enc.ids, &enc.lens, tgt_lens, width, self.cfg.pad_id)?;
        let y = self.src_embed.forward(&ids, 0, train)?; // [batch, width, d_model]
        Ok(self.decoder.forward(
            &y,
            &Mask::padding(&tgt_pad)?,
            &enc.memory,
            &Mask::padding(&enc.pad)?,
            train,
        )?)
    }

    /// Decodes row `b` of the encoded batch at each length of `lengths[b]`
    /// (clamped to `[1, max_positions]`), all in one decoder pass → one
    /// output per length, rows in order.
    fn decode_encoded(&self, enc: Encoded, lengths: &[Vec<i64>]) -> Result<Vec<Vec<i64>>> {
        let batch = enc.ids.size()[0];
        if lengths.len() as i64 != batch || lengths.iter().any(Vec::is_empty) {
            return Err(LatentError::Shape(format!(
                "need one or more target lengths for each of {batch} sources, got {lengths:?}"
            )));
        }
        let flat: Vec<i64> = lengths
            .iter()
            .flatten()
            .map(|&l| l.clamp(1, self.cfg.max_positions))
            .collect();
        let device = enc.ids.device();
        let enc = if flat.len() as i64 == batch {
            enc
        } else {
            let per_row: Vec<i64> = lengths.iter().map(|l| l.len() as i64).collect();
            enc.repeat_rows(&Tensor::from_slice(&per_row).f_to_device(device)?)?
        };
        let tgt_lens = Tensor::from_slice(&flat).f_to_device(device)?; // [rows]
        let width = flat.iter().copied().max().unwrap_or(1);
        let h = self.decode_hidden(&enc, &tgt_lens, width, false)?; // [rows, width, d_model]
        let index = length_mask(&tgt_lens, width)
            .f_logical_not()?
            .f_flatten(0, -1)?
            .f_nonzero()?
            .f_squeeze_dim(1)?; // [Σ lengths]
                                // Only real positions go through the output projection.
        let h = h
            .f_reshape([-1, self.cfg.d_model])?
            .f_index_select(0, &index)?; // [Σ lengths, d_model]
        let tokens = self.project(&h)?.f_argmax(-1, false)?; // [Σ lengths]
        Ok(cut_at_eos(
            &Vec::<i64>::try_from(tokens)?,
            &flat,
            self.cfg.eos_id,
        ))
    }

    /// Encodes `src` once, then decodes each row at its `top_n` best lengths
    /// in one batch.
    fn decode_best(&self, src: &Tensor, top_n: usize) -> Result<Vec<Vec<i64>>> {
        tch::no_grad(|| {
            let enc = self.encode(src, false)?;
            let lengths = self
                .length
                .lengths(&enc.memory, &enc.pad, &enc.lens, top_n)?;
            self.decode_encoded(enc, &lengths)
        })
    }

    /// Decodes source row `b` (`src` `[batch, src_len]`) at each of the
    /// given target lengths `lengths[b]` (EOS included, clamped to
    /// `[1, max_positions]`) in one batch: one output per length, rows in
    /// order, each cut at its first EOS. E.g. decoding at the gold length.
    pub fn decode_lengths(&self, src: &Tensor, lengths: &[Vec<i64>]) -> Result<Vec<Vec<i64>>> {
        tch::no_grad(|| {
            let enc = self.encode(src, false)?;
            self.decode_encoded(enc, lengths)
        })
    }

    /// The `top_n` best target lengths (EOS included) of each source row.
    pub fn predict_lengths(&self, src: &Tensor, top_n: usize) -> Result<Vec<Vec<i64>>> {
        tch::no_grad(|| {
            let enc = self.encode(src, false)?;
            self.length.lengths(&enc.memory, &enc.pad, &enc.lens, top_n)
        })
    }
}

impl NatModel for PlainNat {
    fn loss(&self, src: &Tensor, tgt: &Tensor, _step: i64, train: bool) -> Result<NatLoss> {
        if tgt.dim() != 2 || tgt.size()[0] != src.size()[0] {
            return Err(LatentError::Shape(format!(
                "target {:?} does not match source {:?}",
                tgt.size(),
                src.size()
            )));
        }
        let enc = self.encode(src, train)?;
        let keep = tgt.f_ne(self.cfg.pad_id)?; // [batch, tgt_len]
        let tgt_lens = keep.f_sum_dim_intlist(1, false, Kind::Int64)?; // [batch]
        let h = self.decode_hidden(&enc, &tgt_lens, tgt.size()[1], train)?; // [batch, tgt_len, d_model]
                                                                            // Only real target positions go through the output projection.
        let index = keep.f_flatten(0, -1)?.f_nonzero()?.f_squeeze_dim(1)?; // [n]
        let h = h
            .f_reshape([-1, self.cfg.d_model])?
            .f_index_select(0, &index)?; // [n, d_model]
        let target = tgt.f_flatten(0, -1)?.f_index_select(0, &index)?; // [n]
        let out = label_smoothed_cross_entropy(
            &self.project(&h)?,
            &target,
            self.cfg.label_smoothing,
            self.cfg.pad_id,
        )?;
        let token_loss = out.loss();
        let length_ce = self
            .length
            .loss(&enc.memory, &enc.pad, &enc.lens, &tgt_lens)?;
        let total = token_loss.f_add(&length_ce.f_mul_scalar(self.cfg.length_loss_weight)?)?;
        Ok(NatLoss {
            total,
            tokens: out.tokens.double_value(&[]),
            metrics: vec![
                ("token_nll", out.nll().double_value(&[])),
                ("length_ce", length_ce.double_value(&[])),
            ],
        })
    }

    /// Greedy one-pass translation at the best predicted length. Of
    /// `settings` only `collapse_repeats` applies (no latents, nothing
    /// sampled).
    fn translate(&self, src: &Tensor, settings: &NatDecode) -> Result<Vec<Vec<i64>>> {
        Ok(settings.finish(self.decode_best(src, 1)?))
    }

    /// Noisy parallel decoding: the `n` best lengths of the single source,
    /// decoded in one batch (best length first). Of `settings` only
    /// `collapse_repeats` applies.
    fn candidates(&self, src: &Tensor, n: usize, settings: &NatDecode) -> Result<Vec<Vec<i64>>> {
        if src.dim() != 2 || src.size()[0] != 1 {
            return Err(LatentError::Shape(format!(
                "candidates take one source [1, len], got {:?}",
                src.size()
            )));
        }
        Ok(settings.finish(self.decode_best(src, n)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_are_split_and_cut_at_the_first_eos() {
        let packed = [5, 6, 2, 7, 8, 9, 2, 2, 4];
        assert_eq!(
            cut_at_eos(&packed, &[4, 2, 3], 2),
            vec![vec![5, 6], vec![8, 9], vec![]]
        );
        assert_eq!(cut_at_eos(&[3, 4], &[2], 2), vec![vec![3, 4]]);
    }

    #[test]
    fn uniform_copy_index_spreads_the_source_evenly() {
        assert_eq!(uniform_copy_index(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(uniform_copy_index(4, 2), vec![0, 2]);
        assert_eq!(uniform_copy_index(5, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(uniform_copy_index(3, 4), vec![0, 0, 1, 2]);
        assert_eq!(uniform_copy_index(7, 1), vec![0]);
        for s in 1..12 {
            for t in 1..30 {
                let idx = uniform_copy_index(s, t);
                assert_eq!(idx.len() as i64, t);
                assert_eq!(idx[0], 0);
                assert!(idx.windows(2).all(|w| w[0] <= w[1]));
                assert!(idx.iter().all(|&i| (0..s).contains(&i)));
                if t >= s {
                    // Every source token is copied at least once.
                    assert_eq!(*idx.last().unwrap(), s - 1, "S {s} T {t}");
                }
            }
        }
    }

    #[test]
    fn batched_uniform_copy_matches_the_index_rule_and_pads() {
        let src = Tensor::from_slice2(&[[11i64, 12, 13, 2], [21, 2, 0, 0]]);
        let src_lens = Tensor::from_slice(&[4i64, 2]);
        let tgt_lens = Tensor::from_slice(&[6i64, 3]);
        let (ids, pad) = uniform_copy(&src, &src_lens, &tgt_lens, 6, 0).unwrap();
        let ids = Vec::<Vec<i64>>::try_from(ids).unwrap();
        let row = |r: &[i64], s: i64, t: i64| -> Vec<i64> {
            uniform_copy_index(s, t)
                .iter()
                .map(|&i| r[i as usize])
                .collect()
        };
        assert_eq!(ids[0], row(&[11, 12, 13, 2], 4, 6));
        assert_eq!(ids[1][..3], row(&[21, 2], 2, 3)[..]);
        assert_eq!(ids[1][3..], [0, 0, 0]);
        assert_eq!(
            Vec::<Vec<bool>>::try_from(pad).unwrap()[1],
            vec![false, false, false, true, true, true]
        );
    }
}
