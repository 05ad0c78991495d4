//! What light makes: shadows on the side away from it, the lamp on its side, reflections
//! within their surface.

use lina_csg::{Class, Csg, Light};

use super::cells::{Cells, centre_x};
use super::grid::Edits;

/// What [`mirror_shadow`] found.
pub(super) enum Shadow {
    Mirrored,
    /// Hardly any shadow on either side: nothing to mirror.
    Missing,
    Other,
}

/// The fewest shadow pixels the checker accepts on the far side.
pub(super) const SHADOW_PX: usize = 4;

/// Mirrors the shadow in the floor band at `object`'s base about its axis when it lies on the
/// side of the light.
pub(super) fn mirror_shadow(
    cells: &Cells,
    edits: &mut Edits,
    objects: &[usize],
    object: usize,
    light: Light,
    effect: &str,
) -> Shadow {
    let Some(b) = cells.seg.boxes[object] else {
        return Shadow::Other;
    };
    if light == Light::Above {
        return Shadow::Other;
    }
    let (cx, w) = (centre_x(b), (b[2] - b[0] + 1) as f32);
    let (y0, y1) = (b[3] as f32 - 2.0, b[3] as f32 + 7.0);
    let seg = cells.seg;
    let count = |lo: f32, hi: f32| {
        let mut n = 0;
        for y in (y0.max(0.0) as usize)..(y1 as usize).min(seg.height) {
            for x in 0..seg.width {
                let xc = x as f32 + 0.5;
                n += (xc >= lo && xc < hi && seg.shadow[y * seg.width + x]) as usize;
            }
        }
        n
    };
    let (left, right) = (count(cx - w, cx - w / 4.0), count(cx + w / 4.0, cx + w));
    let (near, far) = match light {
        Light::Left => (left, right),
        _ => (right, left),
    };
    if near.max(far) < SHADOW_PX {
        return Shadow::Missing;
    }
    if near <= far {
        return Shadow::Other;
    }
    let is_object = |y: usize, x: usize| objects.iter().any(|&o| cells.mostly(o, y, x));
    // Shadow moves to the far side, and the near side is cleared; the far side keeps what it
    // had where that was darker. A plain swap would, on the next step, carry back to the near
    // side whatever shadow the far side had already taken.
    let far_is_left = light == Light::Right;
    let shade = |y: usize, x: usize| cells.cover(&cells.seg.shadow, y, x);
    let mut n = 0;
    for (y, x) in cells.within(cx - w, y0, cx + w, y1) {
        if is_object(y, x) {
            continue;
        }
        let target = if (cells.centre(x) < cx) == far_is_left {
            cells
                .cell_at(2.0 * cx - cells.centre(x))
                .filter(|&mx| !is_object(y, mx) && shade(y, mx) > shade(y, x))
                .map(|mx| cells.grid.cell(y, mx))
        } else if shade(y, x) > 0.0 {
            cells.background(y)
        } else {
            None
        };
        if let Some(v) = target {
            edits.set(y, x, v);
            n += 1;
        }
    }
    edits.described.push(format!(
        "{effect}: mirrored away from the light ({near} px toward it, {far} away; {n} cells)"
    ));
    Shadow::Mirrored
}

/// Paints a shadow on the floor at `object`'s base, on the side away from the light, with the
/// look of the shadows the model drew elsewhere (an object it drew late, or that a repair
/// painted, often has none).
pub(super) fn cast_shadow(
    cells: &Cells,
    edits: &mut Edits,
    object: usize,
    light: Light,
    effect: &str,
) {
    let Some(b) = cells.seg.boxes[object] else {
        return;
    };
    let Some(look) = cells.shadow_look() else {
        return;
    };
    let (cx, w) = (centre_x(b), (b[2] - b[0] + 1) as f32);
    let (x0, x1) = match light {
        Light::Left => (cx, cx + w),
        Light::Right => (cx - w, cx),
        Light::Above => return,
    };
    let (y0, y1) = (b[3] as f32 + 1.0, b[3] as f32 + 1.0 + cells.factor as f32);
    let mut n = 0;
    for (y, x) in cells.within(x0, y0, x1, y1) {
        edits.set(y, x, look.clone());
        n += 1;
    }
    edits.report(n, || {
        format!("{effect}: cast away from the light ({n} cells)")
    });
}

/// Moves a lamp drawn on the wrong side of the image to the mirrored place.
pub(super) fn move_lamp(cells: &Cells, edits: &mut Edits, csg: &Csg) {
    let Some(lamp) = csg.nodes.iter().position(|n| n.class == Class::Lamp) else {
        return;
    };
    let (Some(b), Some(light)) = (cells.seg.boxes[lamp], csg.light) else {
        return;
    };
    let middle = cells.seg.width as f32 / 2.0;
    let wrong = match light {
        Light::Left => centre_x(b) > middle,
        Light::Right => centre_x(b) < middle,
        Light::Above => false,
    };
    if !wrong {
        return;
    }
    // The lamp's box and a cell around it (its glow), swapped with the mirrored place.
    let f = cells.factor as f32;
    let (x0, y0) = (b[0] as f32 - f, b[1] as f32 - f);
    let (x1, y1) = ((b[2] + 1) as f32 + f, (b[3] + 1) as f32 + f);
    let w = cells.grid.width;
    for (y, x) in cells.within(x0, y0, x1, y1) {
        if let Some(bg) = cells.background(y) {
            edits.set(y, x, bg);
        }
    }
    for (y, x) in cells.within(x0, y0, x1, y1) {
        edits.set(y, w - 1 - x, cells.grid.cell(y, x));
    }
    edits
        .described
        .push("lamp: moved to the side the light comes from".to_string());
}

/// Replaces the reflection past the sides and the bottom of its surface's box with the
/// background of its row, except where an object stands.
pub(super) fn clip_reflection(
    cells: &Cells,
    edits: &mut Edits,
    objects: &[usize],
    mirrored: Option<usize>,
    reflection: usize,
    surface: usize,
    effect: &str,
) {
    let seg = cells.seg;
    let mut bounds: Option<[usize; 4]> = None;
    for (i, _) in seg.nodes[surface].iter().enumerate().filter(|(_, m)| **m) {
        let (x, y) = (i % seg.width, i / seg.width);
        let b = bounds.get_or_insert([x, y, x, y]);
        *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    let Some(s) = bounds else { return };
    // A surface seen narrower than the object on it is not drawn in full (a sliver at one
    // side shows): judged against that sliver the whole reflection spills, and clearing it
    // erased what there was of the surface.
    if let Some(o) = mirrored.and_then(|o| seg.boxes[o])
        && s[2] - s[0] < o[2] - o[0]
    {
        return;
    }
    // The object over the surface shares cells with the top of its reflection: clearing
    // those would erase the object.
    let holds_object = |y: usize, x: usize| {
        objects
            .iter()
            .any(|&o| cells.cover(&seg.nodes[o], y, x) >= 0.25)
    };
    // Cells are cleared by their centres, with no slack: a cell half out spills.
    let inside =
        |cx: f32, cy: f32| cx >= s[0] as f32 && cx <= (s[2] + 1) as f32 && cy <= (s[3] + 1) as f32;
    // Only at or below the surface's top: a reflection lies below the ground line. Above it,
    // reflection colour is the object itself, washed out in a blurred prediction (clearing
    // it there erased objects), or its soft rim.
    let below_top = |cy: f32| cy >= s[1] as f32;
    let mut n = 0;
    for y in 0..cells.grid.height {
        for x in 0..cells.grid.width {
            if cells.cover(&seg.nodes[reflection], y, x) > 0.0
                && below_top(cells.centre(y))
                && !inside(cells.centre(x), cells.centre(y))
                && !holds_object(y, x)
                && let Some(bg) = cells.background(y)
            {
                edits.set(y, x, bg);
                n += 1;
            }
        }
    }
    edits.report(n, || {
        format!("{effect}: {n} cells outside the surface cleared")
    });
}
