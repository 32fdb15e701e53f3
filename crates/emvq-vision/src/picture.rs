//! Pictures of a CIFAR-10 VQ-VAE run (Roy et al. 2018, arXiv 1805.11063):
//! RGB grids of 32×32 images (test images beside their reconstructions,
//! samples from the prior) and a codebook-usage bar chart, written as
//! 8-bit RGB PNG files with the `png` crate and read back with it.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::{Result, VisionError};

/// An 8-bit RGB picture, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb {
    /// A `width`×`height` picture filled with `colour`.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Self {
        Self {
            width,
            height,
            pixels: colour.repeat(width * height),
        }
    }

    fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    fn fill_rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, colour: [u8; 3]) {
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                self.set(x, y, colour);
            }
        }
    }
}

fn png_err(path: &Path, e: impl std::fmt::Display) -> VisionError {
    VisionError::Png {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `picture` as an 8-bit RGB PNG (parent folders created).
pub fn write_png(path: &Path, picture: &Rgb) -> Result<()> {
    if picture.pixels.len() != 3 * picture.width * picture.height {
        return Err(png_err(path, "pixel buffer does not match the size"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| png_err(path, e))?;
    }
    let file = File::create(path).map_err(|e| png_err(path, e))?;
    let mut encoder = png::Encoder::new(
        BufWriter::new(file),
        picture.width as u32,
        picture.height as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| png_err(path, e))?;
    writer
        .write_image_data(&picture.pixels)
        .map_err(|e| png_err(path, e))?;
    writer.finish().map_err(|e| png_err(path, e))
}

/// Reads an 8-bit RGB PNG.
pub fn read_png(path: &Path) -> Result<Rgb> {
    let file = File::open(path).map_err(|e| png_err(path, e))?;
    let mut reader = png::Decoder::new(file)
        .read_info()
        .map_err(|e| png_err(path, e))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| png_err(path, e))?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(png_err(path, "not an 8-bit RGB PNG"));
    }
    buf.truncate(info.buffer_size());
    Ok(Rgb {
        width: info.width as usize,
        height: info.height as usize,
        pixels: buf,
    })
}

/// Lays images `[n, 3, h, w]` (uint8, any device) out in a grid of `cols`
/// columns with `pad` pixels of grey between them.
pub fn image_grid(images: &Tensor, cols: usize, pad: usize) -> Result<Rgb> {
    let size = images.size();
    if size.len() != 4 || size[1] != 3 || cols == 0 {
        return Err(VisionError::Shape {
            what: "grid images",
            shape: size,
            expected: "[n, 3, h, w] and cols > 0".into(),
        });
    }
    let (n, h, w) = (size[0] as usize, size[2] as usize, size[3] as usize);
    let rows = n.div_ceil(cols).max(1);
    let hwc = images
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Uint8)?
        .f_permute([0, 2, 3, 1])?
        .f_contiguous()?; // [n, h, w, 3]
    let data = Vec::<u8>::try_from(hwc.f_flatten(0, -1)?)?;
    let (width, height) = (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad);
    let mut grid = Rgb::filled(width, height, [128, 128, 128]);
    for i in 0..n {
        let (gx, gy) = (pad + (i % cols) * (w + pad), pad + (i / cols) * (h + pad));
        for y in 0..h {
            let src = &data[(i * h + y) * w * 3..(i * h + y + 1) * w * 3];
            let dst = 3 * ((gy + y) * width + gx);
            grid.pixels[dst..dst + w * 3].copy_from_slice(src);
        }
    }
    Ok(grid)
}

/// Originals and reconstructions `[n, 3, h, w]` interleaved by rows of
/// `cols`: a row of originals, under it their reconstructions, and so on.
pub fn side_by_side(originals: &Tensor, reconstructions: &Tensor, cols: usize) -> Result<Rgb> {
    if originals.size() != reconstructions.size() || cols == 0 {
        return Err(VisionError::Shape {
            what: "reconstructions",
            shape: reconstructions.size(),
            expected: format!("{:?} like the originals", originals.size()),
        });
    }
    let n = originals.size()[0];
    let mut rows = Vec::new();
    let mut start = 0;
    while start < n {
        let len = (cols as i64).min(n - start);
        for t in [originals, reconstructions] {
            let chunk = t.f_narrow(0, start, len)?.f_to_kind(Kind::Uint8)?;
            if len < cols as i64 {
                let mut s = chunk.size();
                s[0] = cols as i64 - len;
                let blank = Tensor::f_full(&s, 128, (Kind::Uint8, chunk.device()))?;
                rows.push(Tensor::f_cat(&[chunk, blank], 0)?);
            } else {
                rows.push(chunk);
            }
        }
        start += len;
    }
    image_grid(&Tensor::f_cat(&rows, 0)?, cols, 2)
}

/// Pictures joined left to right, tops aligned, `gap` white pixels apart.
pub fn hstack(pictures: &[Rgb], gap: usize) -> Rgb {
    let width =
        pictures.iter().map(|p| p.width).sum::<usize>() + gap * pictures.len().saturating_sub(1);
    let height = pictures.iter().map(|p| p.height).max().unwrap_or(0);
    let mut out = Rgb::filled(width, height, [255, 255, 255]);
    let mut x0 = 0;
    for p in pictures {
        for y in 0..p.height {
            let src = &p.pixels[3 * y * p.width..3 * (y + 1) * p.width];
            let dst = 3 * (y * width + x0);
            out.pixels[dst..dst + src.len()].copy_from_slice(src);
        }
        x0 += p.width + gap;
    }
    out
}

/// A bar chart of code usage: one bar per code, tallest first, height ∝
/// count; codes never used show as a red tick on the baseline. `counts`
/// holds the K counts of one codebook.
pub fn usage_chart(counts: &[f64], height: usize) -> Rgb {
    let k = counts.len().max(1);
    let bar = (1024 / k).clamp(1, 8);
    let margin = 10;
    let width = 2 * margin + k * bar;
    let height = height.max(2 * margin + 10);
    let mut sorted: Vec<f64> = counts.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let max = sorted.first().copied().unwrap_or(0.0).max(1e-12);
    let mut picture = Rgb::filled(width, height, [255, 255, 255]);
    let base = height - margin; // baseline y
    let span = (height - 2 * margin) as f64;
    for (i, &c) in sorted.iter().enumerate() {
        let x0 = margin + i * bar;
        let x1 = x0 + bar.saturating_sub(usize::from(bar > 2)).max(1);
        if c <= 0.0 {
            picture.fill_rect(x0, base, x1, base + 3, [220, 30, 30]);
        } else {
            let h = ((c / max) * span).round().max(1.0) as usize;
            picture.fill_rect(x0, base - h, x1, base, [40, 90, 180]);
        }
    }
    picture.fill_rect(margin, base, width - margin, base + 1, [0, 0, 0]);
    picture
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_each_image_and_pads_with_grey() {
        let images = Tensor::arange(2 * 3 * 2 * 2, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Uint8)
            .view([2, 3, 2, 2]);
        let grid = image_grid(&images, 2, 1).unwrap();
        assert_eq!((grid.width, grid.height), (2 * 2 + 3, 2 + 2));
        // Image 1, pixel (0, 0): R = 12, G = 16, B = 20, at grid (4, 1).
        let i = 3 * (grid.width + 4);
        assert_eq!(&grid.pixels[i..i + 3], &[12, 16, 20]);
        assert_eq!(&grid.pixels[0..3], &[128, 128, 128]);
    }

    #[test]
    fn hstack_puts_pictures_side_by_side() {
        let a = Rgb::filled(2, 3, [1, 2, 3]);
        let b = Rgb::filled(1, 1, [9, 9, 9]);
        let s = hstack(&[a, b], 1);
        assert_eq!((s.width, s.height), (4, 3));
        assert_eq!(
            &s.pixels[0..12],
            &[1, 2, 3, 1, 2, 3, 255, 255, 255, 9, 9, 9]
        );
        assert_eq!(&s.pixels[12 + 9..12 + 12], &[255, 255, 255]); // below b
    }

    #[test]
    fn usage_chart_marks_dead_codes() {
        let chart = usage_chart(&[5.0, 0.0, 1.0, 0.0], 60);
        let red = chart
            .pixels
            .chunks(3)
            .filter(|p| *p == [220, 30, 30])
            .count();
        assert!(red > 0);
        assert_eq!(chart.pixels.len(), 3 * chart.width * chart.height);
    }
}
