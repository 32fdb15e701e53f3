//! A small line plot for the pipeline report (loss curves, codebook
//! perplexity over training): coloured polylines in a framed box with light
//! grid lines at quarters, drawn into an [`Rgb`] picture (written as PNG
//! by `emvq_vision::picture::write_png`). There is no text in the picture;
//! the report states the axes' ranges ([`Ranges`]) and the colours.

use emvq_vision::picture::Rgb;

/// One curve: `(x, y)` points in x order, drawn in `colour`.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub colour: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

/// The data ranges the picture spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranges {
    pub x: (f64, f64),
    pub y: (f64, f64),
}

/// Colours of successive series (blue, orange, green, red, purple).
pub const PALETTE: [[u8; 3]; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];

const MARGIN: usize = 12;

/// The finite data ranges of `series` (a zero-width range is widened by 1).
pub fn ranges(series: &[Series]) -> Option<Ranges> {
    let points = series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        return None;
    }
    let widen = |a: f64, b: f64| if b > a { (a, b) } else { (a - 0.5, b + 0.5) };
    Some(Ranges {
        x: widen(x0, x1),
        y: widen(y0, y1),
    })
}

/// Draws `series` into a `width`×`height` picture; `None` when no series
/// has a finite point.
pub fn line_plot(series: &[Series], width: usize, height: usize) -> Option<(Rgb, Ranges)> {
    let r = ranges(series)?;
    let (width, height) = (width.max(4 * MARGIN), height.max(4 * MARGIN));
    let mut picture = Rgb::filled(width, height, [255, 255, 255]);
    let (w, h) = (
        (width - 2 * MARGIN - 1) as f64,
        (height - 2 * MARGIN - 1) as f64,
    );
    let to_px = |x: f64, y: f64| {
        let px = MARGIN as f64 + (x - r.x.0) / (r.x.1 - r.x.0) * w;
        let py = (height - MARGIN - 1) as f64 - (y - r.y.0) / (r.y.1 - r.y.0) * h;
        (px.round() as i64, py.round() as i64)
    };
    let (left, right) = (MARGIN as i64, (width - MARGIN - 1) as i64);
    let (top, bottom) = (MARGIN as i64, (height - MARGIN - 1) as i64);
    for q in 1..4 {
        let gx = left + (right - left) * q / 4;
        let gy = top + (bottom - top) * q / 4;
        line(&mut picture, (gx, top), (gx, bottom), [225, 225, 225]);
        line(&mut picture, (left, gy), (right, gy), [225, 225, 225]);
    }
    for (a, b) in [
        ((left, top), (right, top)),
        ((right, top), (right, bottom)),
        ((right, bottom), (left, bottom)),
        ((left, bottom), (left, top)),
    ] {
        line(&mut picture, a, b, [90, 90, 90]);
    }
    for s in series {
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| to_px(x, y))
            .collect();
        for pair in pts.windows(2) {
            line(&mut picture, pair[0], pair[1], s.colour);
        }
        if let [p] = pts[..] {
            line(&mut picture, (p.0 - 2, p.1), (p.0 + 2, p.1), s.colour);
            line(&mut picture, (p.0, p.1 - 2), (p.0, p.1 + 2), s.colour);
        }
    }
    Some((picture, r))
}

fn put(picture: &mut Rgb, x: i64, y: i64, colour: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < picture.width && (y as usize) < picture.height {
        let i = 3 * (y as usize * picture.width + x as usize);
        picture.pixels[i..i + 3].copy_from_slice(&colour);
    }
}

/// Bresenham's line, two pixels thick vertically for legibility.
fn line(picture: &mut Rgb, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3]) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        put(picture, x0, y0, colour);
        put(picture, x0, y0 + 1, colour);
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rising_line_goes_from_bottom_left_to_top_right() {
        let s = Series {
            name: "loss".into(),
            colour: [255, 0, 0],
            points: vec![(0.0, 1.0), (10.0, 3.0)],
        };
        let (pic, r) = line_plot(&[s], 100, 60).unwrap();
        assert_eq!(
            r,
            Ranges {
                x: (0.0, 10.0),
                y: (1.0, 3.0)
            }
        );
        let at =
            |x: usize, y: usize| &pic.pixels[3 * (y * pic.width + x)..3 * (y * pic.width + x) + 3];
        assert_eq!(at(MARGIN, 60 - MARGIN - 1), [255, 0, 0]);
        assert_eq!(at(100 - MARGIN - 1, MARGIN), [255, 0, 0]);
        assert_eq!(at(80, 40), [255, 255, 255]);
    }

    #[test]
    fn no_finite_point_no_plot() {
        let s = Series {
            name: "x".into(),
            colour: [0, 0, 0],
            points: vec![(f64::NAN, 1.0)],
        };
        assert!(line_plot(&[s], 50, 50).is_none());
        let flat = Series {
            name: "x".into(),
            colour: [0, 0, 0],
            points: vec![(1.0, 2.0)],
        };
        assert_eq!(
            ranges(&[flat]).unwrap(),
            Ranges {
                x: (0.5, 1.5),
                y: (1.5, 2.5)
            }
        );
    }
}
