//! Prompt-space targeted guidance: during a window of steps, move the text embeddings of the
//! tokens that carry physical relations, and only those, further along their own direction.
//!
//! Ours (the paper states only that texture and physics are disentangled in the prompt
//! embedding): a relation token `i` moves to `z_i + strength * (z_i - n_i)`, where `n_i` is the
//! empty prompt's embedding at the same position, the neutral point that classifier-free
//! guidance also steers away from. Entity and texture tokens (colours, object nouns, materials)
//! and the end and padding tokens keep their embeddings, so what the scene contains stays put
//! while how it is arranged is emphasised.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use lina_runtime::error::{Error, Result};
use lina_runtime::pipeline::{ModelCall, StableDiffusion, StepHook};

/// Words that carry relations, quantities and physical effects rather than what things are
/// or look like.
pub const RELATION_WORDS: &[&str] = &[
    "on",
    "top",
    "resting",
    "standing",
    "in",
    "inside",
    "into",
    "under",
    "above",
    "below",
    "behind",
    "hidden",
    "partly",
    "front",
    "left",
    "right",
    "lit",
    "light",
    "from",
    "falls",
    "close",
    "near",
    "far",
    "next",
    "beside",
    "small",
    "large",
    "big",
    "tall",
    "more",
    "less",
    "than",
    "half",
    "full",
    "mostly",
    "little",
    "empty",
    "space",
    "row",
    "one",
    "two",
    "three",
    "four",
    "five",
    "reflection",
    "reflected",
    "shadow",
    "touching",
];

/// The positions of `prompt`'s relation tokens.
pub fn relation_positions(pipe: &StableDiffusion, prompt: &str) -> Result<Vec<usize>> {
    Ok(pipe
        .context_words(prompt)?
        .iter()
        .enumerate()
        .filter(|(_, w)| w.as_deref().is_some_and(|w| RELATION_WORDS.contains(&w)))
        .map(|(i, _)| i)
        .collect())
}

/// The hook: it swaps the conditional text embedding for the moved one inside `window`.
pub struct PromptGuidance {
    context: Tensor<3>,
    window: Range<usize>,
    /// The relation tokens that move, for reports.
    pub positions: Vec<usize>,
}

impl PromptGuidance {
    pub fn new(
        pipe: &StableDiffusion,
        prompt: &str,
        clip_skip: usize,
        strength: f64,
        window: Range<usize>,
    ) -> Result<Self> {
        if !strength.is_finite() {
            return Err(Error::InvalidInput(format!(
                "prompt guidance strength must be finite, got {strength}"
            )));
        }
        let (plain, _) = pipe.encode_text(prompt, clip_skip)?;
        let (neutral, _) = pipe.encode_text("", clip_skip)?;
        let positions = relation_positions(pipe, prompt)?;
        let [_, len, _] = plain.dims();
        let select: Vec<f32> = (0..len)
            .map(|i| positions.contains(&i) as u8 as f32)
            .collect();
        let device = plain.device();
        let select = Tensor::<3>::from_data(TensorData::new(select, [1, len, 1]), &device);
        let offset = (plain.clone() - neutral).mul(select.repeat_dim(2, plain.dims()[2]));
        Ok(Self {
            context: plain + offset.mul_scalar(strength),
            window,
            positions,
        })
    }
}

impl StepHook for PromptGuidance {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        if self.window.contains(&call.step) {
            let rows = call.context.dims()[0];
            call.context = if rows == 2 {
                Tensor::cat(
                    vec![call.context.clone().narrow(0, 0, 1), self.context.clone()],
                    0,
                )
            } else {
                self.context.clone()
            };
        }
        Ok(())
    }
}
