//! Sinusoidal position encodings, as tensor2tensor's `get_timing_signal_1d`
//! computes them (the paper's code): for `channels = 2n`, timescales
//! `τ_i = min · (max/min)^(i/(n−1))`, and the encoding of position `p` is
//! `[sin(p/τ_0) … sin(p/τ_{n−1}), cos(p/τ_0) … cos(p/τ_{n−1})]` (sines in the
//! first half, cosines in the second; an odd last channel is zero).

use tch::{Device, Kind, Tensor};

/// Encodings of positions `start .. start + len`: `[len, channels]`, f32.
pub fn sinusoidal_positions(len: i64, channels: i64, start: i64, device: Device) -> Tensor {
    let (min_timescale, max_timescale) = (1.0f64, 1.0e4f64);
    let num_timescales = channels / 2;
    let log_increment = (max_timescale / min_timescale).ln() / ((num_timescales - 1).max(1) as f64);
    let options = (Kind::Float, device);
    let inv_timescales =
        (Tensor::arange(num_timescales, options) * -log_increment).exp() * min_timescale; // [n]
    let positions = Tensor::arange_start(start, start + len, options); // [len]
    let scaled = positions.unsqueeze(1) * inv_timescales.unsqueeze(0); // [len, n]
    let signal = Tensor::cat(&[scaled.sin(), scaled.cos()], 1); // [len, 2n]
    if channels % 2 == 1 {
        signal.pad([0, 1], "constant", Some(0.0))
    } else {
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form() {
        let (len, channels) = (7i64, 8i64);
        let got =
            Vec::<Vec<f32>>::try_from(sinusoidal_positions(len, channels, 3, Device::Cpu)).unwrap();
        let n = channels / 2;
        for p in 0..len {
            for i in 0..n {
                let tau = 1e4f64.powf(i as f64 / (n - 1) as f64);
                let angle = (p + 3) as f64 / tau;
                assert!((got[p as usize][i as usize] as f64 - angle.sin()).abs() < 1e-5);
                assert!((got[p as usize][(n + i) as usize] as f64 - angle.cos()).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn odd_channel_count_pads_a_zero() {
        let t = sinusoidal_positions(3, 5, 0, Device::Cpu);
        assert_eq!(t.size(), vec![3, 5]);
        assert_eq!(t.select(1, 4).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
