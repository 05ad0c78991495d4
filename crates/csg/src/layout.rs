//! A default layout from a graph's relations: where each named node would sit in a plain
//! composition that satisfies them, as a box in [0, 1] image coordinates. LINA's layout
//! controls steer toward these boxes where the user drew none; the page shows them for the
//! user to drag.
//!
//! Ours, and deliberately simple: the nodes stand side by side in the order the prompt names
//! them, then each relation, in order, moves its subject (and, where the relation fixes both,
//! its object) to where the relation puts it: on top of, inside, above, below, left or right
//! of, behind, far from. A lamp hangs in the top corner on the side the graph's light comes
//! from (the middle for a light from above), out of the row: a light source lights the scene
//! from above it, it does not stand beside the objects. A box the graph already has is kept
//! and never moved. Implied effects get none: their regions follow from their sources' boxes
//! (`lina::region`).

use super::{Class, Csg, Light, Predicate};

/// `[x0, y0, x1, y1]` in [0, 1] image coordinates, as in the CSG's `layout`.
pub type Box4 = [f32; 4];

/// Every node's box: its own where it has one; a derived one for the nodes the prompt names;
/// `None` for implied effects.
pub fn derive(csg: &Csg) -> Vec<Option<Box4>> {
    let fixed: Vec<bool> = csg.nodes.iter().map(|n| n.layout.is_some()).collect();
    let mut boxes: Vec<Option<Box4>> = csg.nodes.iter().map(|n| n.layout).collect();

    // Grounds span the bottom of the image; lamps hang above; the rest stand side by side,
    // in order.
    let standing: Vec<usize> = (0..csg.nodes.len())
        .filter(|&i| {
            !fixed[i]
                && !csg.nodes[i].implied
                && !matches!(csg.nodes[i].class, Class::Floor | Class::Lamp)
        })
        .collect();
    let column = 0.84 / standing.len().max(1) as f32;
    for (k, &i) in standing.iter().enumerate() {
        let x0 = 0.08 + k as f32 * column;
        boxes[i] = Some([x0 + 0.02, 0.3, x0 + column - 0.02, 0.85]);
    }
    for (i, node) in csg.nodes.iter().enumerate() {
        if fixed[i] || node.implied {
            continue;
        }
        match node.class {
            Class::Floor => boxes[i] = Some([0.0, 0.6, 1.0, 1.0]),
            Class::Lamp => {
                boxes[i] = Some(match csg.light {
                    Some(Light::Right) => [0.72, 0.03, 0.97, 0.28],
                    Some(Light::Above) => [0.375, 0.03, 0.625, 0.28],
                    Some(Light::Left) | None => [0.03, 0.03, 0.28, 0.28],
                })
            }
            _ => {}
        }
    }

    let index = |id: &str| csg.nodes.iter().position(|n| n.id == id);
    for r in &csg.relations {
        let (Some(s), Some(o)) = (index(&r.subject), index(&r.object)) else {
            continue;
        };
        let (Some(sb), Some(ob)) = (boxes[s], boxes[o]) else {
            continue;
        };
        let (mut new_s, mut new_o) = (sb, ob);
        let centre = |b: Box4| 0.5 * (b[0] + b[2]);
        let width = |b: Box4| b[2] - b[0];
        let at_x = |b: Box4, cx: f32, w: f32| [cx - w / 2.0, b[1], cx + w / 2.0, b[3]];
        let at_y = |b: Box4, y0: f32, y1: f32| [b[0], y0, b[2], y1];
        match r.predicate {
            Predicate::On => {
                // The support low and wide; the subject standing on its top edge.
                new_o = at_y(ob, 0.55, 0.92);
                if csg.nodes[o].class != Class::Floor {
                    new_o = at_x(new_o, centre(ob), width(ob).clamp(0.5, 0.9));
                }
                let w = (0.6 * width(new_o)).min(width(sb)).max(0.2);
                new_s = at_y(at_x(sb, centre(new_o), w), 0.2, 0.6);
            }
            Predicate::In => {
                let (w, h) = (width(ob), ob[3] - ob[1]);
                new_s = [
                    ob[0] + 0.2 * w,
                    ob[1] + 0.25 * h,
                    ob[2] - 0.2 * w,
                    ob[3] - 0.1 * h,
                ];
            }
            Predicate::Above | Predicate::Below => {
                let (top, bottom) = ((0.08, 0.45), (0.55, 0.94));
                let (s_y, o_y) = if r.predicate == Predicate::Above {
                    (top, bottom)
                } else {
                    (bottom, top)
                };
                new_s = at_y(at_x(sb, centre(ob), width(sb)), s_y.0, s_y.1);
                new_o = at_y(ob, o_y.0, o_y.1);
            }
            Predicate::LeftOf | Predicate::RightOf | Predicate::FarFrom => {
                let (left, right) = if r.predicate == Predicate::FarFrom {
                    ((0.03, 0.33), (0.67, 0.97))
                } else {
                    ((0.05, 0.47), (0.53, 0.95))
                };
                let (s_x, o_x) = if r.predicate == Predicate::RightOf {
                    (right, left)
                } else {
                    (left, right)
                };
                new_s = [s_x.0, sb[1], s_x.1, sb[3]];
                new_o = [o_x.0, ob[1], o_x.1, ob[3]];
            }
            Predicate::Behind => {
                // Higher up and narrower, partly covered by the front one.
                new_o = at_y(ob, 0.4, 0.92);
                new_s = at_y(
                    at_x(sb, centre(new_o) + 0.1, 0.8 * width(new_o)),
                    0.15,
                    0.62,
                );
            }
            Predicate::CloseTo
            | Predicate::ReflectionOf
            | Predicate::BoundedBy
            | Predicate::ShadowOf => {}
        }
        if !fixed[s] {
            boxes[s] = Some(clamp(new_s));
        }
        if !fixed[o] {
            boxes[o] = Some(clamp(new_o));
        }
    }
    boxes
}

/// Inside the image and at least 5% of it on each side.
fn clamp(b: Box4) -> Box4 {
    let side = |lo: f32, hi: f32| {
        let (lo, hi) = (lo.clamp(0.0, 0.95), hi.clamp(0.0, 1.0));
        (lo, hi.max(lo + 0.05))
    };
    let (x0, x1) = side(b[0], b[2]);
    let (y0, y1) = side(b[1], b[3]);
    [x0, y0, x1, y1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Node;

    fn graph(nodes: &[(&str, Class)], relations: &[(&str, Predicate, &str)]) -> Csg {
        let mut csg = Csg::new();
        for (id, class) in nodes {
            csg.nodes.push(Node::new(id, *class));
        }
        for (s, p, o) in relations {
            csg.relate(s, *p, o);
        }
        csg
    }

    fn boxes(csg: &Csg) -> Vec<Box4> {
        derive(csg).into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn relations_place_their_ends() {
        let on = boxes(&graph(
            &[("a", Class::Ball), ("b", Class::Table)],
            &[("a", Predicate::On, "b")],
        ));
        assert!(
            (on[0][3] - on[1][1]).abs() < 0.1,
            "a stands on b's top: {on:?}"
        );
        assert!(
            on[0][0] >= on[1][0] && on[0][2] <= on[1][2],
            "a over b: {on:?}"
        );

        let left = boxes(&graph(
            &[("a", Class::Ball), ("b", Class::Cube)],
            &[("a", Predicate::RightOf, "b")],
        ));
        assert!(left[0][0] > left[1][2], "a right of b: {left:?}");

        let under = boxes(&graph(
            &[("a", Class::Ball), ("b", Class::Table)],
            &[("a", Predicate::Below, "b")],
        ));
        assert!(under[0][1] > under[1][3], "a below b: {under:?}");

        let inside = boxes(&graph(
            &[("a", Class::Ball), ("b", Class::Jar)],
            &[("a", Predicate::In, "b")],
        ));
        let within =
            |a: Box4, b: Box4| a[0] >= b[0] && a[1] >= b[1] && a[2] <= b[2] && a[3] <= b[3];
        assert!(within(inside[0], inside[1]), "{inside:?}");
        for b in on.iter().chain(&left).chain(&under).chain(&inside) {
            assert!(
                b[0] >= 0.0
                    && b[1] >= 0.0
                    && b[2] <= 1.0
                    && b[3] <= 1.0
                    && b[0] < b[2]
                    && b[1] < b[3]
            );
        }
    }

    #[test]
    fn a_lamp_hangs_above_on_its_light_s_side() {
        for (light, left) in [(Light::Left, true), (Light::Right, false)] {
            let mut csg = graph(
                &[
                    ("a", Class::Cube),
                    ("b", Class::Ball),
                    ("lamp", Class::Lamp),
                ],
                &[],
            );
            csg.light = Some(light);
            let b = boxes(&csg);
            assert!(b[2][3] < b[0][1] && b[2][3] < b[1][1], "above: {b:?}");
            assert_eq!(b[2][2] < 0.5, left, "{light:?}: {b:?}");
            // The objects share the row without it: two columns, not three.
            assert!(b[0][2] - b[0][0] > 0.3, "{b:?}");
        }
    }

    #[test]
    fn given_boxes_stay_and_effects_get_none() {
        let mut csg = graph(
            &[("a", Class::Ball), ("b", Class::Mirror)],
            &[("a", Predicate::On, "b")],
        );
        csg.nodes[1].layout = Some([0.1, 0.1, 0.2, 0.2]);
        crate::rules::add_implied(&mut csg);
        let derived = derive(&csg);
        assert_eq!(derived[1], Some([0.1, 0.1, 0.2, 0.2]));
        assert!(derived[0].is_some());
        assert_eq!(derived.len(), csg.nodes.len());
        assert!(
            csg.nodes
                .iter()
                .zip(&derived)
                .all(|(n, b)| n.implied == b.is_none()),
            "{derived:?}"
        );
    }
}
