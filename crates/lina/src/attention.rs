//! Region-controlled cross-attention: during a window of steps, each scene-graph node that has
//! a layout box draws its own words' attention into its box and away from the rest of the
//! image, in every cross-attention layer of the UNet, through the runtime's attention control
//! ([`CrossAttentionControl`]). It needs no extra model evaluation and no judge: it acts on
//! the model's own attention, so it works on any SD-class checkpoint.
//!
//! [`CrossAttentionControl`]: lina_runtime::models::attention_control::CrossAttentionControl
//!
//! Ours (the paper names "targeted guidance in the prompt-embedding and visual-latent spaces"
//! and nothing more), in the spirit of layout-controlled attention (DenseDiffusion, layout
//! guidance): the score of a node's token at a latent cell gains `+strength` where the cell
//! lies inside the node's box and `-strength` elsewhere, before the softmax over tokens.
//! Tokens of no boxed node keep their scores. A strength `s` multiplies a token's attention
//! weight by `e^s` inside its box relative to outside, before normalisation.
//!
//! A node's tokens are its noun (singular or plural) and the colour, size and count words
//! just before it in the prompt ("a small red ball": small, red, ball); two nodes of one
//! class take the noun's occurrences in the graph's order.
//!
//! Effects that physics implies and the prompt leaves out ([`with_effects`]): each implied
//! reflection or shadow whose place the layout fixes is named at the end of the prompt ("...,
//! the reflection of the ball in the mirror") and its word pinned to that place: the
//! surface's box below the object for a reflection, the object's base on the side away from
//! the light for a shadow. Where the prompt names the effect itself, its own word is pinned.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use lina_csg::{Class, Csg, Light, Node, Predicate};
use lina_runtime::device::read_f32;
use lina_runtime::error::{Error, Result};
use lina_runtime::models::attention_control::AttentionRecord;
use lina_runtime::pipeline::{ModelCall, StableDiffusion, StepHook, StepState};

use crate::region::{Box4, box_of, mask};

/// The forms a node's noun takes in a prompt: as named, and its plurals.
fn noun_forms(node: &Node) -> Vec<String> {
    let word = node.noun();
    let mut forms = vec![word.to_string(), format!("{word}s"), format!("{word}es")];
    if let Some(stem) = word.strip_suffix('y') {
        forms.push(format!("{stem}ies"));
    }
    if node.class == Class::Person {
        forms.push("people".into());
    }
    forms
}

/// Words that may qualify a node's noun: its colour, size and count words, and its other
/// attributes ("fluffy", "wooden").
fn modifiers(node: &Node) -> Vec<&str> {
    let mut words = vec![
        "small", "medium", "large", "big", "tiny", "one", "two", "three", "four", "five",
    ];
    if let Some(c) = node.colour {
        words.push(c.word());
    }
    words.extend(node.attributes.iter().map(String::as_str));
    words
}

/// For each node, the token positions of its words in the prompt's encoding (see the module
/// documentation); nodes without a noun in the prompt (implied effects, the floor when the
/// prompt does not name it) get none.
pub fn node_tokens(pipe: &StableDiffusion, prompt: &str, csg: &Csg) -> Result<Vec<Vec<usize>>> {
    let words = pipe.context_words(prompt)?;
    let mut claimed = vec![false; words.len()];
    let mut out = Vec::with_capacity(csg.nodes.len());
    for node in &csg.nodes {
        let forms = noun_forms(node);
        let is_noun = |w: &Option<String>| w.as_ref().is_some_and(|w| forms.contains(w));
        let Some(noun) = (0..words.len()).find(|&i| !claimed[i] && is_noun(&words[i])) else {
            out.push(Vec::new());
            continue;
        };
        // A noun may span several tokens ("mirrors" as "mirror" + "s"): all of them.
        let mut positions: Vec<usize> = (noun..words.len())
            .take_while(|&i| words[i] == words[noun])
            .collect();
        let qualifiers = modifiers(node);
        let mut i = noun;
        while i > 0
            && words[i - 1]
                .as_deref()
                .is_some_and(|w| qualifiers.contains(&w))
            && !claimed[i - 1]
        {
            i -= 1;
            positions.push(i);
        }
        positions.sort_unstable();
        for &p in &positions {
            claimed[p] = true;
        }
        out.push(positions);
    }
    Ok(out)
}

/// A node the layout controls can steer: it has a box and words in the prompt.
pub struct BoxedNode {
    pub id: String,
    /// Its words' token positions ([`node_tokens`]).
    pub positions: Vec<usize>,
    pub bbox: Box4,
}

/// The nodes with a box (`layout[i]` is node `i`'s) and words in `prompt`, in the graph's
/// order. A box the user drew for a node the prompt does not name would steer nothing: that
/// is an error rather than a run as if it did. (A derived box may lack words: "lit from the
/// left" implies a lamp that the prompt never names; such a node is left out.)
pub fn boxed_nodes(
    pipe: &StableDiffusion,
    prompt: &str,
    csg: &Csg,
    layout: &[Option<Box4>],
) -> Result<Vec<BoxedNode>> {
    let mut out = Vec::new();
    for ((node, positions), b) in csg
        .nodes
        .iter()
        .zip(node_tokens(pipe, prompt, csg)?)
        .zip(layout)
    {
        let Some(bbox) = *b else { continue };
        if positions.is_empty() && node.layout.is_some() && !node.implied {
            return Err(Error::InvalidInput(format!(
                "csg: node \"{}\" has a layout box, but the prompt has no word for it (\"{}\"), so the layout controls cannot steer it",
                node.id,
                node.noun()
            )));
        }
        if !positions.is_empty() {
            out.push(BoxedNode {
                id: node.id.clone(),
                positions,
                bbox,
            });
        }
    }
    Ok(out)
}

/// Where an implied effect may show, from the boxes of the nodes it depends on: for a
/// reflection, the part of its bounding surface below the object, as far as a full mirror
/// image reaches; for a shadow, a band at the object's base on the side away from the light
/// (under it for a light from above). `None` where the layout does not fix it.
pub fn effect_box(csg: &Csg, layout: &[Option<Box4>], effect: &Node) -> Option<Box4> {
    let at = |node: &Node| box_of(csg, layout, &node.id);
    let target = |p: Predicate| csg.object_of(&effect.id, p);
    let b = match effect.class {
        Class::Reflection => {
            let source = at(target(Predicate::ReflectionOf)?)?;
            let surface = at(target(Predicate::BoundedBy)?)?;
            let reach = (surface[1] + (source[3] - source[1])).min(surface[3]);
            [
                source[0].max(surface[0]),
                surface[1],
                source[2].min(surface[2]),
                reach,
            ]
        }
        Class::Shadow => {
            let source = at(target(Predicate::ShadowOf)?)?;
            let (w, cx) = (source[2] - source[0], 0.5 * (source[0] + source[2]));
            let (y0, y1) = ((source[3] - 0.05).max(0.0), (source[3] + 0.1).min(1.0));
            match csg.light? {
                Light::Left => [cx, y0, (cx + w).min(1.0), y1],
                Light::Right => [(cx - w).max(0.0), y0, cx, y1],
                Light::Above => [source[0], y0, source[2], y1],
            }
        }
        _ => return None,
    };
    (b[2] > b[0] && b[3] > b[1]).then_some(b)
}

/// The prompt with each implied effect that `layout` places named at its end, and the layout
/// with those effects' boxes ([`effect_box`]). Effects the prompt already names keep its
/// words; they get their box too.
pub fn with_effects(
    prompt: &str,
    csg: &Csg,
    layout: &[Option<Box4>],
) -> (String, Vec<Option<Box4>>, Vec<String>) {
    let mut prompt = prompt.to_string();
    let mut layout = layout.to_vec();
    let mut added = Vec::new();
    // Whether the prompt as the user wrote it names an effect of this kind.
    let lower = prompt.to_lowercase();
    let named = |word: &str| lower.contains(word);
    for (i, node) in csg.nodes.iter().enumerate() {
        if !node.implied || layout[i].is_some() {
            continue;
        }
        let Some(b) = effect_box(csg, &layout, node) else {
            continue;
        };
        layout[i] = Some(b);
        if named(node.class.word()) {
            continue;
        }
        let noun_of = |p: Predicate| csg.object_of(&node.id, p).map(Node::noun);
        let phrase = match (
            node.class,
            noun_of(Predicate::ReflectionOf),
            noun_of(Predicate::BoundedBy),
        ) {
            (Class::Reflection, Some(object), Some(surface)) => {
                format!("the reflection of the {object} in the {surface}")
            }
            _ => match noun_of(Predicate::ShadowOf) {
                Some(object) => format!("the shadow of the {object}"),
                None => continue,
            },
        };
        prompt = format!("{prompt}, {phrase}");
        added.push(phrase);
    }
    (prompt, layout, added)
}

/// The hook: it sets the conditional row's cross-attention bias inside `window`.
pub struct LayoutAttention {
    /// [T, h, w] at the latents' size.
    bias: Tensor<3>,
    window: Range<usize>,
    /// Per node with a box and words in the prompt: its id and token positions, for reports.
    pub tokens: Vec<(String, Vec<usize>)>,
}

impl LayoutAttention {
    /// `layout[i]` is node `i`'s box; `latent` the latents' size (h, w).
    pub fn new(
        pipe: &StableDiffusion,
        prompt: &str,
        csg: &Csg,
        layout: &[Option<Box4>],
        strength: f64,
        window: Range<usize>,
        latent: (usize, usize),
    ) -> Result<Self> {
        if !strength.is_finite() {
            return Err(Error::InvalidInput(format!(
                "attention strength must be finite, got {strength}"
            )));
        }
        let (h, w) = latent;
        let length = pipe.context_length();
        let device = pipe.device().clone();
        let mut bias = Tensor::<3>::zeros([length, h, w], &device);
        let mut tokens = Vec::new();
        for BoxedNode {
            id,
            positions,
            bbox,
        } in boxed_nodes(pipe, prompt, csg, layout)?
        {
            // +strength inside the box, -strength outside: 2 * strength * mask - strength.
            let inside = mask(&[bbox], h, w, &device).reshape([1, h, w]);
            let row = inside.mul_scalar(2.0 * strength).sub_scalar(strength);
            let select: Vec<f32> = (0..length)
                .map(|i| positions.contains(&i) as u8 as f32)
                .collect();
            let select = Tensor::<3>::from_data(TensorData::new(select, [length, 1, 1]), &device);
            bias = bias + select.mul(row);
            tokens.push((id, positions));
        }
        Ok(Self {
            bias,
            window,
            tokens,
        })
    }

    /// Whether any node has both a box and words in the prompt: without one, the hook does
    /// nothing.
    pub fn acts(&self) -> bool {
        !self.tokens.is_empty()
    }
}

impl StepHook for LayoutAttention {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        if self.window.contains(&call.step) {
            call.attention.bias = Some(match call.attention.bias.take() {
                Some(other) => other + self.bias.clone(),
                None => self.bias.clone(),
            });
        }
        Ok(())
    }
}

/// A hook that records every step's cross-attention maps ([`AttentionRecord`], [T, h, w]):
/// what the page's overlays draw and what the tests measure.
#[derive(Default)]
pub struct AttentionRecorder {
    pub steps: Vec<AttentionRecord>,
}

/// One text token of a prompt: its position in the encoding and the word it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    pub position: usize,
    pub word: String,
}

/// The recorded maps of a prompt's own tokens, read back to the host: per step, for each
/// token of `tokens` in order, `height * width` attention probabilities (row-major). The start,
/// end and padding tokens, which take most of the attention in any prompt, are left out.
#[derive(Debug, Clone, Serialize)]
pub struct TokenMaps {
    pub tokens: Vec<Token>,
    pub height: usize,
    pub width: usize,
    pub steps: Vec<Vec<f32>>,
}

impl TokenMaps {
    /// One map per word of the prompt, in order: the sum of its tokens' maps (a word may be
    /// several tokens), averaged over the steps. Repeated words ("a ... a") each keep their
    /// own map.
    pub fn by_word(&self) -> Vec<(String, Vec<f32>)> {
        let cells = self.height * self.width;
        let mut words: Vec<(String, Vec<f32>)> = Vec::new();
        let mut last_position = None;
        for (t, token) in self.tokens.iter().enumerate() {
            // Tokens of one word are adjacent and share the word.
            let continues = last_position == Some(token.position.wrapping_sub(1))
                && words.last().is_some_and(|(w, _)| *w == token.word);
            if !continues {
                words.push((token.word.clone(), vec![0.0; cells]));
            }
            let map = &mut words.last_mut().expect("a word was pushed").1;
            for step in &self.steps {
                for (m, v) in map.iter_mut().zip(&step[t * cells..(t + 1) * cells]) {
                    *m += v / self.steps.len() as f32;
                }
            }
            last_position = Some(token.position);
        }
        words
    }
}

impl AttentionRecorder {
    /// The maps of `prompt`'s words, read back step by step (async: the browser reads
    /// device memory no other way).
    pub async fn read(&self, pipe: &StableDiffusion, prompt: &str) -> Result<TokenMaps> {
        let tokens: Vec<Token> = pipe
            .context_words(prompt)?
            .into_iter()
            .enumerate()
            .filter_map(|(position, word)| word.map(|word| Token { position, word }))
            .collect();
        let (mut height, mut width) = (0, 0);
        let mut steps = Vec::with_capacity(self.steps.len());
        for record in &self.steps {
            [_, height, width] = record.dims();
            if tokens.is_empty() {
                steps.push(Vec::new());
                continue;
            }
            let rows: Vec<Tensor<3>> = tokens
                .iter()
                .map(|t| record.clone().narrow(0, t.position, 1))
                .collect();
            steps.push(read_f32(Tensor::cat(rows, 0), "attention maps").await?);
        }
        Ok(TokenMaps {
            tokens,
            height,
            width,
            steps,
        })
    }
}

impl StepHook for AttentionRecorder {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        call.attention.record = true;
        Ok(())
    }
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        if let Some(record) = state.attention.clone() {
            self.steps.push(record);
        }
        Ok(())
    }
}
