//! The model the sampler calls at every step: a UNet (SD 1.x, 2.x, XL: predicts noise, v or
//! the sample) or an MMDiT (SD 3.x: predicts a rectified flow's velocity). The pipeline holds
//! one and asks it only what differs between them.

use burn::tensor::Tensor;

use super::attention_control::{AttentionRecord, CrossAttentionControl};
use super::mmdit::{Mmdit, MmditConfig};
use super::unet::{UNet, UNetConfig};

/// Boxed: a loaded UNet's struct is far larger than a transformer's.
pub enum Denoiser {
    UNet(Box<UNet>),
    Mmdit(Box<Mmdit>),
}

/// A denoiser's config, for what is computed from configs alone (memory estimates).
#[derive(Clone, Copy)]
pub enum DenoiserConfig<'a> {
    UNet(&'a UNetConfig),
    Mmdit(&'a MmditConfig),
}

impl DenoiserConfig<'_> {
    /// The latent side it was trained at.
    pub fn sample_size(self) -> usize {
        match self {
            Self::UNet(u) => u.sample_size,
            Self::Mmdit(m) => m.sample_size,
        }
    }
}

impl Denoiser {
    pub fn config(&self) -> DenoiserConfig<'_> {
        match self {
            Self::UNet(u) => DenoiserConfig::UNet(u.config()),
            Self::Mmdit(m) => DenoiserConfig::Mmdit(m.config()),
        }
    }

    pub fn unet(&self) -> Option<&UNet> {
        match self {
            Self::UNet(u) => Some(u.as_ref()),
            Self::Mmdit(_) => None,
        }
    }

    pub fn mmdit(&self) -> Option<&Mmdit> {
        match self {
            Self::Mmdit(m) => Some(m.as_ref()),
            Self::UNet(_) => None,
        }
    }

    /// Whether it predicts a rectified flow's velocity (and so samples with flow matching).
    pub fn is_flow(&self) -> bool {
        matches!(self, Self::Mmdit(_))
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
        }
    }

    /// The width of the text context it attends to.
    pub fn context_width(&self) -> usize {
        match self {
            Self::UNet(u) => u.config().cross_attention_dim,
            Self::Mmdit(m) => m.config().joint_attention_dim,
        }
    }

    /// Whether it takes the guidance scale as an embedding (LCM-distilled UNets) instead of
    /// a second, unconditional pass.
    pub fn embeds_guidance(&self) -> bool {
        self.unet().is_some_and(UNet::embeds_guidance)
    }

    /// One call on latents `x` at `timestep`, attending to `context`, with `added` the
    /// per-row conditioning beside the timestep (LCM's guidance embedding, SDXL's pooled text
    /// and size, the MMDiT's pooled text); under `control`, which acts on batch row `row`.
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
        }
    }
}
