//! From the checker's verdicts to edits: each failed check picks its repair.

use lina_csg::{Csg, Predicate, Size};

use super::cells::Cells;
use super::drawing::{place, rebind, refill, reshape};
use super::grid::{Edits, Grid};
use super::layout::{approach, order_pair, overlap, settle, unstack};
use super::light::{Shadow, cast_shadow, clip_reflection, mirror_shadow, move_lamp};
use crate::check::{Segmentation, Verdict, relation_check};

/// The repairs for what `verdicts` (the checker's on the image `seg` was made from) find
/// wrong, as targets on `grid`, the image's latents (or the image itself). `looks` gives, per
/// CSG node, how its flat colour looks on the grid (what a missing object is painted with);
/// it may be empty.
pub fn plan_edits(
    csg: &Csg,
    seg: &Segmentation,
    verdicts: &[Verdict],
    grid: &Grid,
    looks: &[Option<Vec<f32>>],
) -> Edits {
    let mut edits = Edits::new(grid);
    let Some(cells) = Cells::new(seg, grid) else {
        return edits;
    };
    let failed = |check: &str| verdicts.iter().any(|v| !v.passed && v.check == check);
    let index = |id: &str| csg.nodes.iter().position(|n| n.id == id);
    let objects: Vec<usize> = (0..csg.nodes.len())
        .filter(|&i| csg.nodes[i].class.is_object())
        .collect();
    let mut shadows_wrong = false;
    for r in &csg.relations {
        if !failed(&relation_check(r)) {
            continue;
        }
        let (Some(s), Some(o)) = (index(&r.subject), index(&r.object)) else {
            continue;
        };
        match r.predicate {
            Predicate::ShadowOf => {
                if let Some(light) = csg.light {
                    match mirror_shadow(&cells, &mut edits, &objects, o, light, &r.subject) {
                        Shadow::Mirrored => shadows_wrong = true,
                        Shadow::Missing => cast_shadow(&cells, &mut edits, o, light, &r.subject),
                        Shadow::Other => {}
                    }
                }
            }
            // Only a small surface can be smaller than the reflection: on a large one, a
            // reflection past the surface pixels is the checker missing the surface under it.
            Predicate::BoundedBy if csg.nodes[o].size == Some(Size::Small) => {
                let mirrored = csg
                    .relations
                    .iter()
                    .find(|m| m.predicate == Predicate::ReflectionOf && m.subject == r.subject)
                    .and_then(|m| index(&m.object));
                clip_reflection(&cells, &mut edits, &objects, mirrored, s, o, &r.subject)
            }
            Predicate::LeftOf | Predicate::RightOf => order_pair(
                &cells,
                &mut edits,
                csg,
                s,
                o,
                r.predicate == Predicate::LeftOf,
            ),
            Predicate::On => {
                let both = csg.nodes[s].class.is_object() && csg.nodes[o].class.is_object();
                if !(both && unstack(&cells, &mut edits, csg, s, o)) {
                    settle(&cells, &mut edits, csg, s, o);
                }
            }
            Predicate::Behind => overlap(&cells, &mut edits, csg, s, o),
            Predicate::CloseTo => approach(&cells, &mut edits, csg, s, o),
            _ => {}
        }
    }
    if shadows_wrong {
        move_lamp(&cells, &mut edits, csg);
    }
    for &missing in &objects {
        let id = &csg.nodes[missing].id;
        if failed(&format!("exists({id})"))
            && let Some(look) = looks.get(missing).cloned().flatten()
            && !rebind(&cells, &mut edits, csg, &objects, missing, look.clone())
        {
            place(&cells, &mut edits, csg, &objects, missing, look);
        }
    }
    for &object in &objects {
        let node = &csg.nodes[object];
        if failed(&format!("shape({}) = {}", node.id, node.class.word())) {
            reshape(&cells, &mut edits, csg, object);
        }
    }
    for (jar, node) in csg.nodes.iter().enumerate() {
        let Some(fill) = node.fill else { continue };
        let name = format!("fill({})", node.id);
        if verdicts
            .iter()
            .any(|v| !v.passed && v.kind == "fill" && v.check.starts_with(&name))
        {
            refill(&cells, &mut edits, csg, jar, fill, looks);
        }
    }
    edits
}
