//! Attention masks. A mask is a `Bool` tensor that is `true` where attention
//! is *not* allowed; [`attention_bias`] turns it into the additive bias the
//! attention logits take (T2T uses −1e9 rather than −∞, which keeps fully
//! masked rows finite).

use tch::{Device, Kind, Tensor};

/// The additive bias T2T puts on masked attention logits.
pub const MASKED_BIAS: f64 = -1e9;

/// Padding mask from token ids: `true` at padding.
/// `tokens`: `[batch, len]` → `[batch, len]`.
pub fn padding_mask(tokens: &Tensor, pad_id: i64) -> Tensor {
    tokens.eq(pad_id)
}

/// Padding mask from lengths: `true` at positions `>= length`.
/// `lengths`: `[batch]` → `[batch, max_len]`.
pub fn length_mask(lengths: &Tensor, max_len: i64) -> Tensor {
    let positions = Tensor::arange(max_len, (Kind::Int64, lengths.device())); // [max_len]
    positions.unsqueeze(0).ge_tensor(&lengths.unsqueeze(1)) // [batch, max_len]
}

/// Causal mask: `true` where key position `j` is after query position `i`.
/// → `[len, len]`.
pub fn causal_mask(len: i64, device: Device) -> Tensor {
    Tensor::ones([len, len], (Kind::Bool, device)).triu(1)
}

/// Additive attention bias from a mask: 0 where allowed, −1e9 where masked,
/// in `kind`. Same shape as `mask`.
pub fn attention_bias(mask: &Tensor, kind: Kind) -> Tensor {
    Tensor::zeros(mask.size(), (kind, mask.device())).masked_fill(mask, MASKED_BIAS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_vec2(t: &Tensor) -> Vec<Vec<i64>> {
        Vec::<Vec<i64>>::try_from(t.to_kind(Kind::Int64)).unwrap()
    }

    #[test]
    fn padding_and_length_masks_mark_padding() {
        let tokens = Tensor::from_slice2(&[[5i64, 6, 0, 0], [7, 8, 9, 0]]);
        assert_eq!(
            to_vec2(&padding_mask(&tokens, 0)),
            vec![vec![0, 0, 1, 1], vec![0, 0, 0, 1]]
        );
        let lengths = Tensor::from_slice(&[2i64, 3]);
        assert_eq!(
            to_vec2(&length_mask(&lengths, 4)),
            vec![vec![0, 0, 1, 1], vec![0, 0, 0, 1]]
        );
    }

    #[test]
    fn causal_mask_is_strictly_upper_triangular() {
        let m = to_vec2(&causal_mask(4, Device::Cpu));
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, (j > i) as i64, "({i},{j})");
            }
        }
    }

    #[test]
    fn bias_is_zero_or_large_negative() {
        let bias = attention_bias(&causal_mask(2, Device::Cpu), Kind::Float);
        assert_eq!(
            Vec::<Vec<f32>>::try_from(bias).unwrap(),
            vec![vec![0.0, -1e9], vec![0.0, 0.0]]
        );
    }
}
