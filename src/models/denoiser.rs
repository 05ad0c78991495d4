//! The model the sampler calls at every step: a UNet (SD 1.x, 2.x, XL: predicts noise, v or
//! the sample), an MMDiT (SD 3.x) or FLUX's transformer (both predict a rectified flow's
//! velocity). The pipeline holds one and asks it only what differs between them.

use burn::tensor::Tensor;

use super::attention_control::{AttentionRecord, CrossAttentionControl};
use super::flux::{self, Flux, FluxConfig};
use super::mmdit::{self, Mmdit, MmditConfig};
use super::unet::{UNet, UNetConfig};

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

    /// The T5 tokens of its text context: SD 3's after CLIP's, FLUX's alone; none for UNets.
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
            Self::Flux(f) => f.config().latent_channels(),
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
    /// and size, the MMDiT's pooled text, FLUX's pooled text and guidance); under `control`,
    /// which acts on batch row `row`.
    pub fn forward_controlled(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: Option<&Tensor<2>>,
        control: &CrossAttentionControl,
        row: usize,
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        match self {
            Self::UNet(u) => u.forward_controlled(x, timestep, context, added, control, row),
            Self::Mmdit(m) => {
                let pooled = added.expect("the pipeline gives the MMDiT its pooled text");
                m.forward_controlled(x, timestep, context, pooled, control, row)
            }
            Self::Flux(f) => {
                let added = added.expect("the pipeline gives FLUX its pooled text");
                f.forward_controlled(x, timestep, context, added, control, row)
            }
        }
    }
}
