//! Latent-space targeted guidance: during a window of early steps, drive each CSG node's
//! region toward the node's own conditioning, and push effects out of the regions where
//! physics forbids them (a reflection below or beside a small mirror, a shadow on the side of
//! the light).
//!
//! Ours (the paper names "targeted guidance in the visual latent space" and nothing more):
//! - a node with a layout box gets a region term `+node_weight` with its own phrase ("a red
//!   ball", "a small mirror") inside its box;
//! - an implied effect gets a region term `-effect_weight` with the prompt's own conditioning
//!   (what produces the effect) inside each forbidden box that `forbidden_boxes` derives from
//!   the layout: below and beside the bounding surface for a reflection, the side toward the
//!   light for a shadow.
//!
//! Boxes are `[x0, y0, x1, y1]` in [0, 1] image coordinates, as in the CSG's `layout`.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use lina_csg::{Class, Csg, Light, Node, Predicate};
use lina_runtime::error::Result;
use lina_runtime::pipeline::{ModelCall, RegionTerm, StableDiffusion, StepHook};

pub type Box4 = [f32; 4];

/// The words that condition a node on its own: "a red ball", "three blue cubes", "a small
/// mirror". `None` for nodes without an appearance of their own (the floor, effects).
pub fn phrase(node: &Node) -> Option<String> {
    if node.implied || node.class == Class::Floor {
        return None;
    }
    let mut words = Vec::new();
    if let Some(size) = node.size.filter(|_| !node.class.is_object()) {
        words.push(match size {
            lina_csg::Size::Small => "small",
            lina_csg::Size::Medium => "medium",
            lina_csg::Size::Large => "large",
        });
    }
    if let Some(c) = node.colour {
        words.push(c.word());
    }
    let noun = if node.count > 1 {
        format!("{}s", node.noun())
    } else {
        node.noun().to_string()
    };
    let lead = match node.count {
        1 if matches!(node.class, Class::Sand | Class::Water) => String::new(),
        1 => "a ".to_string(),
        n => format!(
            "{} ",
            ["", "one", "two", "three", "four", "five"]
                .get(n as usize)
                .unwrap_or(&"many")
        ),
    };
    Some(format!(
        "{lead}{}{noun}",
        words.iter().map(|w| format!("{w} ")).collect::<String>()
    ))
}

/// The box `layout` (one entry per node of `csg`) gives node `id`.
pub fn box_of(csg: &Csg, layout: &[Option<Box4>], id: &str) -> Option<Box4> {
    let i = csg.nodes.iter().position(|n| n.id == id)?;
    layout.get(i).copied().flatten()
}

/// The boxes where an implied effect may not appear, from the boxes of the nodes it depends
/// on: `(effect id, box)` pairs.
pub fn forbidden_boxes(csg: &Csg, layout: &[Option<Box4>]) -> Vec<(String, Box4)> {
    let at = |node: &Node| box_of(csg, layout, &node.id);
    let target = |subject: &str, p: Predicate| csg.object_of(subject, p);
    let mut out = Vec::new();
    for effect in csg.nodes.iter().filter(|n| n.implied) {
        match effect.class {
            Class::Reflection => {
                let (Some(source), Some(surface)) = (
                    target(&effect.id, Predicate::ReflectionOf).and_then(at),
                    target(&effect.id, Predicate::BoundedBy).and_then(at),
                ) else {
                    continue;
                };
                // A full mirror image reaches as far below the surface's top as the object
                // is tall; whatever of that lies outside the surface is forbidden.
                let reach = (surface[1] + (source[3] - source[1])).min(1.0);
                let (x0, x1) = (source[0], source[2]);
                if reach > surface[3] {
                    out.push((effect.id.clone(), [x0, surface[3], x1, reach]));
                }
                if x0 < surface[0] {
                    out.push((effect.id.clone(), [x0, surface[1], surface[0], reach]));
                }
                if x1 > surface[2] {
                    out.push((effect.id.clone(), [surface[2], surface[1], x1, reach]));
                }
            }
            Class::Shadow => {
                let (Some(source), Some(light)) = (
                    target(&effect.id, Predicate::ShadowOf).and_then(at),
                    csg.light,
                ) else {
                    continue;
                };
                let w = source[2] - source[0];
                let cx = 0.5 * (source[0] + source[2]);
                let (y0, y1) = ((source[3] - 0.03).max(0.0), (source[3] + 0.1).min(1.0));
                match light {
                    Light::Left => out.push((
                        effect.id.clone(),
                        [(cx - w).max(0.0), y0, cx - 0.25 * w, y1],
                    )),
                    Light::Right => out.push((
                        effect.id.clone(),
                        [cx + 0.25 * w, y0, (cx + w).min(1.0), y1],
                    )),
                    Light::Above => {
                        out.push((effect.id.clone(), [(cx - 1.5 * w).max(0.0), y0, cx - w, y1]));
                        out.push((effect.id.clone(), [cx + w, y0, (cx + 1.5 * w).min(1.0), y1]));
                    }
                }
            }
            _ => {}
        }
    }
    out.retain(|(_, b)| b[2] > b[0] && b[3] > b[1]);
    out
}

/// A mask [1, 1, h, w] of the latent cells whose centres lie inside any of `boxes`.
pub fn mask(boxes: &[Box4], h: usize, w: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let values: Vec<f32> = (0..h * w)
        .map(|i| {
            let (x, y) = (
                ((i % w) as f32 + 0.5) / w as f32,
                ((i / w) as f32 + 0.5) / h as f32,
            );
            boxes
                .iter()
                .any(|b| x >= b[0] && x < b[2] && y >= b[1] && y < b[3]) as u8 as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, h, w]), device)
}

/// The hook: adds the region terms inside `window`.
pub struct RegionGuidance {
    terms: Vec<RegionTerm>,
    window: Range<usize>,
    /// What each term does, for reports: "+a red ball in [..]", "-prompt in [..]".
    pub described: Vec<String>,
}

impl RegionGuidance {
    /// Region terms for `csg` with node boxes `layout` (one entry per node), on latents of
    /// `latent` = (h, w) cells.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipe: &StableDiffusion,
        prompt: &str,
        csg: &Csg,
        layout: &[Option<Box4>],
        node_weight: f64,
        effect_weight: f64,
        clip_skip: usize,
        window: Range<usize>,
        latent: (usize, usize),
    ) -> Result<Self> {
        let device = pipe.device();
        let (h, w) = latent;
        let mut terms = Vec::new();
        let mut described = Vec::new();
        if node_weight != 0.0 {
            for (node, b) in csg.nodes.iter().zip(layout) {
                let (Some(words), Some(b)) = (phrase(node), b) else {
                    continue;
                };
                let (context, _) = pipe.encode_text(&words, clip_skip)?;
                terms.push(RegionTerm {
                    context,
                    mask: mask(&[*b], h, w, device),
                    weight: node_weight,
                });
                described.push(format!("+{node_weight} \"{words}\" in {b:?}"));
            }
        }
        let forbidden = forbidden_boxes(csg, layout);
        if effect_weight != 0.0 && !forbidden.is_empty() {
            let (context, _) = pipe.encode_text(prompt, clip_skip)?;
            let boxes: Vec<Box4> = forbidden.iter().map(|(_, b)| *b).collect();
            terms.push(RegionTerm {
                context,
                mask: mask(&boxes, h, w, device),
                weight: -effect_weight,
            });
            for (effect, b) in &forbidden {
                described.push(format!(
                    "-{effect_weight} prompt where {effect} may not be: {b:?}"
                ));
            }
        }
        Ok(Self {
            terms,
            window,
            described,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

impl StepHook for RegionGuidance {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        if self.window.contains(&call.step) {
            call.regions.extend(self.terms.iter().cloned());
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use lina_csg::parse::parse;

    #[test]
    fn phrases_name_nodes_by_their_attributes() {
        let csg = parse("three blue cubes").unwrap();
        assert_eq!(phrase(&csg.nodes[0]).unwrap(), "three blue cubes");
        let csg = parse("a red ball on a small mirror").unwrap();
        assert_eq!(phrase(csg.node("object").unwrap()).unwrap(), "a red ball");
        assert_eq!(
            phrase(csg.node("surface").unwrap()).unwrap(),
            "a small mirror"
        );
        assert!(phrase(csg.node("reflection_of_object").unwrap()).is_none());
    }

    #[test]
    fn a_reflection_may_not_spill_below_or_beside_a_small_mirror() {
        let csg = parse("a red ball on a small mirror").unwrap();
        let mut layout = vec![None; csg.nodes.len()];
        let at = |id: &str| csg.nodes.iter().position(|n| n.id == id).unwrap();
        layout[at("object")] = Some([0.4, 0.5, 0.6, 0.7]);
        layout[at("surface")] = Some([0.45, 0.72, 0.55, 0.8]);
        let boxes = forbidden_boxes(&csg, &layout);
        assert_eq!(boxes.len(), 3, "{boxes:?}");
        // Below the mirror, down to a full mirror image's reach.
        assert!(
            boxes
                .iter()
                .any(|(_, b)| b[1] == 0.8 && (b[3] - 0.92).abs() < 1e-6)
        );
        // Nothing forbidden inside the mirror.
        for (_, b) in &boxes {
            let inside = b[0] >= 0.45 && b[2] <= 0.55 && b[1] >= 0.72 && b[3] <= 0.8;
            assert!(!inside, "{b:?}");
        }
    }

    #[test]
    fn a_shadow_may_not_fall_toward_the_light() {
        let csg = parse("a red ball lit from the left").unwrap();
        let mut layout = vec![None; csg.nodes.len()];
        let at = |id: &str| csg.nodes.iter().position(|n| n.id == id).unwrap();
        layout[at("object1")] = Some([0.4, 0.5, 0.6, 0.7]);
        let boxes = forbidden_boxes(&csg, &layout);
        assert_eq!(boxes.len(), 1);
        assert!(boxes[0].1[2] <= 0.5, "left of the centre: {boxes:?}");
    }

    #[test]
    fn masks_cover_the_cells_inside_boxes() {
        let device = lina_runtime::device::cpu();
        let m = mask(&[[0.0, 0.0, 0.5, 0.25]], 4, 4, &device);
        let v = m.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v.iter().sum::<f32>(), 2.0);
        assert_eq!(&v[0..4], &[1.0, 1.0, 0.0, 0.0]);
    }
}
