//! Token-count batching with length bucketing, deterministic shuffling and
//! mid-epoch resumption.
//!
//! Batch size is measured as fairseq does: a pair costs
//! `max(src_len, tgt_len)` tokens (EOS included) and a batch costs its
//! padded size `batch_len * max over its pairs of max(src_len, tgt_len)`,
//! which must not exceed `max_tokens`. Both padded buffers, source
//! `[batch, src_len]` and target `[batch, tgt_len]`, are therefore at most
//! `max_tokens` elements.
//!
//! Epoch `e` of seed `s` is planned as:
//! 1. a random permutation of the pairs (ChaCha8 seeded with `s`, stream `e`);
//! 2. a stable sort of it by pair length, so batches hold pairs of similar
//!    length (bucketing) while equal-length pairs mix differently each epoch;
//! 3. greedy cutting of that order into batches under `max_tokens`;
//! 4. a shuffle of the batch order with the same generator.
//!
//! The plan depends only on (seed, epoch), so a [`DataPosition`] saved in a
//! checkpoint resumes exactly where training stopped. Because the sorted
//! length sequence is the same every epoch, so is the number of batches.
//! With `shuffle = false` (evaluation) steps 1 and 4 are skipped and the
//! batches follow sorted length, ties in corpus order.

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::corpus::EncodedCorpus;
use crate::error::{DataError, Result};
use crate::tokenizer::PAD_ID;

/// Where a batch stream stands: the next batch it yields is batch
/// `batch_index` of epoch `epoch` (both 0-based). Save it with a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    pub batch_index: usize,
}

/// Batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most padded tokens in a batch (see the module docs).
    pub max_tokens: usize,
    /// Shuffle pairs and batch order per epoch (training) or not (evaluation).
    pub shuffle: bool,
    /// Seed of the shuffling.
    pub seed: u64,
}

/// One padded batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Indices of the rows' pairs in the corpus.
    pub indices: Vec<usize>,
    /// Source ids, padded with [`PAD_ID`] on the right. // [batch, src_len]
    pub source: Array2<i64>,
    /// Target ids, padded with [`PAD_ID`] on the right. // [batch, tgt_len]
    pub target: Array2<i64>,
    /// Unpadded source length of each row (EOS included). // [batch]
    pub source_lens: Vec<usize>,
    /// Unpadded target length of each row (EOS included). // [batch]
    pub target_lens: Vec<usize>,
}

impl Batch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True for a batch without rows (never produced by [`Batcher`]).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The fairseq-style padded size: `batch_len * max(src_len, tgt_len)`.
    pub fn padded_tokens(&self) -> usize {
        self.len() * self.source.ncols().max(self.target.ncols())
    }
}

/// Plans and builds batches of an encoded corpus.
#[derive(Debug, Clone)]
pub struct Batcher {
    corpus: EncodedCorpus,
    config: BatchConfig,
    /// max(src_len, tgt_len) of each pair. // [pairs]
    pair_lens: Vec<usize>,
    num_batches: usize,
}

impl Batcher {
    /// Checks every pair fits in `max_tokens` and that the corpus is not empty.
    pub fn new(corpus: EncodedCorpus, config: BatchConfig) -> Result<Self> {
        if corpus.is_empty() {
            return Err(DataError::Config("cannot batch an empty corpus".into()));
        }
        let pair_lens: Vec<usize> = corpus
            .source
            .iter()
            .zip(&corpus.target)
            .map(|(s, t)| s.len().max(t.len()))
            .collect();
        if let Some((index, &tokens)) = pair_lens
            .iter()
            .enumerate()
            .find(|(_, &len)| len > config.max_tokens)
        {
            return Err(DataError::PairTooLong {
                index,
                tokens,
                max_tokens: config.max_tokens,
            });
        }
        let mut batcher = Batcher {
            corpus,
            config,
            pair_lens,
            num_batches: 0,
        };
        batcher.num_batches = batcher.plan_epoch(0).len();
        Ok(batcher)
    }

    /// The corpus being batched.
    pub fn corpus(&self) -> &EncodedCorpus {
        &self.corpus
    }

    /// The batching settings.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Batches per epoch (the same for every epoch).
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// The pair indices of every batch of `epoch`, in the order they are yielded.
    pub fn plan_epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(epoch);
        let mut order: Vec<usize> = (0..self.corpus.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut rng);
        }
        order.sort_by_key(|&i| self.pair_lens[i]); // stable: ties keep the shuffled order

        let mut batches = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_max = 0;
        for i in order {
            let len = self.pair_lens[i];
            let new_max = current_max.max(len);
            if !current.is_empty() && (current.len() + 1) * new_max > self.config.max_tokens {
                batches.push(std::mem::take(&mut current));
                current_max = len;
            } else {
                current_max = new_max;
            }
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        if self.config.shuffle {
            batches.shuffle(&mut rng);
        }
        batches
    }

    /// Pads the given pairs into a batch.
    pub fn make_batch(&self, indices: &[usize]) -> Batch {
        let (source, source_lens) = pad(indices.iter().map(|&i| &self.corpus.source[i][..]));
        let (target, target_lens) = pad(indices.iter().map(|&i| &self.corpus.target[i][..]));
        Batch {
            indices: indices.to_vec(),
            source,
            target,
            source_lens,
            target_lens,
        }
    }

    /// All batches of one epoch, in order.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Batch> + '_ {
        self.plan_epoch(epoch)
            .into_iter()
            .map(move |indices| self.make_batch(&indices))
    }

    /// An endless stream of batches over successive epochs, starting at
    /// `start` (use `DataPosition::default()` for a fresh run).
    pub fn stream(&self, start: DataPosition) -> BatchStream<'_> {
        BatchStream {
            batcher: self,
            position: start,
            plan: None,
        }
    }
}

/// Endless batch iterator over epochs; [`BatchStream::position`] is what to
/// save so that [`Batcher::stream`] resumes with the next batch.
#[derive(Debug)]
pub struct BatchStream<'a> {
    batcher: &'a Batcher,
    position: DataPosition,
    /// (epoch, plan) of the epoch in progress.
    plan: Option<(u64, Vec<Vec<usize>>)>,
}

impl BatchStream<'_> {
    /// Position of the next batch this stream yields.
    pub fn position(&self) -> DataPosition {
        self.position
    }
}

impl Iterator for BatchStream<'_> {
    type Item = (DataPosition, Batch);

    /// Yields the batch with its own position.
    fn next(&mut self) -> Option<Self::Item> {
        if self.position.batch_index >= self.batcher.num_batches {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                batch_index: 0,
            };
        }
        let epoch = self.position.epoch;
        if self.plan.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.plan = Some((epoch, self.batcher.plan_epoch(epoch)));
        }
        let (_, plan) = self.plan.as_ref().expect("plan was just set");
        let here = self.position;
        let batch = self.batcher.make_batch(&plan[here.batch_index]);
        self.position.batch_index += 1;
        Some((here, batch))
    }
}

/// Right-pads sequences with [`PAD_ID`] into one buffer. // [rows, max_len]
fn pad<'a>(seqs: impl Iterator<Item = &'a [u32]> + Clone) -> (Array2<i64>, Vec<usize>) {
    let lens: Vec<usize> = seqs.clone().map(<[u32]>::len).collect();
    let width = lens.iter().copied().max().unwrap_or(0);
    let mut out = Array2::from_elem((lens.len(), width), PAD_ID as i64); // [rows, width]
    for (mut row, seq) in out.rows_mut().into_iter().zip(seqs) {
        for (slot, &id) in row.iter_mut().zip(seq) {
            *slot = id as i64;
        }
    }
    (out, lens)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs with source length `1 + i % 17` and target length `1 + i % 11`.
    fn corpus(n: usize) -> EncodedCorpus {
        EncodedCorpus {
            source: (0..n).map(|i| vec![10 + i as u32; 1 + i % 17]).collect(),
            target: (0..n).map(|i| vec![20; 1 + i % 11]).collect(),
            line_index: (0..n).collect(),
        }
    }

    fn config(max_tokens: usize, shuffle: bool, seed: u64) -> BatchConfig {
        BatchConfig {
            max_tokens,
            shuffle,
            seed,
        }
    }

    #[test]
    fn pads_rows_on_the_right() {
        let batcher = Batcher::new(corpus(40), config(64, false, 0)).unwrap();
        let batch = batcher.make_batch(&[3, 16]);
        assert_eq!(batch.source.shape(), &[2, 17]);
        assert_eq!(batch.target.shape(), &[2, 6]);
        assert_eq!(batch.source_lens, [4, 17]);
        assert_eq!(batch.target_lens, [4, 6]);
        assert_eq!(batch.source.row(0).to_vec()[..5], [13, 13, 13, 13, 0]);
        assert_eq!(batch.target.row(1).to_vec(), [20; 6]);
        assert_eq!(batch.padded_tokens(), 34);
    }

    #[test]
    fn unshuffled_batches_follow_length_and_respect_max_tokens() {
        let batcher = Batcher::new(corpus(500), config(100, false, 0)).unwrap();
        let plan = batcher.plan_epoch(0);
        assert_eq!(
            plan,
            batcher.plan_epoch(9),
            "no shuffling: same every epoch"
        );
        let mut last_len = 0;
        let mut count = 0;
        for indices in &plan {
            let lens: Vec<usize> = indices.iter().map(|&i| batcher.pair_lens[i]).collect();
            let max = *lens.iter().max().unwrap();
            assert!(indices.len() * max <= 100);
            assert!(lens[0] >= last_len);
            last_len = max;
            count += indices.len();
        }
        assert_eq!(count, 500);
    }

    #[test]
    fn shuffled_plans_differ_by_epoch_and_seed_but_not_in_count() {
        let a = Batcher::new(corpus(500), config(100, true, 1)).unwrap();
        let b = Batcher::new(corpus(500), config(100, true, 2)).unwrap();
        assert_ne!(a.plan_epoch(0), a.plan_epoch(1));
        assert_ne!(a.plan_epoch(0), b.plan_epoch(0));
        assert_eq!(a.plan_epoch(4), a.plan_epoch(4));
        for epoch in 0..5 {
            assert_eq!(a.plan_epoch(epoch).len(), a.num_batches());
        }
    }

    #[test]
    fn a_pair_longer_than_max_tokens_is_an_error() {
        let err = Batcher::new(corpus(40), config(10, true, 0)).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::PairTooLong {
                    index: 10,
                    tokens: 11,
                    max_tokens: 10
                }
            ),
            "{err:?}"
        );
        assert!(Batcher::new(EncodedCorpus::default(), config(10, true, 0)).is_err());
    }

    #[test]
    fn stream_rolls_over_epochs() {
        let batcher = Batcher::new(corpus(50), config(40, true, 3)).unwrap();
        let n = batcher.num_batches();
        let positions: Vec<DataPosition> = batcher
            .stream(DataPosition::default())
            .take(2 * n + 1)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            positions[n - 1],
            DataPosition {
                epoch: 0,
                batch_index: n - 1
            }
        );
        assert_eq!(
            positions[n],
            DataPosition {
                epoch: 1,
                batch_index: 0
            }
        );
        assert_eq!(
            positions[2 * n],
            DataPosition {
                epoch: 2,
                batch_index: 0
            }
        );
    }
}
