//! The latent-Transformer NAT of Roy, Vaswani, Neelakantan, Parmar (2018),
//! "Theory and Experiments on Vector Quantized Autoencoders" (arXiv
//! 1805.11063; tensor2tensor's `transformer_nat`), after Kaiser et al. (2018,
//! arXiv 1803.03382):
//!
//! ```text
//! source ─ embed ─ encoder ───────────────┬───────────────┬─────────────┐
//! target ─ embed ─ compressor ─ bottleneck ─ codes ─ latent predictor   │
//!                                  │  (train: CE vs the codes' targets) │
//!                                  └─ decompressor ─ (+ gold mix) ─ decoder (one pass) ─ softmax
//! ```
//!
//! Training compresses the gold target (n positions, a multiple of 2^k) into
//! n/2^k latent vectors, quantises them, decompresses and decodes all
//! positions at once attending to the source (non-causal self-attention);
//! the latent predictor learns the codes autoregressively from the source.
//! Loss = token CE over real target tokens (EOS included) + the bottleneck's
//! commitment (β) + latent CE (after `latent_loss_start`) + the length CE
//! (rule `predicted`). The decoder's gold inputs come from T2T's random
//! mixing curriculum or, beyond the paper, from glancing (GLAT, Qian et al.
//! 2021): a first pass without gradients, then ⌈ratio · wrong⌉ gold inputs
//! per sentence and the token loss on the other positions.
//! With `ctc_upsample = r` (beyond the paper) the decoder runs on r× the
//! target positions and is trained with CTC; the glance then reveals
//! tokens of the best CTC alignment ([`ctc_best_path`]).
//!
//! Inference: encode; target length by the rule (rounded up to 2^k); predict
//! ⌈len/2^k⌉ codes on a key/value cache (greedy or a beam over codes);
//! embed, decompress, decode every position in one pass, argmax, cut at EOS.
//!
//! Parameter names follow the teacher ([`emvq_transformer::Seq2Seq`]):
//! `embed_tokens` (tied) or `encoder.embed_tokens` / `decoder.embed_tokens` /
//! `output_projection`, `encoder.…`, `decoder.…`; plus `compress.…`,
//! `bottleneck.…`, `latent_predictor.…`, `decompress.…`, `length_predictor.…`.
//! [`init_from_teacher`] copies the tensors whose names and shapes match.

use tch::{nn, nn::VarStore, Kind, Tensor};

use crate::api::{NatDecode, NatLoss, NatModel};
use crate::compress::{Compressor, Decompressor};
use crate::config::NatConfig;
use crate::error::{LatentError, Result};
use crate::length::{LengthPredictor, LengthRule};
use crate::plain::uniform_copy_positions;
use crate::predictor::LatentPredictor;
use crate::timing::thread_cpu_seconds;
use emvq_bottleneck::{Bottleneck, BottleneckKind};
use emvq_tensor::mask::{length_mask, padding_mask};
use emvq_tensor::position::sinusoidal_positions;
use emvq_tensor::Checkpoint;
use emvq_transformer::{
    label_smoothed_cross_entropy, Decoder, Embeddings, Encoder, EncoderOutput, Mask,
};

/// What one inference call did (counts for tests; seconds of the calling
/// thread's CPU time, [`thread_cpu_seconds`], for benchmarks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeStats {
    /// Cached latent-predictor steps (one per latent position).
    pub latent_steps: i64,
    /// One-pass decoder runs.
    pub decoder_passes: i64,
    /// Target length per row (EOS included) before rounding up to 2^k.
    pub lengths: Vec<i64>,
    pub encode_seconds: f64,
    pub latent_seconds: f64,
    /// Embedding the codes, decompression, decoder pass and argmax.
    pub decode_seconds: f64,
}

/// The training outputs besides the loss: the batch's codes (for codebook
/// usage statistics), `[batch, L, n_c]`, and the soft targets (EM).
#[derive(Debug)]
pub struct LatentCodes {
    pub codes: Tensor,
    pub soft_targets: Option<Tensor>,
}

/// The token loss of either output (one token per position, or CTC):
/// the loss (per counted token), the counted tokens, its negative
/// log-likelihood and, with glancing, the share of glanced inputs.
struct TokenLoss {
    loss: Tensor,
    tokens: f64,
    nll: f64,
    glanced: Option<f64>,
}

/// What the decoder reads besides its gold inputs: latent vectors, their
/// counts per row, visible positions per row, positions shown, the source.
type DecoderInput<'a> = (
    &'a Tensor,
    Option<&'a Tensor>,
    Option<&'a Tensor>,
    i64,
    &'a EncoderOutput,
);

/// The latent Transformer NAT.
#[derive(Debug)]
pub struct LatentNat {
    cfg: NatConfig,
    src_embed: Embeddings,
    /// `None` when tied to `src_embed`.
    tgt_embed: Option<Embeddings>,
    /// `[vocab, d_model]`; `None` when tied.
    output_projection: Option<Tensor>,
    encoder: Encoder,
    compressor: Compressor,
    bottleneck: Bottleneck,
    predictor: LatentPredictor,
    decompressor: Decompressor,
    decoder: Decoder,
    length: LengthPredictor,
    positions: Tensor, // [max_positions, d_model], not a parameter
    /// A bfloat16 copy of the output projection `[vocab, d_model]` for
    /// inference ([`LatentNat::set_bf16_output`]); `None`: float32.
    output_bf16: Option<Tensor>,
}

impl LatentNat {
    pub fn new(vs: nn::Path, cfg: &NatConfig) -> Result<Self> {
        cfg.validate()?;
        let t = cfg.transformer();
        let emb = t.embedding();
        let (src_embed, tgt_embed, output_projection) = if cfg.tie_embeddings {
            (Embeddings::new(&vs / "embed_tokens", &emb)?, None, None)
        } else {
            let bound = 1.0 / (cfg.d_model as f64).sqrt();
            (
                Embeddings::new(&vs / "encoder" / "embed_tokens", &emb)?,
                Some(Embeddings::new(&vs / "decoder" / "embed_tokens", &emb)?),
                Some((&vs / "output_projection").f_uniform(
                    "weight",
                    &[cfg.vocab_size, cfg.d_model],
                    -bound,
                    bound,
                )?),
            )
        };
        let (d, eps) = (cfg.d_model, cfg.layer_norm_eps);
        let mut predictor_stack = t.decoder();
        predictor_stack.num_layers = cfg.predictor_layers;
        Ok(Self {
            cfg: cfg.clone(),
            src_embed,
            tgt_embed,
            output_projection,
            encoder: Encoder::new(&vs / "encoder", &t.encoder())?,
            compressor: Compressor::new(
                &vs / "compress",
                d,
                cfg.compress_steps,
                cfg.residual_blocks,
                cfg.dropout,
                eps,
            ),
            bottleneck: Bottleneck::new(&(&vs / "bottleneck"), d, &cfg.bottleneck)?,
            predictor: LatentPredictor::new(
                &vs / "latent_predictor",
                &predictor_stack,
                cfg.max_positions / cfg.block(),
                cfg.bottleneck.slices,
                cfg.bottleneck.codebook_size(),
            )?,
            decompressor: Decompressor::new(
                &vs / "decompress",
                d,
                cfg.compress_steps,
                cfg.decompress_blocks > 0,
                cfg.dropout,
                eps,
            ),
            decoder: Decoder::new(&vs / "decoder", &t.decoder())?,
            length: LengthPredictor::new(&vs / "length_predictor", d, &cfg.length)?,
            positions: sinusoidal_positions(cfg.max_positions * cfg.upsample(), d, 0, vs.device()),
            output_bf16: None,
        })
    }

    /// Inference only, once the weights are final (a load for decoding):
    /// with `on`, translations project the decoder states onto the
    /// vocabulary in bfloat16 from a copy of the output weights taken now
    /// (beyond the paper). On CPUs with AVX-512 BF16 the projection of the
    /// ~30 positions of a batch-1 decode runs ~2.7× faster than in float32;
    /// a one-row product (an autoregressive step) runs slower, so this is a
    /// NAT option. Logits lose precision (8 mantissa bits), which can flip
    /// near-ties of the argmax. Training and the loss always use float32.
    /// A copy taken before the weights change goes stale: call it again.
    pub fn set_bf16_output(&mut self, on: bool) -> Result<()> {
        self.output_bf16 = if on {
            let weight = self
                .output_projection
                .as_ref()
                .unwrap_or(self.src_embed.weight());
            Some(tch::no_grad(|| {
                weight.f_to_kind(Kind::BFloat16)?.f_contiguous()
            })?)
        } else {
            None
        };
        Ok(())
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    pub fn bottleneck(&self) -> &Bottleneck {
        &self.bottleneck
    }

    pub fn predictor(&self) -> &LatentPredictor {
        &self.predictor
    }

    fn tgt_embed(&self) -> &Embeddings {
        self.tgt_embed.as_ref().unwrap_or(&self.src_embed)
    }

    /// Decoder states `[…, d_model]` → logits `[…, vocab_size]`.
    fn project(&self, h: &Tensor) -> Result<Tensor> {
        match &self.output_projection {
            Some(w) => Ok(h.f_linear::<&Tensor>(w, None)?),
            None => Ok(self.src_embed.project(h)?),
        }
    }

    /// Source tokens `[batch, src_len]` → memory and padding.
    pub fn encode(&self, src: &Tensor, train: bool) -> Result<EncoderOutput> {
        let src_pad = padding_mask(src, self.cfg.pad_id); // [batch, src_len]
        let x = self.src_embed.forward(src, 0, train)?; // [batch, src_len, d_model]
        let memory = self.encoder.forward(&x, &Mask::padding(&src_pad)?, train)?;
        Ok(EncoderOutput { memory, src_pad })
    }

    /// Non-padding tokens per row: `[batch, len]` → `[batch]` int64.
    fn lengths_of(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(tokens
            .f_ne(self.cfg.pad_id)?
            .f_sum_dim_intlist(1, false, Kind::Int64)?)
    }

    /// `tokens` `[batch, len]` padded on the right to `n` positions.
    fn pad_to(&self, tokens: &Tensor, n: i64) -> Result<Tensor> {
        let (b, len) = tokens.size2()?;
        if n == len {
            return Ok(tokens.shallow_clone());
        }
        let pad = Tensor::f_full(
            [b, n - len],
            self.cfg.pad_id,
            (Kind::Int64, tokens.device()),
        )?;
        Ok(Tensor::f_cat(&[tokens, &pad], 1)?)
    }

    /// The decoder's self-attention mask over `n` positions of which each
    /// row sees its first `visible[i]` (`None`, or every row at least `n`:
    /// no mask).
    fn self_mask(&self, visible: Option<&Tensor>, n: i64) -> Result<Mask> {
        match visible {
            Some(v) if v.f_min()?.int64_value(&[]) < n => {
                Mask::padding(&length_mask(v, n)).map_err(Into::into)
            }
            _ => Ok(Mask::None),
        }
    }

    /// The encoder's output `[b, s, d]` copied uniformly onto each row's
    /// `visible[i]` positions of `n` (`None`: all `n`; see
    /// [`crate::plain::uniform_copy_index`]) → `[b, n, d]`.
    fn source_copy(&self, enc: &EncoderOutput, visible: Option<&Tensor>, n: i64) -> Result<Tensor> {
        let (b, _, d) = enc.memory.size3()?;
        let src_lens = enc
            .src_pad
            .f_logical_not()?
            .f_sum_dim_intlist(1, false, Kind::Int64)?; // [b]
        let tgt_lens = match visible {
            Some(v) => v.shallow_clone(),
            None => src_lens.f_full_like(n)?,
        }; // [b]
        let index = uniform_copy_positions(&src_lens, &tgt_lens, n)?
            .f_unsqueeze(2)?
            .f_expand([b, n, d], false)?; // [b, n, d]
        Ok(enc.memory.f_gather(1, &index, false)?)
    }

    /// Latent vectors `[b, L, d]` (each row's first `latents[i]` real;
    /// `None`: all) → decoder states `[b, shown, d]` of the first `shown` of
    /// the `r·2^k·L` decoder positions (r = [`NatConfig::upsample`]: each
    /// decompressed position repeated r times), each row showing its first `visible[i]`
    /// (`None`: all); in training, `gold` = (`y` `[b, ≥ shown, d]`, `use`
    /// `[b, shown, 1]` bool): the gold embedding replaces the decoder input
    /// where `use` is true.
    ///
    /// Positions past every row's length are never attended to, so leaving
    /// them out (`shown` = the longest row) changes no output and saves
    /// their share of the decoder (at batch 1 it runs on exactly the length).
    #[allow(clippy::too_many_arguments)]
    fn decode_latents(
        &self,
        z: &Tensor,
        latents: Option<&Tensor>,
        visible: Option<&Tensor>,
        shown: i64,
        enc: &EncoderOutput,
        gold: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<Tensor> {
        let dz = self.decompressor.forward(z, latents, train)?; // [b, n, d]
        let r = self.cfg.upsample();
        let dz = if r > 1 {
            dz.f_repeat_interleave_self_int(r, 1, None)? // [b, r·n, d]
        } else {
            dz
        };
        let n = dz.size3()?.1;
        if n > self.cfg.max_positions * r {
            return Err(LatentError::Shape(format!(
                "{} target positions exceed max_positions {}",
                n / r,
                self.cfg.max_positions
            )));
        }
        let pos = self.positions.f_narrow(0, 0, n)?; // [n, d]
        let mut x = dz.f_add(&pos)?; // [b, n, d]
        if self.cfg.source_copy {
            x = x.f_add(&self.source_copy(enc, visible, n)?)?;
        }
        let shown = shown.clamp(1, n);
        let mut x = x
            .f_narrow(1, 0, shown)?
            .f_dropout(self.cfg.dropout, train)?; // [b, shown, d]
        if let Some((y, use_gold)) = gold {
            x = y.f_narrow(1, 0, shown)?.f_where_self(use_gold, &x)?;
        }
        let self_mask = self.self_mask(visible, shown)?;
        Ok(self
            .decoder
            .forward(&x, &self_mask, &enc.memory, &enc.memory_mask()?, train)?)
    }

    /// Loss of a batch and its codes (for codebook statistics; `None` when
    /// the bottleneck is bypassed).
    pub fn loss_with_codes(
        &self,
        src: &Tensor,
        tgt: &Tensor,
        step: i64,
        train: bool,
    ) -> Result<(NatLoss, Option<LatentCodes>)> {
        let cfg = &self.cfg;
        let (_, t) = tgt.size2()?;
        let n = cfg.train_length(t, src.size2()?.1);
        if n > cfg.max_positions {
            return Err(LatentError::Shape(format!(
                "target padded to {n} positions exceeds max_positions {}",
                cfg.max_positions
            )));
        }
        let enc = self.encode(src, train)?;
        let tgt_lens = self.lengths_of(tgt)?; // [b]
        let src_lens = self.lengths_of(src)?; // [b]
        let tgt_p = self.pad_to(tgt, n)?; // [b, n]
        let y = self.tgt_embed().forward(&tgt_p, 0, train)?; // [b, n, d]
        let h = self.compressor.forward(&y, train)?; // [b, L, d]
        let zero = || Tensor::f_zeros([], (Kind::Float, src.device()));
        let (z, bottleneck_loss, commitment, codes) = if cfg.bypass_bottleneck {
            (h, zero()?, zero()?, None)
        } else {
            let out = self.bottleneck.forward(&h, train)?;
            let loss = out.loss();
            let codes = LatentCodes {
                codes: out.codes,
                soft_targets: out.soft_targets,
            };
            (out.quantized, loss, out.commitment_loss, Some(codes))
        };
        // The latent predictor's teacher-forced output over the codes.
        let latent_on = cfg.schedule.latent_loss_on(step);
        let latent_logits = match &codes {
            Some(c) if latent_on || !train => Some(self.latent_logits(c, &enc, train)?),
            _ => None,
        }; // [b, L, n_c, K]
        let sampled = cfg.schedule.predicted_latents;
        let (z, predicted_share) = match &latent_logits {
            Some(logits) if train && sampled > 0.0 => {
                let (mixed, share) = self.with_predicted_latents(&z, logits, sampled)?;
                (mixed, Some(share))
            }
            _ => (z, None),
        };
        let (visible, latents) = match cfg.length.rule {
            LengthRule::T2t => (None, None),
            _ => (Some(&tgt_lens), Some(self.latent_count(&tgt_lens)?)),
        };
        let p = if train {
            cfg.schedule.latent_mix(step)
        } else {
            1.0
        };
        // The t2t rule shows every padded position; the others the batch's
        // own width.
        let shown = if visible.is_some() { t } else { n };
        let tgt_p = tgt_p.f_narrow(1, 0, shown)?; // [b, shown]

        let tok = if cfg.ctc_upsample > 0 {
            self.ctc_loss(&z, latents.as_ref(), &tgt_lens, &tgt_p, &enc, train)?
        } else {
            let input = (&z, latents.as_ref(), visible, shown, &enc);
            self.position_loss(input, &y, &tgt_p, p, train)?
        };
        let latent_ce = match (&codes, &latent_logits) {
            (Some(c), Some(logits)) => Some(self.latent_loss(c, logits, &tgt_lens, n)?),
            _ => None,
        };
        let length_ce = self
            .length
            .loss(&enc.memory, &enc.src_pad, &src_lens, &tgt_lens)?;

        let mut total = tok.loss.f_add(&bottleneck_loss)?.f_add(&length_ce)?;
        if let (Some(l), true) = (&latent_ce, latent_on) {
            total = total.f_add(&l.f_mul_scalar(cfg.schedule.latent_loss_weight)?)?;
        }
        let mut metrics = vec![
            ("token_loss", tok.loss.double_value(&[])),
            ("token_nll", tok.nll),
            ("commitment", commitment.double_value(&[])),
            ("length_ce", length_ce.double_value(&[])),
            ("latent_mix", p),
        ];
        if let Some(l) = &latent_ce {
            metrics.push(("latent_ce", l.double_value(&[])));
        }
        if let Some(share) = tok.glanced {
            metrics.push(("glanced", share));
        }
        if let Some(share) = predicted_share {
            metrics.push(("predicted_latents", share));
        }
        Ok((
            NatLoss {
                total,
                tokens: tok.tokens,
                metrics,
            },
            codes,
        ))
    }

    /// The token loss of the one-token-per-position decoder over `shown`
    /// positions of `tgt_p` `[b, shown]` (gold embeddings `y` `[b, n, d]`):
    /// the decoder inputs that are gold come from the glance (a first pass
    /// without gradients; the loss then counts the other positions) or from
    /// T2T's mixing at latent share `p`.
    fn position_loss(
        &self,
        (z, latents, visible, shown, enc): DecoderInput,
        y: &Tensor,
        tgt_p: &Tensor,
        p: f64,
        train: bool,
    ) -> Result<TokenLoss> {
        let cfg = &self.cfg;
        let real = tgt_p.f_ne(cfg.pad_id)?; // [b, shown]
                                            // Which decoder inputs are gold embeddings, and which positions the
                                            // token loss counts.
        let glancing = train && cfg.schedule.glancing_ratio > 0.0;
        let (use_gold, counted) = if glancing {
            let first = tch::no_grad(|| -> Result<Tensor> {
                let h = self.decode_latents(z, latents, visible, shown, enc, None, train)?;
                Ok(self.project(&h)?.f_argmax(-1, false)?) // [b, shown]
            })?;
            let glanced = self.glance(&first, tgt_p, &real)?; // [b, shown]
            let rest = real.f_logical_and(&glanced.f_logical_not()?)?;
            // A batch glanced whole (one-token rows) still counts its tokens.
            let counted = if rest.f_any()?.int64_value(&[]) == 0 {
                real.shallow_clone()
            } else {
                rest
            };
            (Some(glanced), counted)
        } else if p < 1.0 {
            let use_gold = Tensor::f_rand(real.size(), (Kind::Float, real.device()))?.f_ge(p)?;
            (Some(use_gold), real.shallow_clone())
        } else {
            (None, real.shallow_clone())
        }; // [b, shown] each
        let glanced_share = match (&use_gold, glancing) {
            (Some(g), true) => Some(
                g.f_sum(Kind::Float)?.double_value(&[])
                    / real.f_sum(Kind::Float)?.double_value(&[]).max(1.0),
            ),
            _ => None,
        };
        let use_gold = use_gold.map(|g| g.f_unsqueeze(2)).transpose()?; // [b, shown, 1]
        let gold = use_gold.as_ref().map(|g| (y, g));
        let hidden = self.decode_latents(z, latents, visible, shown, enc, gold, train)?; // [b, shown, d]

        // Token loss over the counted target positions only.
        let keep = counted.f_flatten(0, -1)?.f_nonzero()?.f_squeeze_dim(1)?; // [m]
        let h = hidden
            .f_reshape([-1, cfg.d_model])?
            .f_index_select(0, &keep)?; // [m, d]
        let target = tgt_p.f_flatten(0, -1)?.f_index_select(0, &keep)?; // [m]
        let tok = label_smoothed_cross_entropy(
            &self.project(&h)?,
            &target,
            cfg.schedule.label_smoothing,
            cfg.pad_id,
        )?;
        Ok(TokenLoss {
            loss: tok.loss(),
            tokens: tok.tokens.double_value(&[]),
            nll: tok.nll().double_value(&[]),
            glanced: glanced_share,
        })
    }

    /// The token loss of the CTC decoder (summed over the batch, per target
    /// token), the batch's target tokens and the glanced share: the decoder
    /// runs on r·|y| positions per row; with glancing, a first pass without
    /// gradients gives each row's best CTC alignment, and ⌈ratio · wrong⌉ of
    /// its positions (argmax ≠ aligned label) get the aligned label's
    /// embedding (blank's included) as input.
    fn ctc_loss(
        &self,
        z: &Tensor,
        latents: Option<&Tensor>,
        tgt_lens: &Tensor,
        tgt_p: &Tensor,
        enc: &EncoderOutput,
        train: bool,
    ) -> Result<TokenLoss> {
        let cfg = &self.cfg;
        let r = cfg.upsample();
        let t = tgt_lens.f_max()?.int64_value(&[]);
        let targets = tgt_p.f_narrow(1, 0, t)?; // [b, t]
        let dec_lens = tgt_lens.f_mul_scalar(r)?; // [b]
        let m = r * t;
        let blank = cfg.bos_id;
        let glance = if train && cfg.schedule.glancing_ratio > 0.0 {
            let (first, aligned) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
                let h = self.decode_latents(z, latents, Some(&dec_lens), m, enc, None, train)?;
                let log_probs = self.project(&h)?.f_log_softmax(-1, Kind::Float)?; // [b, m, V]
                let aligned = ctc_best_alignment(&log_probs, &targets, &dec_lens, tgt_lens, blank)?;
                Ok((log_probs.f_argmax(-1, false)?, aligned)) // [b, m] each
            })?;
            let real = length_mask(&dec_lens, m).f_logical_not()?; // [b, m]
            let glanced = self.glance(&first, &aligned, &real)?; // [b, m]
            let share = glanced.f_sum(Kind::Float)?.double_value(&[])
                / real.f_sum(Kind::Float)?.double_value(&[]).max(1.0);
            let y = self.tgt_embed().forward(&aligned, 0, train)?; // [b, m, d]
            Some((y, glanced.f_unsqueeze(2)?, share))
        } else {
            None
        };
        let gold = glance.as_ref().map(|(y, g, _)| (y, g));
        let hidden = self.decode_latents(z, latents, Some(&dec_lens), m, enc, gold, train)?; // [b, m, d]
        let log_probs = self
            .project(&hidden)?
            .f_log_softmax(-1, Kind::Float)?
            .f_transpose(0, 1)?; // [m, b, V]
        let summed = Tensor::f_ctc_loss_tensor(
            &log_probs,
            &targets,
            &dec_lens,
            tgt_lens,
            blank,
            tch::Reduction::Sum,
            true,
        )?;
        let tokens = tgt_lens.f_sum(Kind::Float)?.double_value(&[]);
        let loss = summed.f_div_scalar(tokens.max(1.0))?;
        Ok(TokenLoss {
            nll: loss.double_value(&[]),
            loss,
            tokens,
            glanced: glance.map(|(_, _, share)| share),
        })
    }

    /// GLAT's glance: per row, ⌈ratio · wrong⌉ of the `real` positions
    /// (`first` ≠ `target`), drawn uniformly → `[b, shown]` bool.
    fn glance(&self, first: &Tensor, target: &Tensor, real: &Tensor) -> Result<Tensor> {
        let wrong = first
            .f_ne_tensor(target)?
            .f_logical_and(real)?
            .f_sum_dim_intlist(1, false, Kind::Float)?; // [b]
        let count = wrong
            .f_mul_scalar(self.cfg.schedule.glancing_ratio)?
            .f_ceil()?
            .f_to_kind(Kind::Int64)?; // [b]

        // Random keys, padding last: a row's `count` smallest keys are its
        // glanced positions.
        let keys = Tensor::f_rand(real.size(), (Kind::Float, real.device()))?
            .f_masked_fill(&real.f_logical_not()?, 2.0)?; // [b, shown]
        let (sorted, _) = keys.f_sort(1, false)?;
        let last = count.f_sub_scalar(1)?.f_clamp_min(0)?.f_unsqueeze(1)?; // [b, 1]
        let threshold = sorted.f_gather(1, &last, false)?; // [b, 1]
        Ok(keys
            .f_le_tensor(&threshold)?
            .f_logical_and(&count.f_gt(0)?.f_unsqueeze(1)?)?
            .f_logical_and(real)?)
    }

    /// The latent predictor's output over the codes, teacher-forced:
    /// `[b, L, n_c, K]` logits, position i reading the codes before i.
    fn latent_logits(
        &self,
        codes: &LatentCodes,
        enc: &EncoderOutput,
        train: bool,
    ) -> Result<Tensor> {
        let emb = self.bottleneck.embed_codes(&codes.codes)?.f_detach()?; // [b, L, d]
        self.predictor
            .forward(&emb, &enc.memory, &enc.memory_mask()?, train) // [b, L, n_c, K]
    }

    /// Latent scheduled sampling: rows drawn with probability `share` get
    /// the embeddings of the predictor's argmax codes in place of the
    /// quantized target latents `z` `[b, L, d]` (no gradient flows into the
    /// predictor or the codebook through them). Returns the mixed latents
    /// and the share of rows so replaced.
    fn with_predicted_latents(
        &self,
        z: &Tensor,
        logits: &Tensor,
        share: f64,
    ) -> Result<(Tensor, f64)> {
        let predicted = tch::no_grad(|| -> Result<Tensor> {
            let codes = logits.f_argmax(-1, false)?; // [b, L, n_c]
            Ok(self.bottleneck.embed_codes(&codes)?) // [b, L, d]
        })?;
        let b = z.size()[0];
        let rows = Tensor::f_rand([b], (Kind::Float, z.device()))?.f_lt(share)?; // [b]
        let replaced = rows.f_sum(Kind::Float)?.double_value(&[]) / b.max(1) as f64;
        let mixed = predicted.f_where_self(&rows.f_view([b, 1, 1])?, z)?; // [b, L, d]
        Ok((mixed, replaced))
    }

    /// Cross-entropy of the latent predictor's `logits` against the codes'
    /// targets (EM: soft; otherwise one-hot), mean over slices and over the
    /// latents that cover real target positions (all of them for the `t2t`
    /// rule).
    fn latent_loss(
        &self,
        codes: &LatentCodes,
        logits: &Tensor,
        tgt_lens: &Tensor,
        n: i64,
    ) -> Result<Tensor> {
        let k = self.bottleneck.codebook_size();
        let lp = logits.f_log_softmax(-1, Kind::Float)?;
        let target = match (&codes.soft_targets, self.cfg.bottleneck.kind) {
            (Some(r), BottleneckKind::Em) => r.f_detach()?,
            _ => codes.codes.f_one_hot(k)?.f_to_kind(Kind::Float)?,
        }; // [b, L, n_c, K]
        let ce = target
            .f_mul(&lp)?
            .f_sum_dim_intlist(-1, false, Kind::Float)?
            .f_neg()?
            .f_mean_dim(-1, false, Kind::Float)?; // [b, L]
        let l = n / self.cfg.block();
        let real = match self.cfg.length.rule {
            LengthRule::T2t => Tensor::f_ones([ce.size()[0], l], (Kind::Float, ce.device()))?,
            _ => length_mask(&self.latent_count(tgt_lens)?, l)
                .f_logical_not()?
                .f_to_kind(Kind::Float)?,
        }; // [b, L]
        Ok(ce
            .f_mul(&real)?
            .f_sum(Kind::Float)?
            .f_div(&real.f_sum(Kind::Float)?.f_clamp_min(1.0)?)?)
    }

    /// ⌈len/2^k⌉: the latents that cover `lens` `[b]` positions.
    fn latent_count(&self, lens: &Tensor) -> Result<Tensor> {
        let block = self.cfg.block();
        Ok(lens
            .f_add_scalar(block - 1)?
            .f_div_scalar_mode(block, "floor")?)
    }

    /// Target lengths (EOS included, at most `max_positions`) of each row.
    fn target_lengths(&self, enc: &EncoderOutput, src: &Tensor) -> Result<Vec<i64>> {
        let src_lens = self.lengths_of(src)?;
        let lens = self
            .length
            .lengths(&enc.memory, &enc.src_pad, &src_lens, 1)?;
        Ok(lens
            .into_iter()
            .map(|l| l[0].clamp(1, self.cfg.max_positions))
            .collect())
    }

    /// How many positions of row `i` the decoder shows: the length, rounded
    /// up to 2^k for the `t2t` rule (whose training pads and shows them).
    fn visible(&self, lens: &[i64]) -> Vec<i64> {
        lens.iter()
            .map(|&l| match self.cfg.length.rule {
                LengthRule::T2t => self.cfg.round_up(l),
                _ => l,
            })
            .collect()
    }

    fn require_latents(&self) -> Result<()> {
        if self.cfg.bypass_bottleneck {
            return Err(LatentError::Config(
                "bypass_bottleneck = true: there are no codes to predict (use reconstruct)".into(),
            ));
        }
        Ok(())
    }

    /// `codes` `[b, L, n_c]` → token ids per row: decompress, decode all
    /// positions in one pass, argmax, keep each row's `lens[i]` positions
    /// (with CTC its r·`lens[i]`, repeats merged and blanks dropped) and cut
    /// at the first EOS.
    /// With `refine` > 0, that many more passes follow (see
    /// [`NatDecode::refine_steps`]).
    pub fn decode_codes(
        &self,
        codes: &Tensor,
        enc: &EncoderOutput,
        lens: &[i64],
        refine: usize,
    ) -> Result<Vec<Vec<i64>>> {
        let z = self.bottleneck.embed_codes(codes)?; // [b, L, d]
        self.decode_vectors(&z, enc, lens, refine)
    }

    fn decode_vectors(
        &self,
        z: &Tensor,
        enc: &EncoderOutput,
        lens: &[i64],
        refine: usize,
    ) -> Result<Vec<Vec<i64>>> {
        let l = z.size()[1];
        let r = self.cfg.upsample();
        if r > 1 && refine > 0 {
            return Err(LatentError::Config(
                "refine_steps > 0 with ctc_upsample: refinement feeds tokens back by position, \
                 which a CTC output does not have"
                    .into(),
            ));
        }
        let (block, n) = (self.cfg.block(), l * self.cfg.block());
        let visible = self.visible(lens);
        // Rows whose latents all count (always at batch 1) need no
        // decompressor mask.
        let counts: Vec<i64> = visible.iter().map(|&v| (v + block - 1) / block).collect();
        let latents = if counts.iter().all(|&c| c >= l) {
            None
        } else {
            Some(Tensor::from_slice(&counts).f_to_device(z.device())?)
        };
        // The decoder runs on the positions some row shows (r per target
        // position with CTC).
        let shown = r * visible.iter().copied().max().unwrap_or(n).min(n);
        let clamped: Vec<i64> = visible.iter().map(|&v| r * v.min(n)).collect();
        let shown_lens = Tensor::from_slice(&clamped).f_to_device(z.device())?; // [b]
        let pass = |gold: Option<(&Tensor, &Tensor)>| -> Result<(Tensor, Tensor)> {
            let h = self.decode_latents(
                z,
                latents.as_ref(),
                Some(&shown_lens),
                shown,
                enc,
                gold,
                false,
            )?; // [b, shown, d]
            let logits = match &self.output_bf16 {
                Some(w) => h.f_to_kind(Kind::BFloat16)?.f_linear::<&Tensor>(w, None)?,
                None => self.project(&h)?,
            }; // [b, shown, V]
            let log_probs = logits.f_log_softmax(-1, Kind::Float)?; // [b, shown, V]
            Ok(log_probs.f_max_dim(-1, false)?) // ([b, shown], [b, shown])
        };
        let (mut confidence, mut ids) = pass(None)?;
        // Mask-predict's schedule over T = refine + 1 passes: pass t keeps the
        // t/T most confident predictions of each row as gold inputs (the
        // glance of training) and predicts the others again.
        let passes = refine + 1;
        for t in 1..passes {
            let keep = most_confident(&confidence, &shown_lens, t as f64 / passes as f64)?; // [b, shown]
            let y = self.tgt_embed().forward(&ids, 0, false)?; // [b, shown, d]
            let (c, i) = pass(Some((&y, &keep.f_unsqueeze(2)?)))?;
            ids = ids.f_where_self(&keep, &i)?;
            confidence = confidence.f_where_self(&keep, &c)?;
        }
        let rows = Vec::<Vec<i64>>::try_from(ids)?;
        let eos = self.cfg.eos_id;
        Ok(rows
            .into_iter()
            .zip(clamped)
            .map(|(row, v)| {
                let row = &row[..v as usize];
                let labels = if r > 1 {
                    ctc_collapse(row, self.cfg.bos_id)
                } else {
                    row.to_vec()
                };
                labels.into_iter().take_while(|&t| t != eos).collect()
            })
            .collect())
    }

    /// Autoencoding: the targets' own latents (quantised, or straight
    /// through when bypassed) decoded in one pass at the true lengths.
    pub fn reconstruct(&self, src: &Tensor, tgt: &Tensor) -> Result<Vec<Vec<i64>>> {
        tch::no_grad(|| {
            let enc = self.encode(src, false)?;
            let lens: Vec<i64> = Vec::try_from(self.lengths_of(tgt)?)?;
            let n = self.cfg.train_length(tgt.size2()?.1, src.size2()?.1);
            let y = self.tgt_embed().forward(&self.pad_to(tgt, n)?, 0, false)?; // [b, n, d]
            let h = self.compressor.forward(&y, false)?; // [b, L, d]
            let z = if self.cfg.bypass_bottleneck {
                h
            } else {
                self.bottleneck.forward(&h, false)?.quantized
            };
            self.decode_vectors(&z, &enc, &lens, 0)
        })
    }

    /// Greedy (or, with `sample = (temperature, seed)`, sampled) latent
    /// codes `[b, L, n_c]` on the predictor's cache; `steps` counts the
    /// cached steps. Sampling draws its own Gumbel noise from `seed`, so it
    /// repeats whatever else uses LibTorch's generator.
    fn predict_latents(
        &self,
        enc: &EncoderOutput,
        l: i64,
        sample: Option<(f64, u64)>,
        steps: &mut i64,
    ) -> Result<Tensor> {
        Ok(self
            .predict_latents_with_probs(enc, l, sample, false, steps)?
            .0)
    }

    /// [`Self::predict_latents`], and with `keep_probs` the predictor's
    /// distributions `[b, L, n_c, K]` too.
    fn predict_latents_with_probs(
        &self,
        enc: &EncoderOutput,
        l: i64,
        sample: Option<(f64, u64)>,
        keep_probs: bool,
        steps: &mut i64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let b = enc.memory.size()[0];
        let mut cache = self.predictor.start(&enc.memory, enc.memory_mask()?)?;
        let mut prev: Option<Tensor> = None;
        let mut out = Vec::with_capacity(l as usize);
        let mut probs = Vec::new();
        let mut rng = sample.map(|(_, seed)| SplitMix64(seed));
        for _ in 0..l {
            let logits = self.predictor.step(prev.as_ref(), &mut cache, b)?; // [b, n_c, K]
            *steps += 1;
            if keep_probs {
                probs.push(logits.f_softmax(-1, Kind::Float)?);
            }
            let codes = match (sample, rng.as_mut()) {
                (Some((t, _)), Some(rng)) => {
                    let size = logits.size();
                    let noise: Vec<f32> = (0..logits.numel()).map(|_| rng.gumbel()).collect();
                    let g = Tensor::from_slice(&noise)
                        .f_view(size.as_slice())?
                        .f_to_device(logits.device())?;
                    logits.f_div_scalar(t)?.f_add(&g)?.f_argmax(-1, false)? // [b, n_c]
                }
                _ => logits.f_argmax(-1, false)?, // [b, n_c]
            };
            prev = Some(self.bottleneck.embed_codes(&codes)?.f_unsqueeze(1)?); // [b, 1, d]
            out.push(codes);
        }
        let probs = match keep_probs {
            true => Some(Tensor::f_stack(&probs, 1)?), // [b, L, n_c, K]
            false => None,
        };
        Ok((Tensor::f_stack(&out, 1)?, probs)) // [b, L, n_c]
    }

    /// Beam search over latent codes: `beam` hypotheses per row, each step
    /// extended by the best joint choices over the n_c slices; rows stop
    /// scoring after their own ⌈len/2^k⌉ latents. Returns the best `[b, L, n_c]`.
    fn beam_latents(
        &self,
        enc: &EncoderOutput,
        l: i64,
        row_latents: &[i64],
        beam: i64,
        steps: &mut i64,
    ) -> Result<Tensor> {
        let b = enc.memory.size()[0];
        let (bb, s) = (b * beam, self.bottleneck.slices());
        let device = enc.memory.device();
        let rep = enc.repeat_interleave(beam)?;
        let mut cache = self.predictor.start(&rep.memory, rep.memory_mask()?)?;
        let init: Vec<f32> = (0..bb)
            .map(|i| if i % beam == 0 { 0.0 } else { -1e9 })
            .collect();
        let mut scores = Tensor::from_slice(&init).f_to_device(device)?; // [bB]
        let mut hist = Tensor::f_zeros([bb, 0, s], (Kind::Int64, device))?; // [bB, j, n_c]
        let rows: Vec<i64> = row_latents
            .iter()
            .flat_map(|&r| std::iter::repeat_n(r, beam as usize))
            .collect();
        let row_latents = Tensor::from_slice(&rows).f_to_device(device)?; // [bB]
        let base = Tensor::f_arange(b, (Kind::Int64, device))?
            .f_mul_scalar(beam)?
            .f_unsqueeze(1)?; // [b, 1]
        let mut prev: Option<Tensor> = None;
        for j in 0..l {
            let lp = self
                .predictor
                .step(prev.as_ref(), &mut cache, bb)?
                .f_log_softmax(-1, Kind::Float)?; // [bB, n_c, K]
            *steps += 1;
            // The best `beam` joint codes over the slices, slice by slice.
            let mut cs = Tensor::f_zeros([bb, 1], (Kind::Float, device))?; // [bB, C]
            let mut cc = Tensor::f_zeros([bb, 1, 0], (Kind::Int64, device))?; // [bB, C, n_c']
            for slice in 0..s {
                let lps = lp.f_select(1, slice)?; // [bB, K]
                let k = lps.size()[1];
                let tot = cs
                    .f_unsqueeze(2)?
                    .f_add(&lps.f_unsqueeze(1)?)?
                    .f_flatten(1, 2)?; // [bB, C·K]
                let keep = beam.min(tot.size()[1]);
                let (v, idx) = tot.f_topk(keep, -1, true, true)?; // [bB, C']
                let from = idx.f_div_scalar_mode(k, "floor")?;
                let code = idx.f_remainder(k)?;
                let gathered = cc.f_gather(
                    1,
                    &from.f_unsqueeze(2)?.f_expand([bb, keep, slice], false)?,
                    false,
                )?;
                cc = Tensor::f_cat(&[gathered, code.f_unsqueeze(2)?], 2)?; // [bB, C', slice+1]
                cs = v;
            }
            let c = cs.size()[1];
            // Rows past their latent length keep their hypotheses unchanged.
            let active = row_latents.f_gt(j)?.f_unsqueeze(1)?; // [bB, 1]
            let frozen: Vec<f32> = (0..c).map(|i| if i == 0 { 0.0 } else { -1e9 }).collect();
            let frozen = Tensor::from_slice(&frozen)
                .f_to_device(device)?
                .f_unsqueeze(0)?; // [1, C]
            let cs = cs.f_where_self(&active, &frozen)?; // [bB, C]
            let total = scores
                .f_unsqueeze(1)?
                .f_add(&cs)?
                .f_reshape([b, beam * c])?; // [b, B·C]
            let (top, idx) = total.f_topk(beam, -1, true, true)?; // [b, B]
            let src_beam = idx
                .f_div_scalar_mode(c, "floor")?
                .f_add(&base)?
                .f_flatten(0, 1)?; // [bB]
            let chosen = cc
                .f_reshape([b, beam * c, s])?
                .f_gather(
                    1,
                    &idx.f_unsqueeze(2)?.f_expand([b, beam, s], false)?,
                    false,
                )?
                .f_reshape([bb, s])?; // [bB, n_c]
            cache.reorder_beams(&src_beam)?;
            hist = Tensor::f_cat(
                &[hist.f_index_select(0, &src_beam)?, chosen.f_unsqueeze(1)?],
                1,
            )?;
            scores = top.f_flatten(0, 1)?;
            prev = Some(self.bottleneck.embed_codes(&chosen)?.f_unsqueeze(1)?); // [bB, 1, d]
        }
        // topk sorts, so each row's first hypothesis is its best.
        Ok(hist.f_reshape([b, beam, l, s])?.f_select(1, 0)?) // [b, L, n_c]
    }

    /// [`NatModel::translate`] with counts and timings.
    pub fn translate_with_stats(
        &self,
        src: &Tensor,
        settings: &NatDecode,
    ) -> Result<(Vec<Vec<i64>>, DecodeStats)> {
        self.translate_at_lengths(src, None, settings)
    }

    /// Translation at given target lengths per row (EOS included; `None`:
    /// the length rule's), e.g. the references' lengths to measure a model
    /// apart from its length rule.
    pub fn translate_at_lengths(
        &self,
        src: &Tensor,
        lengths: Option<&[i64]>,
        settings: &NatDecode,
    ) -> Result<(Vec<Vec<i64>>, DecodeStats)> {
        self.require_latents()?;
        tch::no_grad(|| {
            let mut stats = DecodeStats::default();
            let t0 = thread_cpu_seconds();
            let enc = self.encode(src, false)?;
            let lens = match lengths {
                Some(l) if l.len() as i64 == src.size2()?.0 => l
                    .iter()
                    .map(|&n| n.clamp(1, self.cfg.max_positions))
                    .collect(),
                Some(l) => {
                    return Err(LatentError::Shape(format!(
                        "{} lengths for {} source rows",
                        l.len(),
                        src.size2()?.0
                    )))
                }
                None => self.target_lengths(&enc, src)?,
            };
            let t1 = thread_cpu_seconds();
            let block = self.cfg.block();
            let row_latents: Vec<i64> = lens.iter().map(|&n| (n + block - 1) / block).collect();
            let l = row_latents.iter().copied().max().unwrap_or(1);
            let (codes, probs) = if settings.latent_beam > 1 {
                let beam = settings.latent_beam as i64;
                (
                    self.beam_latents(&enc, l, &row_latents, beam, &mut stats.latent_steps)?,
                    None,
                )
            } else {
                let soft = settings.soft_latents;
                self.predict_latents_with_probs(&enc, l, None, soft, &mut stats.latent_steps)?
            };
            let t2 = thread_cpu_seconds();
            let refine = settings.refine_steps;
            let z = match probs {
                Some(p) => self.bottleneck.embed_soft(&p)?,
                None => self.bottleneck.embed_codes(&codes)?,
            }; // [b, L, d]
            let out = self.decode_vectors(&z, &enc, &lens, refine)?;
            stats.decoder_passes += 1 + refine as i64;
            stats.encode_seconds = t1 - t0;
            stats.latent_seconds = t2 - t1;
            stats.decode_seconds = thread_cpu_seconds() - t2;
            stats.lengths = lens;
            Ok((settings.finish(out), stats))
        })
    }
}

impl NatModel for LatentNat {
    fn loss(&self, src: &Tensor, tgt: &Tensor, step: i64, train: bool) -> Result<NatLoss> {
        Ok(self.loss_with_codes(src, tgt, step, train)?.0)
    }

    fn translate(&self, src: &Tensor, settings: &NatDecode) -> Result<Vec<Vec<i64>>> {
        Ok(self.translate_with_stats(src, settings)?.0)
    }

    /// `n` sampled latent sequences (softmax temperature and seed from
    /// `settings`; Gumbel-max sampling) at the predicted length, decoded in
    /// one batch.
    fn candidates(&self, src: &Tensor, n: usize, settings: &NatDecode) -> Result<Vec<Vec<i64>>> {
        self.require_latents()?;
        if src.size2()?.0 != 1 || n == 0 {
            return Err(LatentError::Shape(format!(
                "candidates need one source row and n ≥ 1, got {:?} and n = {n}",
                src.size()
            )));
        }
        tch::no_grad(|| {
            let enc = self.encode(src, false)?;
            let len = self.target_lengths(&enc, src)?[0];
            let l = (len + self.cfg.block() - 1) / self.cfg.block();
            let rep = enc.repeat_interleave(n as i64)?;
            let mut steps = 0;
            let sample = Some((settings.temperature, settings.seed));
            let codes = self.predict_latents(&rep, l, sample, &mut steps)?;
            let refine = settings.refine_steps;
            Ok(settings.finish(self.decode_codes(&codes, &rep, &vec![len; n], refine)?))
        })
    }
}

/// A CTC output → its labels: neighbouring repeats merged, then blanks
/// dropped ("a a _ a b" → "a a b").
fn ctc_collapse(path: &[i64], blank: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(path.len());
    let mut previous = None;
    for &t in path {
        if Some(t) != previous && t != blank {
            out.push(t);
        }
        previous = Some(t);
    }
    out
}

/// Per row, the most probable CTC path (Viterbi) that collapses to its
/// target: `log_probs` `[b, m, V]`, `targets` `[b, S]` (each row's first
/// `target_lens[i]` real), each row's first `input_lens[i]` of the m
/// positions → `[b, m]` labels (blank past the row's input).
fn ctc_best_alignment(
    log_probs: &Tensor,
    targets: &Tensor,
    input_lens: &Tensor,
    target_lens: &Tensor,
    blank: i64,
) -> Result<Tensor> {
    let (b, m, _) = log_probs.size3()?;
    let s = targets.size2()?.1;
    let cpu = tch::Device::Cpu;
    let label_lp = log_probs
        .f_gather(
            2,
            &targets.f_unsqueeze(1)?.f_expand([b, m, s], false)?,
            false,
        )?
        .f_to_device(cpu)?
        .f_to_kind(Kind::Float)?; // [b, m, S]
    let blank_lp = log_probs
        .f_select(2, blank)?
        .f_to_device(cpu)?
        .f_to_kind(Kind::Float)?; // [b, m]
    let label_lp = Vec::<f32>::try_from(label_lp.f_flatten(0, -1)?)?;
    let blank_lp = Vec::<f32>::try_from(blank_lp.f_flatten(0, -1)?)?;
    let targets = Vec::<i64>::try_from(targets.f_to_device(cpu)?.f_flatten(0, -1)?)?;
    let input_lens = Vec::<i64>::try_from(input_lens.f_to_device(cpu)?)?;
    let target_lens = Vec::<i64>::try_from(target_lens.f_to_device(cpu)?)?;
    let (m, s) = (m as usize, s as usize);
    let mut paths = vec![blank; b as usize * m];
    for i in 0..b as usize {
        let (t_len, s_len) = (input_lens[i] as usize, target_lens[i] as usize);
        let labels = &targets[i * s..i * s + s_len];
        let rows: Vec<&[f32]> = (0..t_len)
            .map(|t| &label_lp[(i * m + t) * s..(i * m + t) * s + s_len])
            .collect();
        let path = ctc_best_path(&blank_lp[i * m..i * m + t_len], &rows, labels, blank);
        paths[i * m..i * m + t_len].copy_from_slice(&path);
    }
    Ok(Tensor::from_slice(&paths)
        .f_reshape([b, m as i64])?
        .f_to_device(log_probs.device())?)
}

/// Viterbi over CTC's extended labels (blank, y1, blank, y2, …, blank):
/// `blank_lp[t]` and `label_lp[t][j]` are the log-probabilities of blank
/// and of `labels[j]` at position t → the label of each position on the
/// most probable path that collapses to `labels`. Where none fits (fewer
/// positions than the labels and their repeats need), the path ends on the
/// best reachable state instead.
fn ctc_best_path(blank_lp: &[f32], label_lp: &[&[f32]], labels: &[i64], blank: i64) -> Vec<i64> {
    let t_len = blank_lp.len();
    if t_len == 0 {
        return Vec::new();
    }
    let states = 2 * labels.len() + 1;
    let label_of = |e: usize| {
        if e.is_multiple_of(2) {
            blank
        } else {
            labels[e / 2]
        }
    };
    let emit = |t: usize, e: usize| {
        if e.is_multiple_of(2) {
            blank_lp[t]
        } else {
            label_lp[t][e / 2]
        }
    };
    let mut score = vec![f32::NEG_INFINITY; states];
    let mut back = vec![0u8; t_len * states]; // states stepped back from
    score[0] = emit(0, 0);
    if states > 1 {
        score[1] = emit(0, 1);
    }
    for t in 1..t_len {
        let mut next = vec![f32::NEG_INFINITY; states];
        for e in 0..states {
            let (mut best, mut step) = (score[e], 0u8);
            if e >= 1 && score[e - 1] > best {
                (best, step) = (score[e - 1], 1);
            }
            // Skipping the blank between two labels, unless they are equal.
            if e >= 2 && e % 2 == 1 && labels[e / 2] != labels[e / 2 - 1] && score[e - 2] > best {
                (best, step) = (score[e - 2], 2);
            }
            next[e] = best + emit(t, e);
            back[t * states + e] = step;
        }
        score = next;
    }
    let mut e = (0..states)
        .rev()
        .take(2)
        .max_by(|&a, &b| score[a].total_cmp(&score[b]))
        .unwrap_or(0);
    if score[e] == f32::NEG_INFINITY {
        e = (0..states)
            .max_by(|&a, &b| score[a].total_cmp(&score[b]))
            .unwrap_or(0);
    }
    let mut path = vec![blank; t_len];
    for t in (0..t_len).rev() {
        path[t] = label_of(e);
        e -= back[t * states + e] as usize;
    }
    path
}

/// Per row, the `share` (rounded down) of its first `visible[i]` positions
/// whose `confidence` `[b, n]` is highest → `[b, n]` bool (ties at the
/// threshold all kept).
fn most_confident(confidence: &Tensor, visible: &Tensor, share: f64) -> Result<Tensor> {
    let n = confidence.size2()?.1;
    let shown = length_mask(visible, n).f_logical_not()?; // [b, n]
    let count = visible
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(share)?
        .f_floor()?
        .f_to_kind(Kind::Int64)?; // [b]
    let ranked = confidence.f_masked_fill(&shown.f_logical_not()?, f64::NEG_INFINITY)?; // [b, n]
    let (sorted, _) = ranked.f_sort(1, true)?;
    let last = count.f_sub_scalar(1)?.f_clamp_min(0)?.f_unsqueeze(1)?; // [b, 1]
    let threshold = sorted.f_gather(1, &last, false)?; // [b, 1]
    Ok(ranked
        .f_ge_tensor(&threshold)?
        .f_logical_and(&count.f_gt(0)?.f_unsqueeze(1)?)?
        .f_logical_and(&shown)?)
}

/// SplitMix64 (Steele et al. 2014): a small seeded generator for the
/// sampling noise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A standard Gumbel draw −ln(−ln u), u uniform in (0, 1).
    fn gumbel(&mut self) -> f32 {
        let u = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-(-u.ln()).ln()) as f32
    }
}

/// The teacher's decoder as the latent predictor's starting point: its
/// layers and final norm under the predictor's names (for
/// [`init_from_teacher`]; the code embeddings and output head have no
/// teacher counterpart).
pub const PREDICTOR_FROM_TEACHER_DECODER: [(&str, &str); 2] = [
    ("latent_predictor.layers.", "decoder.layers."),
    ("latent_predictor.norm.", "decoder.norm."),
];

/// Copies into `vs` every tensor of `teacher` whose name and shape match a
/// variable of `vs` (a teacher's embeddings, encoder and decoder layers into
/// a NAT); `renames` (NAT prefix, teacher prefix) also fills the variables
/// under a NAT prefix from the teacher's tensors under another (see
/// [`PREDICTOR_FROM_TEACHER_DECODER`]). Returns the names copied, sorted.
pub fn init_from_teacher(
    vs: &VarStore,
    teacher: &Checkpoint,
    renames: &[(&str, &str)],
) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let source = renames
                .iter()
                .find_map(|(nat, teacher)| {
                    name.strip_prefix(nat)
                        .map(|rest| format!("{teacher}{rest}"))
                })
                .unwrap_or_else(|| name.clone());
            if let Some(t) = teacher.tensors.get(&source) {
                if t.size() == var.size() {
                    var.f_copy_(&t.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
                    copied.push(name);
                }
            }
        }
        Ok(())
    })?;
    copied.sort();
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapse_merges_repeats_then_drops_blanks() {
        assert_eq!(ctc_collapse(&[5, 5, 1, 5, 6, 1, 1, 6], 1), vec![5, 5, 6, 6]);
        assert_eq!(ctc_collapse(&[1, 1], 1), Vec::<i64>::new());
    }

    #[test]
    fn ctc_best_path_is_the_best_path_that_collapses_to_the_labels() {
        // Every path of 5 positions over {blank 1, 3, 4}, scored against
        // made-up log-probabilities: the Viterbi path must be the best of
        // those that collapse to the labels (a repeat needs a blank between).
        let symbols = [1i64, 3, 4];
        let lp = |t: usize, v: i64| -(((t * 7 + v as usize * 13) % 11) as f32) / 3.0;
        for labels in [vec![3, 3, 4], vec![4], vec![3, 4, 3], vec![]] {
            let t_len = 5;
            let blank_lp: Vec<f32> = (0..t_len).map(|t| lp(t, 1)).collect();
            let rows: Vec<Vec<f32>> = (0..t_len)
                .map(|t| labels.iter().map(|&v| lp(t, v)).collect())
                .collect();
            let refs: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
            let path = ctc_best_path(&blank_lp, &refs, &labels, 1);
            assert_eq!(ctc_collapse(&path, 1), labels);
            let score = |p: &[i64]| p.iter().enumerate().map(|(t, &v)| lp(t, v)).sum::<f32>();
            let mut best = f32::NEG_INFINITY;
            for code in 0..3usize.pow(t_len as u32) {
                let p: Vec<i64> = (0..t_len)
                    .map(|t| symbols[code / 3usize.pow(t as u32) % 3])
                    .collect();
                if ctc_collapse(&p, 1) == labels {
                    best = best.max(score(&p));
                }
            }
            assert!((score(&path) - best).abs() < 1e-5, "{labels:?}: {path:?}");
        }
    }

    #[test]
    fn most_confident_keeps_each_rows_share_of_its_visible_positions() {
        let confidence = Tensor::from_slice(&[
            -0.1f32, -3.0, -0.5, -2.0, -0.01, // row 0: 5 visible
            -4.0, -0.2, -1.0, -0.3, -0.0, // row 1: 3 visible (the best one is past them)
        ])
        .view([2, 5]);
        let visible = Tensor::from_slice(&[5i64, 3]);
        let keep = |share: f64| -> Vec<Vec<bool>> {
            Vec::try_from(most_confident(&confidence, &visible, share).unwrap()).unwrap()
        };
        // ⌊0.5·5⌋ = 2 and ⌊0.5·3⌋ = 1 positions.
        assert_eq!(
            keep(0.5),
            vec![
                vec![true, false, false, false, true],
                vec![false, true, false, false, false]
            ]
        );
        // ⌊0.7·5⌋ = 3, ⌊0.7·3⌋ = 2.
        assert_eq!(
            keep(0.7),
            vec![
                vec![true, false, true, false, true],
                vec![false, true, true, false, false]
            ]
        );
        // A share too small for one position keeps none; a whole share
        // keeps every visible position and nothing past them.
        assert!(keep(0.1).iter().flatten().all(|&k| !k));
        assert_eq!(
            keep(1.0),
            vec![vec![true; 5], vec![true, true, true, false, false]]
        );
    }
}
