//! What changes a loaded model without loading it again: textual-inversion embeddings added
//! to the tokenizers and text encoders, and the LoRAs' scales, from the weights kept at load.

use burn::tensor::{Tensor, TensorData};

use super::{StableDiffusion, T5State};
use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::models::clip::{ClipTextConfig, ClipTextEncoder};
use crate::models::denoiser::Denoiser;
use crate::models::flux::{Flux, FluxConfig};
use crate::models::mmdit::{Mmdit, MmditConfig};
use crate::models::t5::{T5Config, T5Encoder};
use crate::models::unet::{UNet, UNetConfig};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{EmbeddingVectors, LoraTarget, ScaledLora, Weights};

/// `tokenizer` with `trigger` added for `[n, dim]` vectors of `encoder`'s, after checking
/// that they fit: the vectors' width is the encoder's, and the trigger's ids are the table's
/// next rows. Changes nothing: the caller swaps the result in once every side is checked.
fn bound(
    tokenizer: &ClipTokenizer,
    encoder: &ClipTextEncoder,
    trigger: &str,
    source: &str,
    [n, dim]: [usize; 2],
) -> Result<ClipTokenizer> {
    let width = encoder.config().hidden_size;
    if dim != width {
        return Err(Error::InvalidInput(format!(
            "embedding {source}: its vectors are {dim} wide, this model's text encoder takes {width} (an embedding for another model?)"
        )));
    }
    let rows = encoder.vocabulary_rows();
    let mut tokenizer = tokenizer.clone();
    let first = tokenizer.add_trigger(trigger, n)?;
    if first as usize != rows {
        return Err(Error::InvalidInput(format!(
            "embedding {source}: the tokenizer's vocabulary ({first} tokens) and the text encoder's table ({rows} rows) differ in size"
        )));
    }
    Ok(tokenizer)
}

/// A component's weights, kept on the device after its build because LoRAs adapt it: changing
/// their scales builds it again from them ([`StableDiffusion::set_lora_scales`]) without
/// reading a file. Layers share the weights' buffers where they use a tensor as it is, so
/// keeping them costs the tensors that a layer copies (stacked q/k/v projections) or that a
/// LoRA changes.
pub(super) struct Kept<C> {
    weights: Weights,
    config: C,
    target: LoraTarget,
}

impl<C: Clone> Kept<C> {
    /// The component built again, with `loras` at their scales.
    fn rebuilt<T>(
        &self,
        loras: &[ScaledLora],
        build: impl Fn(C, &Weights) -> Result<T>,
    ) -> Result<T> {
        self.weights.reset();
        self.weights.adapt(loras, self.target)?;
        let component = build(self.config.clone(), &self.weights)?;
        self.weights.finish()?;
        Ok(component)
    }
}

/// [`build_component`](super::load::build_component) for a component LoRAs may adapt: where
/// one of `loras` does, its weights are kept to build it again ([`Kept`]).
pub(super) fn build_keeping<T, C: Clone>(
    weights: Weights,
    (kernels, loras, target): (Kernels, &[ScaledLora], LoraTarget),
    config: C,
    build: impl Fn(C, &Weights) -> Result<T>,
) -> Result<(T, Option<Kept<C>>)> {
    let weights = weights.with_kernels(kernels);
    let kept = Kept {
        weights,
        config,
        target,
    };
    let component = kept.rebuilt(loras, &build)?;
    let adapted = loras.iter().any(|l| l.lora.adapts(target));
    Ok((component, adapted.then_some(kept)))
}

/// What [`StableDiffusion::set_lora_scales`] builds again from: the LoRAs the model was loaded
/// with, at their current scales, and the weights of each component they adapt.
pub(super) struct Adapters {
    pub(super) loras: Vec<ScaledLora>,
    pub(super) text_encoder: Option<Kept<ClipTextConfig>>,
    pub(super) second: Option<Kept<ClipTextConfig>>,
    pub(super) unet: Option<Kept<UNetConfig>>,
    pub(super) mmdit: Option<Kept<MmditConfig>>,
    pub(super) flux: Option<Kept<FluxConfig>>,
    /// SD 3's or FLUX's T5.
    pub(super) t5: Option<Kept<T5Config>>,
    /// The vocabulary rows textual-inversion embeddings added to each text encoder, in
    /// order: a rebuilt encoder takes them again.
    pub(super) added_rows: [Vec<Tensor<2>>; 2],
}

impl StableDiffusion {
    /// Binds a textual-inversion embedding to `trigger`: a prompt that says the trigger gets
    /// the file's vectors in its place (several vectors: several tokens). Reads the formats
    /// people have: a single tensor named after its token (diffusers'
    /// `learned_embeds.safetensors`), `emb_params` (the common web UIs), each `[dim]` or
    /// `[n, dim]`; for SDXL, `clip_l` and `clip_g`, bound in both tokenizers and encoders.
    /// Fails, changing nothing, on a file of another layout, vectors of another width than
    /// the text encoder's, a one-set file on SDXL or a pair on a one-encoder model, or a
    /// trigger that is a token already.
    pub fn add_embedding(&mut self, trigger: &str, source: &str, bytes: &[u8]) -> Result<()> {
        let refuse = |what: &str| {
            Err(Error::InvalidInput(format!(
                "embedding {source}: {what} (an embedding for another model?)"
            )))
        };
        match (
            crate::weights::embedding_vectors(source, bytes)?,
            &mut self.second,
        ) {
            (EmbeddingVectors::One(values, shape), None) => {
                let tokenizer = bound(&self.tokenizer, &self.text_encoder, trigger, source, shape)?;
                let rows = self.table(values, shape);
                self.text_encoder.extend_vocabulary(rows.clone())?;
                self.tokenizer = tokenizer;
                self.remember_rows([Some(rows), None]);
                Ok(())
            }
            (EmbeddingVectors::Pair { clip_l, clip_g }, Some(second)) => {
                if clip_l.1[0] != clip_g.1[0] {
                    return refuse(&format!(
                        "clip_l holds {} vectors and clip_g {}",
                        clip_l.1[0], clip_g.1[0]
                    ));
                }
                // Both sides are checked before either changes.
                let first = bound(
                    &self.tokenizer,
                    &self.text_encoder,
                    trigger,
                    source,
                    clip_l.1,
                )?;
                let second_tokenizer = bound(
                    &second.tokenizer,
                    &second.encoder,
                    trigger,
                    source,
                    clip_g.1,
                )?;
                let tables = [
                    Tensor::<2>::from_data(TensorData::new(clip_l.0, clip_l.1), &self.device),
                    Tensor::<2>::from_data(TensorData::new(clip_g.0, clip_g.1), &self.device),
                ];
                let [l, g] = tables;
                self.text_encoder.extend_vocabulary(l.clone())?;
                second.encoder.extend_vocabulary(g.clone())?;
                self.tokenizer = first;
                second.tokenizer = second_tokenizer;
                self.remember_rows([Some(l), Some(g)]);
                Ok(())
            }
            (EmbeddingVectors::One(..), Some(_)) => {
                refuse("one set of vectors; SDXL's two text encoders need `clip_l` and `clip_g`")
            }
            // The SDXL refiner's only encoder is SDXL's second: it takes `clip_g`.
            (EmbeddingVectors::Pair { clip_g, .. }, None) if self.refiner.is_some() => {
                let tokenizer = bound(
                    &self.tokenizer,
                    &self.text_encoder,
                    trigger,
                    source,
                    clip_g.1,
                )?;
                let rows = self.table(clip_g.0, clip_g.1);
                self.text_encoder.extend_vocabulary(rows.clone())?;
                self.tokenizer = tokenizer;
                self.remember_rows([Some(rows), None]);
                Ok(())
            }
            (EmbeddingVectors::Pair { .. }, None) => {
                refuse("SDXL's `clip_l` and `clip_g`; this model has one text encoder")
            }
        }
    }

    /// Keeps the vocabulary rows an embedding added to the text encoders (the first, or the
    /// refiner's only one; the second), for encoders built again with other LoRA scales.
    fn remember_rows(&mut self, rows: [Option<Tensor<2>>; 2]) {
        if let Some(adapters) = &mut self.adapters {
            for (kept, row) in adapters.added_rows.iter_mut().zip(rows) {
                kept.extend(row);
            }
        }
    }

    /// The scales of the LoRAs the model was loaded with, in their order.
    pub fn lora_scales(&self) -> Vec<f32> {
        self.adapters
            .as_ref()
            .map_or_else(Vec::new, |a| a.loras.iter().map(|l| l.scale).collect())
    }

    /// Sets the scale of each LoRA the model was loaded with (in their order), without
    /// reading any file: each component they adapt is built again from its weights, kept on
    /// the device since the load, with the updates merged at the new scales (and the
    /// embeddings' vocabulary rows added again). Fails, changing nothing, on a count that is
    /// not the LoRAs', a scale that is not finite, or a model loaded without LoRAs.
    pub fn set_lora_scales(&mut self, scales: &[f32]) -> Result<()> {
        let Some(adapters) = &self.adapters else {
            return Err(Error::InvalidInput(
                "LoRA scales: this model was loaded without LoRAs; load it with them to set their scales".into(),
            ));
        };
        if scales.len() != adapters.loras.len() {
            return Err(Error::InvalidInput(format!(
                "LoRA scales: {} given for {} LoRAs",
                scales.len(),
                adapters.loras.len()
            )));
        }
        if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "LoRA scales: {bad} is not a finite number"
            )));
        }
        let loras: Vec<ScaledLora> = adapters
            .loras
            .iter()
            .zip(scales)
            .map(|(l, &scale)| ScaledLora {
                lora: l.lora.clone(),
                scale,
            })
            .collect();
        // Everything is built before anything is swapped in: an error leaves the model as it
        // was.
        let encoder = |kept: &Option<Kept<ClipTextConfig>>, rows: &[Tensor<2>]| {
            kept.as_ref()
                .map(|k| {
                    let mut encoder = k.rebuilt(&loras, ClipTextEncoder::load)?;
                    for r in rows {
                        encoder.extend_vocabulary(r.clone())?;
                    }
                    Ok::<_, Error>(encoder)
                })
                .transpose()
        };
        let text_encoder = encoder(&adapters.text_encoder, &adapters.added_rows[0])?;
        let second = encoder(&adapters.second, &adapters.added_rows[1])?;
        let unet = adapters
            .unet
            .as_ref()
            .map(|k| k.rebuilt(&loras, UNet::load))
            .transpose()?;
        let mmdit = adapters
            .mmdit
            .as_ref()
            .map(|k| k.rebuilt(&loras, Mmdit::load))
            .transpose()?;
        let flux = adapters
            .flux
            .as_ref()
            .map(|k| k.rebuilt(&loras, Flux::load))
            .transpose()?;
        let t5 = adapters
            .t5
            .as_ref()
            .map(|k| k.rebuilt(&loras, T5Encoder::load))
            .transpose()?;
        if let Some(e) = text_encoder {
            self.text_encoder = e;
        }
        if let (Some(e), Some(s)) = (second, self.second.as_mut()) {
            s.encoder = e;
        }
        if let Some(u) = unet {
            self.denoiser = Denoiser::UNet(Box::new(u));
        }
        if let Some(m) = mmdit {
            self.denoiser = Denoiser::Mmdit(Box::new(m));
        }
        if let Some(f) = flux {
            self.denoiser = Denoiser::Flux(Box::new(f));
        }
        if let (Some(e), T5State::Loaded(t5)) = (t5, &mut self.t5) {
            t5.1 = e;
        }
        if let Some(adapters) = &mut self.adapters {
            adapters.loras = loras;
        }
        Ok(())
    }

    fn table(&self, values: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }
}
