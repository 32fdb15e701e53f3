//! Greedy and beam search for the teacher of Roy et al. 2018 (arXiv
//! 1805.11063), batched over sentences and run on the decoder's key/value
//! cache. Beam search ranks finished hypotheses by the GNMT length penalty
//! (Wu et al. 2016): `score / lp(Y)`, `lp(Y) = ((5 + |Y|) / 6)^α`, with
//! `|Y|` counting the EOS. Each sentence may produce at most
//! `⌊a·|x|⌋ + b` tokens (EOS included), `|x|` its unpadded source length;
//! a hypothesis cut there ends without EOS.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, TransformerError};
use crate::model::Seq2Seq;

/// Decoding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// 1 = greedy.
    pub beam_size: i64,
    /// GNMT length-penalty exponent α (0: raw log-probability).
    pub length_penalty: f64,
    /// Maximum output length `⌊a·|x|⌋ + b`: the `a`.
    pub max_len_a: f64,
    /// … and the `b`.
    pub max_len_b: i64,
}

/// One decoded sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Output tokens, without BOS and EOS.
    pub tokens: Vec<i64>,
    /// Sum of token log-probabilities (EOS included when generated).
    pub log_prob: f64,
    /// `log_prob / lp(Y)` (equal to `log_prob` for greedy search).
    pub score: f64,
}

/// The GNMT length penalty `((5 + len) / 6)^α`.
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// Per-sentence maximum output lengths from `src` `[batch, src_len]`.
fn max_lengths(model: &Seq2Seq, src: &Tensor, a: f64, b: i64) -> Result<Vec<usize>> {
    if src.dim() != 2 || src.kind() != Kind::Int64 {
        return Err(TransformerError::Input(format!(
            "source must be [batch, len] int64, got {:?} {:?}",
            src.size(),
            src.kind()
        )));
    }
    let lens = Vec::<i64>::try_from(src.f_ne(model.config().pad_id)?.f_sum_dim_intlist(
        1,
        false,
        Kind::Int64,
    )?)?;
    let limit = model.config().max_positions;
    Ok(lens
        .iter()
        .map(|&n| ((a * n as f64).floor() as i64 + b).clamp(1, limit) as usize)
        .collect())
}

/// Greedy decoding of a batch `src` `[batch, src_len]` (padded with
/// `pad_id`): the arg-max token at every step. Finished sentences leave the
/// batch (their rows are dropped from the cache).
pub fn greedy(
    model: &Seq2Seq,
    src: &Tensor,
    max_len_a: f64,
    max_len_b: i64,
) -> Result<Vec<Hypothesis>> {
    let _guard = tch::no_grad_guard();
    let cfg = model.config();
    let max_lens = max_lengths(model, src, max_len_a, max_len_b)?;
    let batch = max_lens.len();
    let device = src.device();
    let enc = model.encode(src, false)?;
    let mut cache = model.start_decoding(&enc)?;
    let mut input = Tensor::f_full([batch as i64, 1], cfg.bos_id, (Kind::Int64, device))?;
    let empty = Hypothesis {
        tokens: vec![],
        log_prob: 0.0,
        score: 0.0,
    };
    let mut hyps = vec![empty; batch];
    let mut active: Vec<usize> = (0..batch).collect(); // sentence of each row
    for t in 0..max_lens.iter().copied().max().unwrap_or(0) {
        let logits = model.decode_step(&input, &mut cache)?.f_squeeze_dim(1)?; // [rows, vocab]
        let (best, next) = logits
            .f_log_softmax(-1, Kind::Float)?
            .f_max_dim(-1, false)?; // [rows] each
        let best = Vec::<f32>::try_from(&best)?;
        let next_host = Vec::<i64>::try_from(&next)?;
        let mut keep = Vec::with_capacity(active.len()); // rows still decoding
        for (row, &i) in active.iter().enumerate() {
            hyps[i].log_prob += best[row] as f64;
            if next_host[row] != cfg.eos_id {
                hyps[i].tokens.push(next_host[row]);
                if t + 1 < max_lens[i] {
                    keep.push(row as i64);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            let index = Tensor::from_slice(&keep).to_device(device);
            cache.select(&index)?;
            input = next.f_index_select(0, &index)?.f_unsqueeze(1)?;
            active = keep.iter().map(|&r| active[r as usize]).collect();
        } else {
            input = next.f_unsqueeze(1)?;
        }
    }
    for h in &mut hyps {
        h.score = h.log_prob;
    }
    Ok(hyps)
}

/// An unfinished beam entry of one sentence.
#[derive(Debug, Clone)]
struct Alive {
    tokens: Vec<i64>,
    log_prob: f64,
}

/// Beam search over a batch `src` `[batch, src_len]`; returns each
/// sentence's finished hypotheses, best first (at least one per sentence).
/// With `beam_size` 1 and `length_penalty` 0 this is greedy search (with
/// α > 0 a single beam may look past an EOS for a better normalised score).
/// Finished sentences leave the batch.
pub fn beam_search(
    model: &Seq2Seq,
    src: &Tensor,
    cfg: &SearchConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    let _guard = tch::no_grad_guard();
    let k = cfg.beam_size;
    if k < 1 {
        return Err(TransformerError::Config(format!(
            "beam_size must be at least 1, got {k}"
        )));
    }
    let (eos, bos, alpha) = (
        model.config().eos_id,
        model.config().bos_id,
        cfg.length_penalty,
    );
    let max_lens = max_lengths(model, src, cfg.max_len_a, cfg.max_len_b)?;
    let batch = max_lens.len();
    let ku = k as usize;
    let device = src.device();
    let enc = model.encode(src, false)?.repeat_interleave(k)?;
    let mut cache = model.start_decoding(&enc)?;
    let mut input = Tensor::f_full([batch as i64 * k, 1], bos, (Kind::Int64, device))?;
    // Block i of k rows holds the beams of sentence active[i]; beam j of it is
    // row i·k + j. At the start only beam 0 is live.
    let mut active: Vec<usize> = (0..batch).collect();
    let start = Alive {
        tokens: vec![],
        log_prob: 0.0,
    };
    let mut alive: Vec<Vec<Alive>> = vec![vec![start]; batch];
    let mut finished: Vec<Vec<Hypothesis>> = vec![vec![]; batch];
    let finish = |a: Alive| {
        let score = a.log_prob / length_penalty(a.tokens.len(), alpha);
        Hypothesis {
            tokens: a.tokens,
            log_prob: a.log_prob,
            score,
        }
    };
    for t in 0..max_lens.iter().copied().max().unwrap_or(0) {
        let blocks = active.len() as i64;
        let logits = model.decode_step(&input, &mut cache)?.f_squeeze_dim(1)?; // [blocks·k, vocab]
        let vocab = logits.size()[1];
        // Beam scores, −∞ for rows that hold no live hypothesis.
        let mut prev = vec![f32::NEG_INFINITY; active.len() * ku];
        for (i, &b) in active.iter().enumerate() {
            for (j, a) in alive[b].iter().enumerate() {
                prev[i * ku + j] = a.log_prob as f32;
            }
        }
        let prev = Tensor::from_slice(&prev)
            .to_device(device)
            .f_view([blocks * k, 1])?;
        let cand = logits
            .f_log_softmax(-1, Kind::Float)?
            .f_add(&prev)?
            .f_view([blocks, k * vocab])?;
        let (top_scores, top_idx) = cand.f_topk((2 * k).min(k * vocab), -1, true, true)?; // [blocks, 2k]
        let top_scores = Vec::<Vec<f32>>::try_from(&top_scores)?;
        let top_idx = Vec::<Vec<i64>>::try_from(&top_idx)?;

        let mut rows = Vec::with_capacity(active.len() * ku); // parent row of each next row
        let mut next = Vec::with_capacity(active.len() * ku); // token fed to each next row
        let mut still_active = Vec::with_capacity(active.len());
        for (i, &b) in active.iter().enumerate() {
            let mut new_alive = Vec::with_capacity(ku);
            let mut parents = Vec::with_capacity(ku);
            for (rank, (&score, &idx)) in top_scores[i].iter().zip(&top_idx[i]).enumerate() {
                if !score.is_finite() || new_alive.len() == ku {
                    continue;
                }
                let (beam, tok) = ((idx / vocab) as usize, idx % vocab);
                let parent = &alive[b][beam];
                if tok == eos {
                    // EOS counts only among the k best, so k = 1 is greedy.
                    if rank < ku {
                        let lp = length_penalty(parent.tokens.len() + 1, alpha);
                        let log_prob = score as f64;
                        let tokens = parent.tokens.clone();
                        finished[b].push(Hypothesis {
                            tokens,
                            log_prob,
                            score: log_prob / lp,
                        });
                    }
                    continue;
                }
                let mut tokens = parent.tokens.clone();
                tokens.push(tok);
                new_alive.push(Alive {
                    tokens,
                    log_prob: score as f64,
                });
                parents.push(i as i64 * k + beam as i64);
            }
            if t + 1 >= max_lens[b] {
                // Out of length: the live beams end here, without EOS.
                finished[b].extend(new_alive.drain(..).map(finish));
            } else if !sentence_done(&finished[b], &new_alive, ku, max_lens[b], alpha) {
                next.extend(
                    new_alive
                        .iter()
                        .map(|a| *a.tokens.last().expect("one token")),
                );
                rows.extend(&parents);
                // Pad the block to k rows with dead copies of its first row.
                next.resize(rows.len() + ku - parents.len(), eos);
                rows.resize(rows.len() + ku - parents.len(), i as i64 * k);
                still_active.push(b);
            }
            alive[b] = new_alive;
        }
        if still_active.is_empty() {
            break;
        }
        let rows = Tensor::from_slice(&rows).to_device(device);
        if still_active.len() < active.len() {
            cache.select(&rows)?;
        } else {
            cache.reorder_beams(&rows)?;
        }
        for &b in active.iter().filter(|b| !still_active.contains(b)) {
            alive[b].clear();
        }
        active = still_active;
        input = Tensor::from_slice(&next).to_device(device).f_unsqueeze(1)?;
    }
    for (b, hyps) in finished.iter_mut().enumerate() {
        // Defensive: a sentence that never finished keeps its live beams.
        hyps.extend(alive[b].drain(..).map(finish));
        hyps.sort_by(|x, y| y.score.total_cmp(&x.score));
    }
    Ok(finished)
}

/// A sentence is done when no live beam can still enter its `k` best
/// finished hypotheses (T2T's stopping rule): the best live log-probability
/// under the most favourable length penalty (that of the maximum length;
/// log-probabilities only fall as a hypothesis grows) is below the `k`-th
/// best finished score. With α = 0 and `k` = 1 this is greedy's stop at the
/// first arg-max EOS.
fn sentence_done(
    finished: &[Hypothesis],
    alive: &[Alive],
    k: usize,
    max_len: usize,
    alpha: f64,
) -> bool {
    if alive.is_empty() {
        return true;
    }
    if finished.len() < k {
        return false;
    }
    let mut scores: Vec<f64> = finished.iter().map(|h| h.score).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let best_alive = alive
        .iter()
        .map(|a| a.log_prob)
        .fold(f64::NEG_INFINITY, f64::max);
    best_alive / length_penalty(max_len, alpha) < scores[k - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_config;
    use tch::{nn, Device};

    fn model(seed: i64) -> (nn::VarStore, Seq2Seq) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Seq2Seq::new(vs.root(), &tiny_config(12)).unwrap();
        (vs, m)
    }

    fn sources() -> Tensor {
        Tensor::from_slice2(&[
            [5i64, 6, 7, 2, 0, 0],
            [8, 9, 10, 11, 4, 2],
            [3, 2, 0, 0, 0, 0],
        ])
    }

    #[test]
    fn beam_of_one_equals_greedy() {
        for seed in 0..4 {
            let (_vs, m) = model(seed);
            let greedy = greedy(&m, &sources(), 1.5, 3).unwrap();
            let cfg = SearchConfig {
                beam_size: 1,
                length_penalty: 0.6,
                max_len_a: 1.5,
                max_len_b: 3,
            };
            let beam = beam_search(&m, &sources(), &cfg).unwrap();
            for (g, b) in greedy.iter().zip(&beam) {
                assert_eq!(g.tokens, b[0].tokens, "seed {seed}");
                assert!((g.log_prob - b[0].log_prob).abs() < 1e-4);
            }
        }
    }

    /// The greedy output scored by a teacher-forced forward pass has the
    /// log-probability greedy reported, and respects the length limit.
    /// Log-probability of `tokens` (+ EOS when `ended`) for source row `i`,
    /// by a teacher-forced forward pass.
    fn forward_log_prob(m: &Seq2Seq, src: &Tensor, i: usize, tokens: &[i64], ended: bool) -> f64 {
        let mut tgt = tokens.to_vec();
        if ended {
            tgt.push(2);
        }
        let tgt = Tensor::from_slice(&tgt).unsqueeze(0);
        let tgt_in = crate::model::shift_right(&tgt, 1).unwrap();
        let lp = m
            .forward(&src.narrow(0, i as i64, 1), &tgt_in, false)
            .unwrap()
            .log_softmax(-1, Kind::Float);
        lp.gather(-1, &tgt.unsqueeze(-1), false)
            .sum(Kind::Float)
            .double_value(&[])
    }

    /// Greedy and beam outputs, scored by a teacher-forced forward pass, have
    /// the log-probabilities the searches reported (so the cache, its beam
    /// reordering and the batch shrinking are right), and respect the
    /// length limit.
    #[test]
    fn search_scores_match_a_forward_pass_and_lengths_are_bounded() {
        let (_vs, m) = model(7);
        let src = sources();
        let max_lens = [6usize, 8, 4]; // source lengths 4, 6, 2; a = 1, b = 2
        let hyps = greedy(&m, &src, 1.0, 2).unwrap();
        for (i, h) in hyps.iter().enumerate() {
            assert!(h.tokens.len() <= max_lens[i]);
            let expected = forward_log_prob(&m, &src, i, &h.tokens, h.tokens.len() < max_lens[i]);
            assert!(
                (expected - h.log_prob).abs() < 1e-4,
                "{expected} vs {}",
                h.log_prob
            );
        }
        let cfg = SearchConfig {
            beam_size: 3,
            length_penalty: 0.6,
            max_len_a: 1.0,
            max_len_b: 2,
        };
        for (i, nbest) in beam_search(&m, &src, &cfg).unwrap().iter().enumerate() {
            assert!(nbest.len() >= 3, "{nbest:?}");
            for h in nbest {
                assert!(h.tokens.len() <= max_lens[i]);
                let ended = h.tokens.len() < max_lens[i];
                let expected = forward_log_prob(&m, &src, i, &h.tokens, ended);
                assert!(
                    (expected - h.log_prob).abs() < 1e-4,
                    "{expected} vs {}",
                    h.log_prob
                );
                let len = h.tokens.len() + ended as usize;
                assert!((h.score - h.log_prob / length_penalty(len, 0.6)).abs() < 1e-9);
            }
        }
    }

    /// Wider beams never find a worse best hypothesis (α = 0 here, where
    /// the search objective is the plain log-probability), and sentences
    /// decoded alone or in a batch agree.
    #[test]
    fn wider_beams_score_at_least_as_well_and_batching_is_transparent() {
        let (_vs, m) = model(3);
        let src = sources();
        let cfg = |k| SearchConfig {
            beam_size: k,
            length_penalty: 0.0,
            max_len_a: 1.0,
            max_len_b: 3,
        };
        let b1 = beam_search(&m, &src, &cfg(1)).unwrap();
        let b4 = beam_search(&m, &src, &cfg(4)).unwrap();
        for (one, four) in b1.iter().zip(&b4) {
            assert!(four[0].score >= one[0].score - 1e-5);
            assert!(four.windows(2).all(|w| w[0].score >= w[1].score));
        }
        let g = greedy(&m, &src, 1.0, 3).unwrap();
        for i in 0..3 {
            let alone = beam_search(&m, &src.narrow(0, i, 1), &cfg(4)).unwrap();
            assert_eq!(alone[0][0].tokens, b4[i as usize][0].tokens);
            let alone = greedy(&m, &src.narrow(0, i, 1), 1.0, 3).unwrap();
            assert_eq!(alone[0].tokens, g[i as usize].tokens);
        }
    }

    #[test]
    fn length_penalty_is_gnmts() {
        assert_eq!(length_penalty(1, 0.6), 1.0);
        assert!((length_penalty(7, 1.0) - 2.0).abs() < 1e-12);
        assert_eq!(length_penalty(30, 0.0), 1.0);
    }
}
