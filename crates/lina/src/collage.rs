//! The collage: the things a prompt names, each drawn alone by the model, placed where the
//! scene graph's layout puts them, and the whole prompt redrawn from that start.
//!
//! Ours (the paper does not describe it; in the spirit of Collage Diffusion and SDEdit).
//! Handed a scene's exact answer with half the run left, the embedded model keeps the
//! layouts of two things and the counts of a row that it does not draw from noise
//! (docs/lina.md, "The answer at half the run"); and it draws one thing alone well. So the
//! start is built from the model's own drawings: each thing from its own phrase ("a red
//! ball"), at the run's seed, in a few steps; cut from its background; pasted at its size,
//! standing on the drawings' floor line, at its box's centre in the graph's derived layout
//! (a counted thing repeated across its span). Every pixel is the model's, the arrangement
//! the graph's; nothing reads a checker, a palette or a rendered scene.
//!
//! It applies only where the things stand apart. Two drawings pasted to meet (a stack, a
//! thing partly hidden behind another) were redrawn as one blob in the pre-screen, so a
//! graph with `on`, `in`, `behind` and the like between things, or naming anything but
//! things (a jar, a mirror, sand), gets no collage and the plain start. The cut reads each
//! row's background as its median colour, which suits the plain backdrops of the embedded
//! model's world and not a photograph's.

use lina_csg::{Class, Csg, Predicate, Size};
use lina_runtime::error::{Error, Result};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;

/// Steps each thing is drawn in: a thing alone on a plain backdrop is settled in a few, and
/// at 8 the pieces of two things cost 32 evaluations (0.8x of a 20-step run).
pub const THING_STEPS: usize = 8;

/// How far (of 255, in any channel) a pixel must lie from its row's background to belong
/// to the thing.
const THRESHOLD: i32 = 48;

/// The span a lone counted thing's row covers, as fractions of the width: its derived box
/// is narrower, and the pre-screen's balls packed into it were redrawn merged.
const ROW_SPAN: [f32; 2] = [0.03, 0.97];

/// One thing drawn alone: the drawing, each row's background colour, and the thing's box in
/// pixels, `[x0, y0, x1, y1)`.
#[derive(Debug, Clone)]
pub struct Piece {
    image: Image,
    background: Vec<[u8; 3]>,
    bbox: [usize; 4],
}

impl Piece {
    /// The thing in `image`: the pixels far from their row's median colour. `None` where
    /// there are none.
    pub fn cut(image: Image) -> Option<Self> {
        let (w, h) = (image.width, image.height);
        let background: Vec<[u8; 3]> = (0..h)
            .map(|y| {
                [0, 1, 2].map(|c| {
                    let mut row: Vec<u8> = (0..w).map(|x| image.rgb[(y * w + x) * 3 + c]).collect();
                    row.sort_unstable();
                    row[w / 2]
                })
            })
            .collect();
        let mut bbox = [w, h, 0, 0];
        for y in 0..h {
            for x in 0..w {
                if far(&image, &background, x, y) {
                    bbox = [
                        bbox[0].min(x),
                        bbox[1].min(y),
                        bbox[2].max(x + 1),
                        bbox[3].max(y + 1),
                    ];
                }
            }
        }
        (bbox[2] > bbox[0]).then_some(Self {
            image,
            background,
            bbox,
        })
    }

    /// The thing's box in pixels, `[x0, y0, x1, y1)`.
    pub fn bbox(&self) -> [usize; 4] {
        self.bbox
    }
}

fn far(image: &Image, background: &[[u8; 3]], x: usize, y: usize) -> bool {
    let k = (y * image.width + x) * 3;
    (0..3).any(|c| (image.rgb[k + c] as i32 - background[y][c] as i32).abs() > THRESHOLD)
}

/// A thing of the collage: its phrase and the horizontal centres (fractions of the width)
/// of its copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Thing {
    pub phrase: String,
    pub centres: Vec<f32>,
}

/// The things of `csg` and where they stand, or `None` where the graph names anything but
/// things or relates two things by more than which side of the other they stand on.
pub fn arrange(csg: &Csg) -> Option<Vec<Thing>> {
    let named: Vec<usize> = (0..csg.nodes.len())
        .filter(|&i| !csg.nodes[i].implied && csg.nodes[i].class != Class::Floor)
        .collect();
    let thing = |c: Class| c.is_object() || matches!(c, Class::Person | Class::Thing);
    if named.is_empty() || named.iter().any(|&i| !thing(csg.nodes[i].class)) {
        return None;
    }
    let apart = |p: Predicate| {
        matches!(
            p,
            Predicate::LeftOf | Predicate::RightOf | Predicate::FarFrom | Predicate::CloseTo
        )
    };
    let between_things = |id: &str| named.iter().any(|&i| csg.nodes[i].id == id);
    if csg
        .relations
        .iter()
        .any(|r| between_things(&r.subject) && between_things(&r.object) && !apart(r.predicate))
    {
        return None;
    }
    let boxes = lina_csg::layout::derive(csg);
    named
        .iter()
        .map(|&i| {
            let node = &csg.nodes[i];
            let b = boxes[i]?;
            let copies = node.count.max(1) as usize;
            let [x0, x1] = if named.len() == 1 && copies > 1 {
                ROW_SPAN
            } else {
                [b[0], b[2]]
            };
            let centres = (0..copies)
                .map(|j| x0 + (j as f32 + 0.5) * (x1 - x0) / copies as f32)
                .collect();
            Some(Thing {
                phrase: phrase(csg, i),
                centres,
            })
        })
        .collect()
}

/// "a [size] [colour] noun": one of the node's things, alone.
fn phrase(csg: &Csg, i: usize) -> String {
    let node = &csg.nodes[i];
    let mut words = vec!["a"];
    match node.size {
        Some(Size::Small) => words.push("small"),
        Some(Size::Large) => words.push("big"),
        _ => {}
    }
    if let Some(colour) = node.colour {
        words.push(colour.word());
    }
    let noun = match node.class {
        Class::Thing => node.name.as_deref().unwrap_or("thing"),
        class => class.word(),
    };
    words.push(noun);
    words.join(" ")
}

/// The start: the first piece's drawing with its thing wiped out, row by row, and every
/// piece pasted at its thing's centres, standing on the first thing's floor line.
pub fn compose(pieces: &[Piece], things: &[Thing]) -> Result<Image> {
    let first = pieces
        .first()
        .ok_or_else(|| Error::InvalidInput("a collage needs at least one piece".into()))?;
    let (w, h) = (first.image.width, first.image.height);
    if pieces.len() != things.len()
        || pieces
            .iter()
            .any(|p| (p.image.width, p.image.height) != (w, h))
    {
        return Err(Error::InvalidInput(
            "a collage needs one piece per thing, all of one size".into(),
        ));
    }
    let mut canvas = first.image.clone();
    let [x0, y0, x1, y1] = first.bbox;
    for y in y0.saturating_sub(1)..(y1 + 1).min(h) {
        for x in x0.saturating_sub(1)..(x1 + 1).min(w) {
            canvas.rgb[(y * w + x) * 3..][..3].copy_from_slice(&first.background[y]);
        }
    }
    let floor = first.bbox[3];
    for (piece, thing) in pieces.iter().zip(things) {
        let [px0, py0, px1, py1] = piece.bbox;
        let (pw, ph) = (px1 - px0, py1 - py0);
        let top = floor.saturating_sub(ph);
        for &centre in &thing.centres {
            let left = (centre * w as f32 - pw as f32 / 2.0).round().max(0.0) as usize;
            for y in 0..ph {
                for x in 0..pw {
                    let (sx, sy, tx, ty) = (px0 + x, py0 + y, left + x, top + y);
                    if tx < w && ty < h && far(&piece.image, &piece.background, sx, sy) {
                        let k = (sy * w + sx) * 3;
                        canvas.rgb[(ty * w + tx) * 3..][..3]
                            .copy_from_slice(&piece.image.rgb[k..k + 3]);
                    }
                }
            }
        }
    }
    Ok(canvas)
}

/// What a collage did to a run.
pub struct Started {
    /// The run's options: with the collage as the start at the plan's strength, or as given.
    pub opts: GenerateOptions,
    /// UNet evaluations spent drawing the pieces.
    pub evaluations: usize,
    /// In words, where the plan asked for a collage.
    pub described: Option<String>,
}

/// `opts` started from the collage of `csg` at img2img strength `strength`, the pieces drawn
/// at the run's seed, size and guidance; `opts` as given where the graph has no collage
/// ([`arrange`]) or the model drew a piece with nothing to cut.
pub async fn start(
    pipe: &StableDiffusion,
    opts: &GenerateOptions,
    csg: &Csg,
    strength: f64,
    cancel: &CancelToken,
) -> Result<Started> {
    if opts.init_image.is_some()
        || opts.mask.is_some()
        || opts.initial_latents.is_some()
        || opts.handoff.is_some()
    {
        return Err(Error::InvalidInput(
            "plan: collage draws its own start; it cannot be combined with an init image, a \
             mask, initial latents or a handoff"
                .into(),
        ));
    }
    let unchanged = |why: &str| Started {
        opts: opts.clone(),
        evaluations: 0,
        described: Some(format!("collage off: {why}")),
    };
    let Some(things) = arrange(csg) else {
        return Ok(unchanged(
            "the graph names something other than things standing apart",
        ));
    };
    // A redraw of no step would keep the paste as it is; so few steps get the plain start
    // (a predicted plan must run on every schedule, the shortest included).
    let steps = opts.timesteps.count();
    if lina_runtime::pipeline::strength_steps(steps, strength) == 0 {
        return Ok(unchanged(&format!(
            "strength {strength} redraws none of the {steps} steps"
        )));
    }
    let mut pieces = Vec::with_capacity(things.len());
    let mut evaluations = 0;
    for thing in &things {
        let alone = GenerateOptions {
            prompt: thing.phrase.clone(),
            timesteps: Timesteps::Count(THING_STEPS),
            step_noise: None,
            denoising_end: None,
            ..opts.clone()
        };
        let drawn = pipe.generate(&alone, &mut NoHook, cancel).await?;
        evaluations += drawn.evaluations;
        match Piece::cut(drawn.image) {
            Some(piece) => pieces.push(piece),
            None => {
                return Ok(Started {
                    evaluations,
                    ..unchanged(&format!("nothing to cut from {:?}", thing.phrase))
                });
            }
        }
    }
    let mut started = opts.clone();
    started.init_image = Some(compose(&pieces, &things)?);
    started.strength = strength;
    let phrases: Vec<&str> = things.iter().map(|t| t.phrase.as_str()).collect();
    Ok(Started {
        opts: started,
        evaluations,
        described: Some(format!(
            "collage of {phrases:?} drawn alone in {THING_STEPS} steps, redrawn from strength {strength}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: [u8; 3] = [236, 232, 220];
    const FLOOR: [u8; 3] = [120, 120, 128];

    /// A 64x64 backdrop (wall above row 44, floor below) with filled squares.
    fn drawing(squares: &[([usize; 4], [u8; 3])]) -> Image {
        let (w, h) = (64, 64);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let square = squares
                    .iter()
                    .find(|(b, _)| x >= b[0] && x < b[2] && y >= b[1] && y < b[3]);
                rgb.extend(match square {
                    Some((_, c)) => *c,
                    None if y < 44 => WALL,
                    None => FLOOR,
                });
            }
        }
        Image {
            width: w,
            height: h,
            rgb,
        }
    }

    fn pixel(im: &Image, x: usize, y: usize) -> [u8; 3] {
        let k = (y * im.width + x) * 3;
        [im.rgb[k], im.rgb[k + 1], im.rgb[k + 2]]
    }

    #[test]
    fn a_piece_is_cut_from_each_rows_own_background_even_at_the_edge() {
        let piece = Piece::cut(drawing(&[([0, 36, 8, 44], [200, 30, 30])])).unwrap();
        assert_eq!(piece.bbox(), [0, 36, 8, 44]);
        let middle = Piece::cut(drawing(&[([28, 30, 36, 44], [30, 30, 200])])).unwrap();
        assert_eq!(middle.bbox(), [28, 30, 36, 44]);
        assert!(Piece::cut(drawing(&[])).is_none());
    }

    #[test]
    fn things_standing_apart_are_arranged_and_things_that_touch_are_not() {
        let csg = |p: &str| lina_csg::parse::parse(p).unwrap();
        let pair = arrange(&csg("a red ball to the left of a blue cube")).unwrap();
        assert_eq!(
            pair.iter().map(|t| t.phrase.as_str()).collect::<Vec<_>>(),
            ["a red ball", "a blue cube"]
        );
        assert!(pair[0].centres[0] < 0.5 && pair[1].centres[0] > 0.5);
        let row = arrange(&csg("four yellow balls")).unwrap();
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].centres.len(), 4);
        assert!(row[0].centres.windows(2).all(|c| c[1] - c[0] > 0.2));
        for touching in [
            "a red ball on a blue cube",
            "a green cube partly hidden behind a red cone",
            "a person in the sand, close to the water",
            "a jar more than half full of sand",
        ] {
            assert!(arrange(&csg(touching)).is_none(), "{touching}");
        }
    }

    #[test]
    fn the_collage_stands_each_thing_at_its_centre_on_the_floor_line() {
        let red = [200, 30, 30];
        let blue = [30, 30, 200];
        let pieces = [
            Piece::cut(drawing(&[([30, 38, 36, 44], red)])).unwrap(),
            Piece::cut(drawing(&[([20, 30, 28, 40], blue)])).unwrap(),
        ];
        let things = [
            Thing {
                phrase: "a red ball".into(),
                centres: vec![0.25],
            },
            Thing {
                phrase: "a blue cube".into(),
                centres: vec![0.625, 0.875],
            },
        ];
        let canvas = compose(&pieces, &things).unwrap();
        // The red thing moved from x 30-35 to its centre at 16; its old place is wall again.
        assert_eq!(pixel(&canvas, 33, 40), WALL);
        assert_eq!(pixel(&canvas, 16, 40), red);
        assert_eq!(pixel(&canvas, 16, 37), WALL);
        // The blue thing, 10 rows tall, stands on row 44 at both centres.
        for cx in [40, 56] {
            assert_eq!(pixel(&canvas, cx, 34), blue);
            assert_eq!(pixel(&canvas, cx, 43), blue);
            assert_eq!(pixel(&canvas, cx, 33), WALL);
            assert_eq!(pixel(&canvas, cx, 44), FLOOR);
        }
        assert!(compose(&pieces[..1], &things).is_err());
    }
}
