//! A prompt and its negative as the denoiser takes them: every text encoder's tokens, the
//! pooled embedding, and what was cut off.

use burn::tensor::Tensor;

use super::{StableDiffusion, T5State};
use crate::error::Result;

/// A prompt as the denoiser takes it.
pub struct EncodedPrompt {
    /// [1, L, context width]: SD's last hidden states, or SDXL's two encoders' penultimate
    /// ones side by side; for SD 3 those padded to the joint width and followed by the T5
    /// tokens' places.
    pub context: Tensor<3>,
    /// SDXL's and SD 3's pooled text embedding [1, P]; `None` for one-encoder models.
    pub pooled: Option<Tensor<2>>,
    /// The words cut off at the tokenizer's length, if any.
    pub truncated: Option<String>,
}

impl StableDiffusion {
    /// The UNet's text conditioning for `text` [1, L, cross_attention_dim], and the words
    /// the tokenizer cut off.
    pub fn encode_text(&self, text: &str, clip_skip: usize) -> Result<(Tensor<3>, Option<String>)> {
        let prompt = self.encode_prompt(text, clip_skip)?;
        Ok((prompt.context, prompt.truncated))
    }

    /// `text` as the UNet takes it: SD's last hidden states; or, for SDXL, both encoders'
    /// penultimate hidden states side by side and the second's pooled output (what
    /// diffusers' `StableDiffusionXLPipeline.encode_prompt` gives).
    pub fn encode_prompt(&self, text: &str, clip_skip: usize) -> Result<EncodedPrompt> {
        let tokens = self.tokenizer.encode(text)?;
        if self.refiner.is_some() {
            // The refiner's only encoder is SDXL's second: its penultimate states and its
            // pooled output.
            let (context, pooled) = self
                .text_encoder
                .penultimate_and_pooled(&[tokens.ids], clip_skip)?;
            return Ok(EncodedPrompt {
                context,
                pooled: Some(pooled),
                truncated: tokens.truncated,
            });
        }
        if let Some(flux) = self.denoiser.flux() {
            return self.encode_flux_prompt(text, tokens, flux.config().joint_attention_dim);
        }
        let Some(second) = &self.second else {
            return Ok(EncodedPrompt {
                context: self.text_encoder.forward(&[tokens.ids], clip_skip)?,
                pooled: None,
                truncated: tokens.truncated,
            });
        };
        let (first, first_pooled) = self
            .text_encoder
            .penultimate_and_pooled(&[tokens.ids], clip_skip)?;
        let ids = second.tokenizer.encode(text)?.ids;
        let (hidden, pooled) = second.encoder.penultimate_and_pooled(&[ids], clip_skip)?;
        let clip = Tensor::cat(vec![first, hidden], 2);
        let Some(mmdit) = self.denoiser.mmdit() else {
            return Ok(EncodedPrompt {
                context: clip,
                pooled: Some(pooled),
                truncated: tokens.truncated,
            });
        };
        // SD 3 (diffusers' `StableDiffusion3Pipeline.encode_prompt`): the CLIP states padded
        // with zeros to the joint width, then T5's tokens, zeros without T5; both pooled
        // outputs side by side.
        let width = clip.dims()[2];
        let joint = mmdit.config().joint_attention_dim;
        let pad = |t: Tensor<3>, padding: [(usize, usize); 2]| {
            t.pad(padding, burn::tensor::ops::PadMode::Constant(0.0))
        };
        let context = match &self.t5 {
            T5State::Loaded(t5) => {
                let (tokenizer, encoder) = t5.as_ref();
                let ids = tokenizer.encode(text, self.t5_tokens)?.ids;
                let t5 = encoder.forward(&ids)?;
                Tensor::cat(vec![pad(clip, [(0, 0), (0, joint - width)]), t5], 1)
            }
            T5State::Absent | T5State::Skipped => {
                pad(clip, [(0, self.t5_tokens), (0, joint - width)])
            }
        };
        Ok(EncodedPrompt {
            context,
            pooled: Some(Tensor::cat(vec![first_pooled, pooled], 1)),
            truncated: tokens.truncated,
        })
    }

    /// FLUX (diffusers' `FluxPipeline.encode_prompt`): T5's states are the context, zeros of
    /// the `joint` width without T5; CLIP's pooled output, of its last layer, is the pooled
    /// embedding. What is reported cut off is what T5 cut off (the context), or without T5
    /// what CLIP did.
    fn encode_flux_prompt(
        &self,
        text: &str,
        clip: crate::tokenizer::Tokens,
        joint: usize,
    ) -> Result<EncodedPrompt> {
        let (_, pooled) = self.text_encoder.penultimate_and_pooled(&[clip.ids], 0)?;
        let (context, truncated) = match &self.t5 {
            T5State::Loaded(t5) => {
                let (tokenizer, encoder) = t5.as_ref();
                let tokens = tokenizer.encode(text, self.t5_tokens)?;
                (encoder.forward(&tokens.ids)?, tokens.truncated)
            }
            T5State::Absent | T5State::Skipped => (
                Tensor::zeros([1, self.t5_tokens, joint], &self.device),
                clip.truncated,
            ),
        };
        Ok(EncodedPrompt {
            context,
            pooled: Some(pooled),
            truncated,
        })
    }

    /// The unconditional half of classifier-free guidance: the negative prompt, or, for SDXL
    /// with no negative prompt, zeros.
    pub(super) fn encode_negative(
        &self,
        text: &str,
        like: &EncodedPrompt,
        clip_skip: usize,
    ) -> Result<EncodedPrompt> {
        let zeros = match (&self.second, &self.refiner) {
            (Some(s), _) => s.zeros_for_empty_negative,
            (None, Some(r)) => r.zeros_for_empty_negative,
            (None, None) => false,
        };
        match zeros {
            true if text.is_empty() => Ok(EncodedPrompt {
                context: like.context.zeros_like(),
                pooled: like.pooled.as_ref().map(Tensor::zeros_like),
                truncated: None,
            }),
            _ => self.encode_prompt(text, clip_skip),
        }
    }
}
