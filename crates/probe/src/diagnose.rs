//! Diagnostics: where in the image and when in the trajectory a scene's causal structure
//! forms.
//!
//! - `reinpaint`, CSG-guided masked inpainting: mask one node's region of an image (for an
//!   implied effect, the whole region where physics allows or forbids it) and regenerate it
//!   from a chosen point of the schedule, then judge it again with the checker.
//! - `step_sweep`: apply a plan's prompt- and latent-space guidance at one step only, for each
//!   step in turn, and measure how much the final image moves and whether it passes.
//!
//! Both are ours; the paper names masked inpainting and step-wise analyses, not their form.

use serde::Serialize;

use crate::check::{Verdict, check, locate};
use lina::region::{Box4, forbidden_boxes};
use lina::{Plan, generate};
use lina_csg::Csg;
use lina_runtime::error::{Error, Result};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};

/// The boxes a node's re-inpainting mask covers: the node's own box; for an implied effect,
/// the boxes of the nodes it relates to (its source and bounding surface) and the boxes
/// where it may not be.
pub fn node_region(csg: &Csg, layout: &[Option<Box4>], node: &str) -> Result<Vec<Box4>> {
    let index = csg
        .nodes
        .iter()
        .position(|n| n.id == node)
        .ok_or_else(|| Error::InvalidInput(format!("the CSG has no node \"{node}\"")))?;
    let mut boxes: Vec<Box4> = layout[index].into_iter().collect();
    if csg.nodes[index].implied {
        for r in csg.relations.iter().filter(|r| r.subject == node) {
            if let Some(i) = csg.nodes.iter().position(|n| n.id == r.object)
                && let Some(b) = layout[i]
            {
                boxes.push(b);
            }
        }
        boxes.extend(
            forbidden_boxes(csg, layout)
                .into_iter()
                .filter(|(effect, _)| effect == node)
                .map(|(_, b)| b),
        );
    }
    if boxes.is_empty() {
        return Err(Error::InvalidInput(format!(
            "node \"{node}\" has no region in this image (not found, and no layout given)"
        )));
    }
    Ok(boxes)
}

/// A per-pixel mask (1 inside any box grown by `grow` pixels) for a `width` x `height` image.
pub fn pixel_mask(boxes: &[Box4], width: usize, height: usize, grow: f32) -> Vec<f32> {
    let (gx, gy) = (grow / width as f32, grow / height as f32);
    (0..width * height)
        .map(|i| {
            let x = ((i % width) as f32 + 0.5) / width as f32;
            let y = ((i / width) as f32 + 0.5) / height as f32;
            boxes
                .iter()
                .any(|b| x >= b[0] - gx && x < b[2] + gx && y >= b[1] - gy && y < b[3] + gy)
                as u8 as f32
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reinpainted {
    #[serde(skip)]
    pub image: Image,
    /// The regenerated pixels (1) and the kept ones (0).
    #[serde(skip)]
    pub mask: Vec<f32>,
    pub before: Vec<Verdict>,
    pub after: Vec<Verdict>,
}

/// Regenerates `node`'s region of `image` from `strength` of the schedule on (1 redraws it
/// from pure noise), under `plan`, and checks the image before and after. `cancel` stops it
/// between steps.
#[allow(clippy::too_many_arguments)]
pub async fn reinpaint(
    pipe: &StableDiffusion,
    opts: &GenerateOptions,
    csg: &Csg,
    plan: &Plan,
    image: &Image,
    node: &str,
    strength: f64,
    cancel: &CancelToken,
) -> Result<Reinpainted> {
    let layout: Vec<Option<Box4>> = if csg.nodes.iter().any(|n| n.layout.is_some()) {
        csg.nodes.iter().map(|n| n.layout).collect()
    } else {
        locate(image, csg)
    };
    let boxes = node_region(csg, &layout, node)?;
    let mask = pixel_mask(&boxes, image.width, image.height, 2.0);
    // The region guidance then uses the same layout the mask came from.
    let mut csg = csg.clone();
    for (n, b) in csg.nodes.iter_mut().zip(&layout) {
        n.layout = *b;
    }
    let csg = &csg;
    let mut opts = opts.clone();
    opts.init_image = Some(image.clone());
    opts.mask = Some(mask.clone());
    opts.strength = strength;
    opts.width = Some(image.width);
    opts.height = Some(image.height);
    let out = generate(pipe, &opts, csg, plan, &mut NoHook, cancel).await?;
    Ok(Reinpainted {
        before: check(image, csg),
        after: check(&out.generated.image, csg),
        image: out.generated.image,
        mask,
    })
}

/// One point of a step sweep.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPoint {
    /// The only step the guidance acted at.
    pub step: usize,
    /// Mean absolute pixel change from the unguided image, in 0..255.
    pub change: f64,
    pub passed: usize,
    pub checks: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    pub baseline_passed: usize,
    pub checks: usize,
    pub points: Vec<SweepPoint>,
}

/// Applies `plan`'s prompt- and latent-space guidance at one step at a time (the schedule
/// warp and the guidance factor are left out: neither is local to a step) and records each
/// result. `cancel` stops it between steps.
pub async fn step_sweep(
    pipe: &StableDiffusion,
    opts: &GenerateOptions,
    csg: &Csg,
    plan: &Plan,
    cancel: &CancelToken,
) -> Result<Sweep> {
    let baseline_plan = Plan::default();
    let base = generate(pipe, opts, csg, &baseline_plan, &mut NoHook, cancel).await?;
    let steps = base.timesteps.len();
    let reference = base.generated.image;
    let baseline = check(&reference, csg);
    let mut points = Vec::with_capacity(steps);
    for step in 0..steps {
        let at = [step as f64 / steps as f64, (step + 1) as f64 / steps as f64];
        let single = Plan {
            warp: 1.0,
            guidance: 1.0,
            prompt_window: at,
            region_window: at,
            ..plan.clone()
        };
        let out = generate(pipe, opts, csg, &single, &mut NoHook, cancel).await?;
        let image = out.generated.image;
        let change = image
            .rgb
            .iter()
            .zip(&reference.rgb)
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / image.rgb.len() as f64;
        let verdicts = check(&image, csg);
        points.push(SweepPoint {
            step,
            change,
            passed: verdicts.iter().filter(|v| v.passed).count(),
            checks: verdicts.len(),
        });
    }
    Ok(Sweep {
        baseline_passed: baseline.iter().filter(|v| v.passed).count(),
        checks: baseline.len(),
        points,
    })
}
