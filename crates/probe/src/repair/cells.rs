//! Where the checker's pixel masks fall on a grid's cells, and the pixel geometry the repairs
//! share: box centres, class outlines, connected regions.

use lina_csg::Class;

use super::grid::Grid;
use crate::check::Segmentation;

/// How the checker's pixel masks fall on the grid's cells.
pub(super) struct Cells<'a> {
    pub(super) seg: &'a Segmentation,
    pub(super) grid: &'a Grid,
    /// Image pixels per cell side.
    pub(super) factor: usize,
}

impl<'a> Cells<'a> {
    pub(super) fn new(seg: &'a Segmentation, grid: &'a Grid) -> Option<Self> {
        let factor = seg.width / grid.width.max(1);
        (factor > 0 && seg.width == factor * grid.width && seg.height == factor * grid.height)
            .then_some(Self { seg, grid, factor })
    }

    /// The share of cell (y, x)'s pixels that `mask` holds.
    pub(super) fn cover(&self, mask: &[bool], y: usize, x: usize) -> f32 {
        let f = self.factor;
        let mut n = 0;
        for py in y * f..(y + 1) * f {
            for px in x * f..(x + 1) * f {
                n += mask[py * self.seg.width + px] as usize;
            }
        }
        n as f32 / (f * f) as f32
    }

    /// The pixel coordinate of a cell's centre.
    pub(super) fn centre(&self, i: usize) -> f32 {
        (i as f32 + 0.5) * self.factor as f32
    }

    /// The cells whose centres lie in the pixel box `[x0, x1) × [y0, y1)`.
    pub(super) fn within(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..self.grid.height {
            for x in 0..self.grid.width {
                let (cx, cy) = (self.centre(x), self.centre(y));
                if cx >= x0 && cx < x1 && cy >= y0 && cy < y1 {
                    out.push((y, x));
                }
            }
        }
        out
    }

    pub(super) fn cell_at(&self, px: f32) -> Option<usize> {
        (px >= 0.0)
            .then(|| (px / self.factor as f32) as usize)
            .filter(|&x| x < self.grid.width)
    }

    /// The mean of the row's cells that are all background (wall or floor): what a cell of
    /// that row looks like with nothing on it.
    pub(super) fn background(&self, y: usize) -> Option<Vec<f32>> {
        self.grid.mean(
            (0..self.grid.width)
                .filter(|&x| self.cover(&self.seg.background, y, x) >= 0.999)
                .map(|x| (y, x)),
        )
    }

    /// The mean of the cells that are mostly `node`: its look in latent space.
    pub(super) fn look(&self, node: usize) -> Option<Vec<f32>> {
        let mask = &self.seg.nodes[node];
        let cells = |min: f32| {
            (0..self.grid.height)
                .flat_map(|y| (0..self.grid.width).map(move |x| (y, x)))
                .filter(move |&(y, x)| self.cover(mask, y, x) >= min)
        };
        self.grid
            .mean(cells(0.75))
            .or_else(|| self.grid.mean(cells(0.5)))
    }

    /// The mean of the cells that are mostly shadow: how a shadow looks in this image.
    pub(super) fn shadow_look(&self) -> Option<Vec<f32>> {
        self.grid.mean(
            (0..self.grid.height)
                .flat_map(|y| (0..self.grid.width).map(move |x| (y, x)))
                .filter(|&(y, x)| self.cover(&self.seg.shadow, y, x) >= 0.5),
        )
    }

    pub(super) fn mostly(&self, node: usize, y: usize, x: usize) -> bool {
        self.cover(&self.seg.nodes[node], y, x) >= 0.5
    }
}

/// Pixel-box geometry, inclusive corners as the checker gives them.
pub(super) fn centre_x(b: [usize; 4]) -> f32 {
    (b[0] + b[2] + 1) as f32 / 2.0
}
pub(super) fn centre_y(b: [usize; 4]) -> f32 {
    (b[1] + b[3] + 1) as f32 / 2.0
}

/// Whether the point `(px, py)`, inside the box `[x0, y0, x1, y1)`, lies in the outline of
/// `class` fitted to that box: a disc (an ellipse in a box that is not square), a triangle
/// whose half-width grows from the apex at the top's centre to the base (plus `cone_slack`
/// pixels), or the whole box.
pub(super) fn in_outline(
    class: Class,
    [x0, y0, x1, y1]: [f32; 4],
    px: f32,
    py: f32,
    cone_slack: f32,
) -> bool {
    let (cx, cy, w, h) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0);
    match class {
        Class::Ball => ((px - cx) / w).powi(2) + ((py - cy) / h).powi(2) <= 0.25,
        Class::Cone => (px - cx).abs() <= w / 2.0 * (py - y0) / h + cone_slack,
        _ => true,
    }
}

/// The fewest pixels a region needs to count as a drawn object, as the checker's count does
/// for small objects.
pub(super) const MIN_PART: usize = 10;

/// The 4-connected regions of a pixel mask, largest first, as pixel indices.
pub(super) fn components(mask: &[bool], width: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut stack, mut part) = (vec![start], Vec::new());
        while let Some(i) = stack.pop() {
            part.push(i);
            let (x, y) = (i % width, i / width);
            let mut visit = |j: usize| {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < width {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - width);
            }
            if i + width < mask.len() {
                visit(i + width);
            }
        }
        out.push(part);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out
}
