//! The latents a repair reads (a plain grid of cells) and the targets it writes for them.

use lina_runtime::image::Image;

/// Latents (or pixels) as a plain `[channels, height, width]` array, as a `[1, c, h, w]`
/// tensor holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Grid {
    /// An image's pixels as a grid of RGB cells in [0, 1]: repairs applied to it act on the
    /// image directly (tests use this to see what a repair means).
    pub fn from_image(image: &Image) -> Self {
        let (h, w) = (image.height, image.width);
        let mut data = vec![0.0; 3 * h * w];
        for (i, p) in image.rgb.chunks_exact(3).enumerate() {
            for (k, v) in p.iter().enumerate() {
                data[k * h * w + i] = *v as f32 / 255.0;
            }
        }
        Self {
            channels: 3,
            height: h,
            width: w,
            data,
        }
    }

    /// The inverse of [`Grid::from_image`].
    pub fn to_image(&self) -> Image {
        let n = self.height * self.width;
        let rgb = (0..n)
            .flat_map(|i| {
                (0..3).map(move |k| (self.data[k * n + i].clamp(0.0, 1.0) * 255.0).round() as u8)
            })
            .collect();
        Image {
            width: self.width,
            height: self.height,
            rgb,
        }
    }

    pub(super) fn cell(&self, y: usize, x: usize) -> Vec<f32> {
        let n = self.height * self.width;
        (0..self.channels)
            .map(|k| self.data[k * n + y * self.width + x])
            .collect()
    }

    pub(super) fn mean(&self, cells: impl Iterator<Item = (usize, usize)>) -> Option<Vec<f32>> {
        let mut sum = vec![0.0; self.channels];
        let mut count = 0;
        for (y, x) in cells {
            for (s, v) in sum.iter_mut().zip(self.cell(y, x)) {
                *s += v;
            }
            count += 1;
        }
        (count > 0).then(|| sum.into_iter().map(|s| s / count as f32).collect())
    }
}

/// Target values for some cells of a grid, and what each repair did.
pub struct Edits {
    width: usize,
    targets: Vec<Option<Vec<f32>>>,
    pub described: Vec<String>,
}

impl Edits {
    pub(super) fn new(grid: &Grid) -> Self {
        Self {
            width: grid.width,
            targets: vec![None; grid.height * grid.width],
            described: Vec::new(),
        }
    }

    pub(super) fn set(&mut self, y: usize, x: usize, value: Vec<f32>) {
        self.targets[y * self.width + x] = Some(value);
    }

    /// Records what a repair did, if it changed any cell (`n` of them).
    pub(super) fn report(&mut self, n: usize, what: impl FnOnce() -> String) {
        if n > 0 {
            self.described.push(what());
        }
    }

    pub(super) fn touched(&self, y: usize, x: usize) -> bool {
        self.targets[y * self.width + x].is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.iter().all(Option::is_none)
    }

    /// The change `strength · (target - value)` on the edited cells, zero elsewhere, laid out
    /// as the grid's data.
    pub fn delta(&self, grid: &Grid, strength: f64) -> Vec<f32> {
        let n = grid.height * grid.width;
        let mut out = vec![0.0; grid.channels * n];
        for (i, target) in self.targets.iter().enumerate() {
            if let Some(t) = target {
                for (k, v) in t.iter().enumerate() {
                    out[k * n + i] = strength as f32 * (v - grid.data[k * n + i]);
                }
            }
        }
        out
    }

    /// The grid with the delta at `strength` added.
    pub fn apply(&self, grid: &Grid, strength: f64) -> Grid {
        let delta = self.delta(grid, strength);
        Grid {
            data: grid.data.iter().zip(delta).map(|(v, d)| v + d).collect(),
            ..grid.clone()
        }
    }
}
