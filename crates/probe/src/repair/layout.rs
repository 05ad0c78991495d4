//! Where objects stand against each other: left and right, stacked, on their support, one
//! behind another, close to a region.

use lina_csg::Csg;

use super::cells::{Cells, centre_x, centre_y};
use super::grid::Edits;

/// Mirrors two objects that stand the wrong way round about their common centre.
pub(super) fn order_pair(
    cells: &Cells,
    edits: &mut Edits,
    csg: &Csg,
    a: usize,
    b: usize,
    a_left: bool,
) {
    let (Some(ba), Some(bb)) = (cells.seg.boxes[a], cells.seg.boxes[b]) else {
        return;
    };
    let dx = centre_x(bb) - centre_x(ba);
    let reversed = if a_left { dx < -2.0 } else { dx > 2.0 };
    if !reversed {
        return;
    }
    let (x0, x1) = (ba[0].min(bb[0]) as f32, (ba[2].max(bb[2]) + 1) as f32);
    let (y0, y1) = (ba[1].min(bb[1]) as f32, (ba[3].max(bb[3]) + 1) as f32);
    let axis = (x0 + x1) / 2.0;
    for (y, x) in cells.within(x0, y0, x1, y1) {
        if let Some(mx) = cells.cell_at(2.0 * axis - cells.centre(x)) {
            edits.set(y, x, cells.grid.cell(y, mx));
        }
    }
    edits.described.push(format!(
        "{} and {}: mirrored into the stated order",
        csg.nodes[a].id, csg.nodes[b].id
    ));
}

/// Swaps the looks (colours) of two objects stacked the wrong way round; true if they were.
pub(super) fn unstack(
    cells: &Cells,
    edits: &mut Edits,
    csg: &Csg,
    top: usize,
    bottom: usize,
) -> bool {
    let (Some(bt), Some(bb)) = (cells.seg.boxes[top], cells.seg.boxes[bottom]) else {
        return false;
    };
    if centre_y(bt) <= centre_y(bb) {
        return false;
    }
    let (Some(look_top), Some(look_bottom)) = (cells.look(top), cells.look(bottom)) else {
        return false;
    };
    for y in 0..cells.grid.height {
        for x in 0..cells.grid.width {
            if cells.mostly(top, y, x) {
                edits.set(y, x, look_bottom.clone());
            } else if cells.mostly(bottom, y, x) {
                edits.set(y, x, look_top.clone());
            }
        }
    }
    edits.described.push(format!(
        "{} and {}: looks swapped, the stack was upside down",
        csg.nodes[top].id, csg.nodes[bottom].id
    ));
    true
}

/// Moves `node`'s cells by `(dy, dx)` cells; the cells it leaves take their row's
/// background. Returns how many cells it moved.
pub(super) fn move_node(
    cells: &Cells,
    edits: &mut Edits,
    node: usize,
    dy: isize,
    dx: isize,
) -> usize {
    let (h, w) = (cells.grid.height as isize, cells.grid.width as isize);
    let source: Vec<(usize, usize)> = (0..cells.grid.height)
        .flat_map(|y| (0..cells.grid.width).map(move |x| (y, x)))
        .filter(|&(y, x)| cells.cover(&cells.seg.nodes[node], y, x) >= 0.25)
        .collect();
    let moved = |&(y, x): &(usize, usize)| {
        let (ty, tx) = (y as isize + dy, x as isize + dx);
        (ty >= 0 && ty < h && tx >= 0 && tx < w).then_some((ty as usize, tx as usize))
    };
    let targets: Vec<_> = source.iter().filter_map(moved).collect();
    for &(y, x) in &source {
        if !targets.contains(&(y, x))
            && let Some(bg) = cells.background(y)
        {
            edits.set(y, x, bg);
        }
    }
    for from in &source {
        if let Some((y, x)) = moved(from) {
            edits.set(y, x, cells.grid.cell(from.0, from.1));
        }
    }
    targets.len()
}

/// The nearest whole number of cells to `px` pixels.
pub(super) fn cells_for(cells: &Cells, px: f32) -> isize {
    (px / cells.factor as f32).round() as isize
}

/// Sets an object that floats over (or beside) its support down on the support's top,
/// centred on it.
pub(super) fn settle(cells: &Cells, edits: &mut Edits, csg: &Csg, object: usize, support: usize) {
    let (Some(bo), Some(bs)) = (cells.seg.boxes[object], cells.seg.boxes[support]) else {
        return;
    };
    let dy = cells_for(cells, bs[1] as f32 - 1.0 - bo[3] as f32);
    let dx = if csg.nodes[support].class.is_object() {
        cells_for(cells, centre_x(bs) - centre_x(bo))
    } else {
        0
    };
    if (dy, dx) != (0, 0) && move_node(cells, edits, object, dy, dx) > 0 {
        edits.described.push(format!(
            "{}: set down on {} ({dy}, {dx} cells)",
            csg.nodes[object].id, csg.nodes[support].id
        ));
    }
}

/// Moves a front object drawn apart from the hidden one over its side, so that it hides
/// about a third of it.
pub(super) fn overlap(cells: &Cells, edits: &mut Edits, csg: &Csg, hidden: usize, front: usize) {
    let (Some(bh), Some(bf)) = (cells.seg.boxes[hidden], cells.seg.boxes[front]) else {
        return;
    };
    // Only objects drawn apart: where they touch, a move judged on a blurred prediction
    // would as likely cover the hidden one whole.
    let gap = bh[0].max(bf[0]) as isize - bh[2].min(bf[2]) as isize - 1;
    if gap <= 2 {
        return;
    }
    let (wh, wf) = ((bh[2] - bh[0] + 1) as f32, (bf[2] - bf[0] + 1) as f32);
    let side = if centre_x(bf) >= centre_x(bh) {
        1.0
    } else {
        -1.0
    };
    let target = centre_x(bh) + side * (wh / 2.0 + wf / 2.0 - wh / 3.0);
    let dx = cells_for(cells, target - centre_x(bf));
    if dx != 0 && move_node(cells, edits, front, 0, dx) > 0 {
        edits.described.push(format!(
            "{}: moved over {} ({dx} cells)",
            csg.nodes[front].id, csg.nodes[hidden].id
        ));
    }
}

/// Brings a region (the water) up to a subject (a person) that stands too far from it, by
/// extending the region along its rows near the subject's feet, stopping short of the
/// subject so that it still stands where it stood.
pub(super) fn approach(cells: &Cells, edits: &mut Edits, csg: &Csg, subject: usize, region: usize) {
    let Some(b) = cells.seg.boxes[subject] else {
        return;
    };
    let Some(look) = cells.look(region) else {
        return;
    };
    let (near_left, near_right) = (b[0] as f32 - 4.0, (b[2] + 1) as f32 + 4.0);
    let mut n = 0;
    for y in 0..cells.grid.height {
        let cy = cells.centre(y);
        if cy < b[3] as f32 - 6.0 || cy >= b[3] as f32 + 5.0 {
            continue;
        }
        let xs: Vec<usize> = (0..cells.grid.width)
            .filter(|&x| cells.mostly(region, y, x))
            .collect();
        // The region's cell nearest the subject on each side; only the nearer side grows.
        let mut left = xs
            .iter()
            .copied()
            .filter(|&x| cells.centre(x) < b[0] as f32)
            .max();
        let mut right = xs
            .iter()
            .copied()
            .filter(|&x| cells.centre(x) > b[2] as f32)
            .min();
        if let (Some(l), Some(r)) = (left, right) {
            if b[0] as f32 - cells.centre(l) <= cells.centre(r) - b[2] as f32 {
                right = None;
            } else {
                left = None;
            }
        }
        for x in 0..cells.grid.width {
            let cx = cells.centre(x);
            let fill = left.is_some_and(|l| x > l && cx < near_left)
                || right.is_some_and(|r| x < r && cx > near_right);
            if fill {
                edits.set(y, x, look.clone());
                n += 1;
            }
        }
    }
    edits.report(n, || {
        format!(
            "{}: brought up to {} ({n} cells)",
            csg.nodes[region].id, csg.nodes[subject].id
        )
    });
}
