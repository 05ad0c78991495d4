//! The model the sampler calls at every step: a UNet (SD 1.x, 2.x, XL: predicts noise, v or
//! the sample), an MMDiT (SD 3.x) or FLUX's transformer (both predict a rectified flow's
//! velocity). The pipeline holds one and asks it only what differs between them.

use burn::tensor::Tensor;

use super::attention_control::{AttentionRecord, CrossAttentionControl};
use super::flux::{self, Flux, FluxConfig};
use super::mmdit::{self, Mmdit, MmditConfig};
use super::unet::{UNet, UNetAdditions, UNetConfig};

/// Boxed: a loaded UNet's struct is far larger than a transformer's.
pub enum Denoiser {
    UNet(Box<UNet>),
    Mmdit(Box<Mmdit>),
    Flux(Box<Flux>),
}

/// A denoiser's config, for what is computed from configs alone (memory estimates).
#[derive(Clone, Copy)]
pub enum DenoiserConfig<'a> {
    UNet(&'a UNetConfig),
    Mmdit(&'a MmditConfig),
    Flux(&'a FluxConfig),
}

/// The transformers a model folder's `transformer/` may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformerKind {
    /// SD 3.x's MMDiT.
    Sd3,
    /// FLUX.1's.
    Flux,
}

impl TransformerKind {
    /// The transformer `transformer/config.json` describes, by its `_class_name`: FLUX's
    /// when it names FLUX's class, else SD 3's (whose config then refuses any other class by
    /// name, and whose early folders name none).
    pub fn of_config(json: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct Class {
            #[serde(rename = "_class_name")]
            class_name: Option<String>,
        }
        match serde_json::from_str::<Class>(json) {
            Ok(Class {
                class_name: Some(name),
            }) if name == flux::CLASS_NAME => Self::Flux,
            _ => Self::Sd3,
        }
    }
}

/// What a denoiser takes beside its latents, told by its input channels. Each is
/// concatenated to the latents along the channels, at latent size (FLUX's transformer packs
/// the whole input into 2x2 patches, which matches its pipeline's packing part by part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCondition {
    /// The latents alone.
    None,
    /// SD's inpainting UNets (`2C + 1` channels): the mask at latent size, then the masked
    /// image's latents.
    Inpaint,
    /// FLUX.1 Fill (`2C + f²` channels, `f` the VAE's downscale): the masked image's
    /// latents, then the mask's `f x f` pixels of each latent cell, row by row.
    Fill,
    /// FLUX.1 Canny and Depth (`2C` channels): the control image's latents.
    Control,
}

impl ImageCondition {
    /// The conditions a denoiser of `config` may take with a VAE of `latent` channels and
    /// `downscale`, each with the input channels (unpacked) it makes.
    fn candidates(config: DenoiserConfig, latent: usize, downscale: usize) -> Vec<(Self, usize)> {
        let mut candidates = vec![(Self::None, latent)];
        match config {
            DenoiserConfig::UNet(_) => candidates.push((Self::Inpaint, 2 * latent + 1)),
            DenoiserConfig::Mmdit(_) => {}
            DenoiserConfig::Flux(_) => candidates.extend([
                (Self::Control, 2 * latent),
                (Self::Fill, 2 * latent + downscale * downscale),
            ]),
        }
        candidates
    }

    /// The condition a denoiser of `config` takes with a VAE of `latent` channels and
    /// `downscale`, or `None` where its input channels fit none (a wrong pairing of parts).
    pub fn of(config: DenoiserConfig, latent: usize, downscale: usize) -> Option<Self> {
        let input = match config {
            DenoiserConfig::UNet(u) => u.in_channels,
            DenoiserConfig::Mmdit(m) => m.in_channels,
            DenoiserConfig::Flux(f) => f.input_channels(),
        };
        Self::candidates(config, latent, downscale)
            .into_iter()
            .find(|&(_, channels)| channels == input)
            .map(|(condition, _)| condition)
    }

    /// The input channels a denoiser of `config` may have, as its config writes them (FLUX's
    /// x4, packed), for errors that name the choices.
    pub fn choices(config: DenoiserConfig, latent: usize, downscale: usize) -> String {
        let packed = if matches!(config, DenoiserConfig::Flux(_)) {
            4
        } else {
            1
        };
        Self::candidates(config, latent, downscale)
            .into_iter()
            .map(|(condition, channels)| format!("{} ({condition:?})", channels * packed))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether it takes an init image and a mask, and needs both.
    pub fn inpaints(self) -> bool {
        matches!(self, Self::Inpaint | Self::Fill)
    }
}

impl DenoiserConfig<'_> {
    /// The latent side it was trained at.
    pub fn sample_size(self) -> usize {
        match self {
            Self::UNet(u) => u.sample_size,
            Self::Mmdit(m) => m.sample_size,
            Self::Flux(f) => f.sample_size,
        }
    }
}

impl Denoiser {
    pub fn config(&self) -> DenoiserConfig<'_> {
        match self {
            Self::UNet(u) => DenoiserConfig::UNet(u.config()),
            Self::Mmdit(m) => DenoiserConfig::Mmdit(m.config()),
            Self::Flux(f) => DenoiserConfig::Flux(f.config()),
        }
    }

    pub fn unet(&self) -> Option<&UNet> {
        match self {
            Self::UNet(u) => Some(u.as_ref()),
            _ => None,
        }
    }

    pub fn mmdit(&self) -> Option<&Mmdit> {
        match self {
            Self::Mmdit(m) => Some(m.as_ref()),
            _ => None,
        }
    }

    pub fn flux(&self) -> Option<&Flux> {
        match self {
            Self::Flux(f) => Some(f.as_ref()),
            _ => None,
        }
    }

    /// Whether it predicts a rectified flow's velocity (and so samples with flow matching).
    pub fn is_flow(&self) -> bool {
        !matches!(self, Self::UNet(_))
    }

    /// The T5 tokens of its text context by default (diffusers' pipelines' default
    /// `max_sequence_length`): SD 3's after CLIP's, FLUX's alone; none for UNets.
    pub fn t5_tokens(&self) -> usize {
        match self {
            Self::UNet(_) => 0,
            Self::Mmdit(_) => mmdit::T5_TOKENS,
            Self::Flux(_) => flux::T5_TOKENS,
        }
    }

    /// The tokens a transformer makes of `h` x `w` latents, on which a flow schedule's
    /// dynamic shift depends; `None` for UNets.
    pub fn image_tokens(&self, h: usize, w: usize) -> Option<usize> {
        match self {
            Self::UNet(_) => None,
            Self::Mmdit(m) => Some(m.config().image_tokens(h, w)),
            Self::Flux(f) => Some(f.config().image_tokens(h, w)),
        }
    }

    /// Whether it takes latents of `h` x `w`: a transformer's whole patches (and, for the
    /// MMDiT, its position table); any size for UNets.
    pub fn check_latent_size(&self, h: usize, w: usize) -> crate::error::Result<()> {
        match self {
            Self::UNet(_) => Ok(()),
            Self::Mmdit(m) => m.check_latent_size(h, w),
            Self::Flux(f) => f.check_latent_size(h, w),
        }
    }

    /// The latent side it was trained at.
    pub fn sample_size(&self) -> usize {
        self.config().sample_size()
    }

    /// The channels it takes (latents, and an inpainting UNet's mask and masked image).
    pub fn in_channels(&self) -> usize {
        match self {
            Self::UNet(u) => u.config().in_channels,
            Self::Mmdit(m) => m.config().in_channels,
            Self::Flux(f) => f.config().input_channels(),
        }
    }

    /// The width of the text context it attends to.
    pub fn context_width(&self) -> usize {
        match self {
            Self::UNet(u) => u.config().cross_attention_dim,
            Self::Mmdit(m) => m.config().joint_attention_dim,
            Self::Flux(f) => f.config().joint_attention_dim,
        }
    }

    /// One call on latents `x` at `timestep`, attending to `context`, with `added` the
    /// per-row conditioning beside the timestep (LCM's guidance embedding, SDXL's pooled text
    /// and size, the MMDiT's pooled text, FLUX's pooled text and guidance) and, for FLUX,
    /// a `reference` image's latents [1, C, h', w'] (Kontext's) whose tokens join the latents',
    /// and, for a UNet, what ControlNets and T2I-Adapters add (`additions`); under `control`, which acts on batch row
    /// `row`. The start of a run gives a reference only to FLUX, additions only to a UNet.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_controlled(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: Option<&Tensor<2>>,
        reference: Option<&Tensor<4>>,
        control: &CrossAttentionControl,
        row: usize,
        additions: Option<&UNetAdditions>,
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        match self {
            Self::UNet(u) => {
                u.forward_controlled(x, timestep, context, added, control, row, additions)
            }
            Self::Mmdit(m) => {
                let pooled = added.expect("the pipeline gives the MMDiT its pooled text");
                m.forward_controlled(x, timestep, context, pooled, control, row)
            }
            Self::Flux(f) => {
                let added = added.expect("the pipeline gives FLUX its pooled text");
                f.forward_controlled(x, timestep, context, added, reference, control, row)
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// FLUX's input channels (x4, packed) tell its condition with a 16-channel VAE of
    /// downscale 8: 64 the latents alone, 128 Canny or Depth, 384 Fill; a UNet's 9 with a
    /// 4-channel VAE is an inpainting UNet; any other count fits none, and the error's choices
    /// name every count that would.
    #[test]
    fn image_conditions_are_told_by_the_input_channels() {
        let flux = |c: usize| {
            FluxConfig::from_json(&format!(r#"{{"in_channels": {c}, "out_channels": 64}}"#))
                .unwrap()
        };
        for (channels, expected) in [
            (64, Some(ImageCondition::None)),
            (128, Some(ImageCondition::Control)),
            (384, Some(ImageCondition::Fill)),
            (68, None),
        ] {
            let config = flux(channels);
            assert_eq!(
                ImageCondition::of(DenoiserConfig::Flux(&config), 16, 8),
                expected,
                "{channels}"
            );
        }
        let config = flux(68);
        let choices = ImageCondition::choices(DenoiserConfig::Flux(&config), 16, 8);
        assert_eq!(choices, "64 (None), 128 (Control), 384 (Fill)");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sd1_inpaint_tiny/unet/config.json"
        );
        let unet = UNetConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            ImageCondition::of(DenoiserConfig::UNet(&unet), 4, 8),
            Some(ImageCondition::Inpaint)
        );
    }
}
