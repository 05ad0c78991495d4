//! How far an edit moves a prompt's text embedding: the measure behind LINA's claim that
//! texture and physics are separable in the prompt space.
//!
//! Ours (the paper gives no formula): the relative distance between the two prompts' encoder
//! outputs over every position, `|Z_edit - Z| / |Z|`, and the cosine distance of their means
//! over the positions up to the end token. Edits are single-word swaps, so both prompts have
//! the same token layout: a texture edit swaps a colour or material, a physics edit swaps a
//! relation (on and under, left and right, in front of and behind, ...). [`edits`] makes both
//! kinds from any prompt that has such words.

use serde::Serialize;

use lina_runtime::device::read_f32;
use lina_runtime::error::{Error, Result};
use lina_runtime::pipeline::StableDiffusion;

/// What kind of word an edit swaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EditKind {
    Texture,
    Physics,
}

/// Colour and material swaps: what things look like.
const TEXTURE_SWAPS: &[(&str, &str)] = &[
    ("red", "blue"),
    ("blue", "green"),
    ("green", "yellow"),
    ("yellow", "purple"),
    ("purple", "orange"),
    ("orange", "red"),
    ("water", "sand"),
    ("sand", "water"),
];

/// Relation swaps: how things are arranged or what physics does.
const PHYSICS_SWAPS: &[(&str, &str)] = &[
    ("on", "under"),
    ("under", "on"),
    ("left", "right"),
    ("right", "left"),
    ("above", "below"),
    ("below", "above"),
    ("close", "far"),
    ("small", "large"),
    ("large", "small"),
    ("more", "less"),
    ("less", "more"),
];

/// Every single-word edit of `prompt` from the swap lists, with its kind.
pub fn edits(prompt: &str) -> Vec<(EditKind, String)> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let mut out = Vec::new();
    for (kind, swaps) in [
        (EditKind::Texture, TEXTURE_SWAPS),
        (EditKind::Physics, PHYSICS_SWAPS),
    ] {
        for (i, w) in words.iter().enumerate() {
            if let Some((_, to)) = swaps.iter().find(|(from, _)| from == w) {
                let mut edited = words.clone();
                edited[i] = to;
                out.push((kind, edited.join(" ")));
            }
        }
    }
    out
}

/// How far one edit moved the embedding.
#[derive(Debug, Clone, Serialize)]
pub struct Shift {
    pub kind: EditKind,
    pub edited: String,
    /// `|Z_edit - Z| / |Z|` over all positions.
    pub relative: f32,
    /// `1 - cos` of the two prompts' mean embeddings up to the end token.
    pub cosine: f32,
}

/// Encodes `prompt` and each edit and measures the shifts.
pub async fn measure(
    pipe: &StableDiffusion,
    prompt: &str,
    edits: &[(EditKind, String)],
) -> Result<Vec<Shift>> {
    let encode = async |text: &str| -> Result<Vec<f32>> {
        let (z, _) = pipe.encode_text(text, 0)?;
        read_f32(z, "the text embedding").await
    };
    let base = encode(prompt).await?;
    let dim = pipe.denoiser().context_width();
    // The prompt's places up to its end token.
    let used = pipe.context_used(prompt)?;
    let mut out = Vec::new();
    for (kind, edited) in edits {
        if pipe.context_used(edited)? != used {
            return Err(Error::InvalidInput(format!(
                "\"{edited}\" does not have the same number of tokens as \"{prompt}\""
            )));
        }
        let z = encode(edited).await?;
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let diff: Vec<f32> = z.iter().zip(&base).map(|(a, b)| a - b).collect();
        let mean = |v: &[f32]| -> Vec<f32> {
            (0..dim)
                .map(|d| (0..used).map(|t| v[t * dim + d]).sum::<f32>() / used as f32)
                .collect()
        };
        let (ma, mb) = (mean(&base), mean(&z));
        let dot: f32 = ma.iter().zip(&mb).map(|(a, b)| a * b).sum();
        out.push(Shift {
            kind: *kind,
            edited: edited.clone(),
            relative: norm(&diff) / norm(&base),
            cosine: 1.0 - dot / (norm(&ma) * norm(&mb)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_swap_one_word_of_each_kind() {
        let found = edits("a red ball on a blue cube");
        let texture: Vec<&str> = found
            .iter()
            .filter(|(k, _)| *k == EditKind::Texture)
            .map(|(_, e)| e.as_str())
            .collect();
        assert_eq!(
            texture,
            ["a blue ball on a blue cube", "a red ball on a green cube"]
        );
        let physics: Vec<&str> = found
            .iter()
            .filter(|(k, _)| *k == EditKind::Physics)
            .map(|(_, e)| e.as_str())
            .collect();
        assert_eq!(physics, ["a red ball under a blue cube"]);
        assert!(edits("a cat").is_empty());
    }
}
