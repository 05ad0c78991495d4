//! The mirrored frame: the model draws the scene's mirror image, from the mirror image's
//! text, and the sampler keeps the scene as asked.
//!
//! Ours (the paper does not describe it). Physics is symmetric under a left-right reflection:
//! a scene lit from the right is the mirror image of the same scene lit from the left, with
//! each shadow mirrored too, and "a cube to the right of a ball" is the mirror image of "a
//! cube to the left of a ball". A model need not be: trained on more scenes lit from the
//! left, it draws shadows falling the wrong way under a light on the right. So a plan may ask
//! for the mirrored frame: every word of direction in the prompt swaps ("left" and "right",
//! "leftmost" and "rightmost", ...), every model call sees its latents flipped left to right
//! ([`ModelCall::mirrored`]), and its prediction comes back flipped. The result is the mirror
//! image of a sample of the mirrored prompt, which is a sample of the prompt itself wherever
//! the model respects the symmetry; where it draws one side better, the scene is drawn on
//! that side. Everything else a plan does (layout boxes, attention control, region terms)
//! stays in the scene's own frame: the runtime flips it on the way to the model.
//!
//! Whether a prompt gains from its mirror is a property of the model, not of the prompt, so
//! the choice is the predictor's, learned offline (`predict`); a plan that asks for the
//! mirror on a prompt without a word of direction changes nothing (the frame would be the
//! same scene).

use lina_runtime::error::Result;
use lina_runtime::pipeline::{ModelCall, StepHook};

/// Words of direction and their mirror images.
const SWAPS: &[(&str, &str)] = &[
    ("left", "right"),
    ("leftmost", "rightmost"),
    ("leftward", "rightward"),
    ("leftwards", "rightwards"),
    ("lefthand", "righthand"),
    ("west", "east"),
    ("western", "eastern"),
    ("clockwise", "counterclockwise"),
];

fn swapped(word: &str) -> Option<&'static str> {
    let lower = word.to_ascii_lowercase();
    SWAPS.iter().find_map(|&(a, b)| {
        if lower == a {
            Some(b)
        } else if lower == b {
            Some(a)
        } else {
            None
        }
    })
}

/// `text` with every word of direction swapped for its mirror image ("lit from the left" for
/// "lit from the right"), keeping everything else byte for byte and a capital first letter
/// where the word had one. `None` when the text has no word of direction: its mirror image
/// is the same text.
pub fn mirrored(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut changed = false;
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        match swapped(word) {
            Some(other) => {
                changed = true;
                if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let mut chars = other.chars();
                    if let Some(first) = chars.next() {
                        out.push(first.to_ascii_uppercase());
                        out.push_str(chars.as_str());
                    }
                } else {
                    out.push_str(other);
                }
            }
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    changed.then_some(out)
}

/// The hook: every model call sees the mirrored frame. The caller gives the model the
/// mirrored text (the run's prompt is [`mirrored`]'s), so the text and the frame agree.
pub struct MirroredFrame;

impl StepHook for MirroredFrame {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        call.mirrored = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_swap_and_nothing_else_moves() {
        assert_eq!(
            mirrored("a red cube and a blue ball lit from the right").as_deref(),
            Some("a red cube and a blue ball lit from the left")
        );
        assert_eq!(
            mirrored("Left of a cone, a cube; the rightmost ball.").as_deref(),
            Some("Right of a cone, a cube; the leftmost ball.")
        );
        // Words that only contain a direction are other words.
        assert_eq!(mirrored("a bright leftover sandwich"), None);
        assert_eq!(mirrored("a cat sleeping on a sofa"), None);
        assert_eq!(mirrored(""), None);
        // Mirroring twice gives the text back.
        let text = "light from the left falls on a cube to the right of a ball";
        assert_eq!(mirrored(&mirrored(text).unwrap()).as_deref(), Some(text));
    }
}
