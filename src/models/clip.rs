//! CLIP text encoder (transformers' `CLIPTextModel`): token and position embeddings, a pre-LN
//! transformer with causal self-attention, and a final layer norm.

use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Tensor};
use serde::Deserialize;

use super::config::{check_size, parse};
use crate::error::{Error, Result};
use crate::nn::{Embedding, LayerNorm, Linear, multi_head_attention};
use crate::views::Columns;
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "text_encoder/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        check_size(CONFIG_FILE, "vocab_size", c.vocab_size, 1 << 20)?;
        check_size(CONFIG_FILE, "hidden_size", c.hidden_size, 1 << 14)?;
        check_size(
            CONFIG_FILE,
            "intermediate_size",
            c.intermediate_size,
            1 << 16,
        )?;
        check_size(CONFIG_FILE, "num_hidden_layers", c.num_hidden_layers, 256)?;
        check_size(
            CONFIG_FILE,
            "num_attention_heads",
            c.num_attention_heads,
            256,
        )?;
        check_size(
            CONFIG_FILE,
            "max_position_embeddings",
            c.max_position_embeddings,
            1 << 14,
        )?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::config(
                CONFIG_FILE,
                "`hidden_size` is not a multiple of `num_attention_heads`",
            ));
        }
        Activation::parse(&c.hidden_act)?;
        Ok(c)
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(Error::config(
                CONFIG_FILE,
                format!("unsupported `hidden_act` \"{other}\" (quick_gelu and gelu are)"),
            )),
        }
    }

    fn apply(self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Self::Gelu => gelu(x),
        }
    }
}

struct EncoderLayer {
    norm1: LayerNorm,
    /// q, k and v in one matmul: [q | k | v].
    qkv: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn load(w: &Scope, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let attn = w.at("self_attn");
        Ok(Self {
            norm1: LayerNorm::load(&w.at("layer_norm1"), d, c.layer_norm_eps)?,
            qkv: Linear::load_side_by_side(
                &["q_proj", "k_proj", "v_proj"].map(|name| (attn.at(name), d)),
                d,
                true,
            )?,
            out: Linear::load(&attn.at("out_proj"), d, d, true)?,
            norm2: LayerNorm::load(&w.at("layer_norm2"), d, c.layer_norm_eps)?,
            fc1: Linear::load(&w.at("mlp.fc1"), d, c.intermediate_size, true)?,
            fc2: Linear::load(&w.at("mlp.fc2"), c.intermediate_size, d, true)?,
        })
    }

    fn forward(&self, x: Tensor<3>, heads: usize, act: Activation) -> Tensor<3> {
        let h = self.norm1.forward(x.clone());
        let [q, k, v] = Columns::split(self.qkv.forward(h));
        let attn = multi_head_attention(q, k, v, heads, true, self.qkv.kernels());
        let x = self.out.forward_plus(attn, x);
        let h = self.fc1.forward(self.norm2.forward(x.clone()));
        self.fc2.forward_plus(act.apply(h), x)
    }
}

pub struct ClipTextEncoder {
    config: ClipTextConfig,
    activation: Activation,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    device: Device,
}

impl ClipTextEncoder {
    /// Appends token embeddings ([n, hidden_size]: a textual inversion's vectors); returns
    /// the id of the first.
    pub fn extend_vocabulary(&mut self, rows: Tensor<2>) -> Result<u32> {
        let [_, dim] = rows.dims();
        if dim != self.token_embedding.dim() {
            return Err(Error::InvalidInput(format!(
                "the embedding's vectors are {dim} wide; this text encoder's are {}",
                self.token_embedding.dim()
            )));
        }
        Ok(self.token_embedding.extend(rows))
    }

    /// Token embeddings in the table (the vocabulary and any added ones).
    pub fn vocabulary_rows(&self) -> usize {
        self.token_embedding.rows()
    }

    pub fn load(config: ClipTextConfig, weights: &Weights) -> Result<Self> {
        // transformers up to 4.x saves CLIPTextModel's tensors under `text_model.`; 5.x saves
        // them without it. Either file loads.
        let prefixed = !weights.contains("embeddings.token_embedding.weight");
        let w = if prefixed {
            weights.root().at("text_model")
        } else {
            weights.root()
        };
        let d = config.hidden_size;
        let emb = w.at("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(&w.at("encoder.layers").at(i), &config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            activation: Activation::parse(&config.hidden_act)?,
            token_embedding: Embedding::load(&emb.at("token_embedding"), config.vocab_size, d)?,
            position_embedding: Embedding::load(
                &emb.at("position_embedding"),
                config.max_position_embeddings,
                d,
            )?,
            layers,
            final_norm: LayerNorm::load(&w.at("final_layer_norm"), d, config.layer_norm_eps)?,
            device: weights.device().clone(),
            config,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encodes token ids [B, L] to hidden states [B, L, hidden].
    ///
    /// `clip_skip` follows diffusers: 0 gives the last layer's output; k > 0 stops k layers
    /// before the end. The final layer norm is applied in both cases.
    pub fn forward(&self, ids: &[Vec<u32>], clip_skip: usize) -> Result<Tensor<3>> {
        let batch = ids.len();
        let len = ids.first().map_or(0, Vec::len);
        if batch == 0 || len == 0 || ids.iter().any(|row| row.len() != len) {
            return Err(Error::InvalidInput(
                "text encoder input must be a non-empty batch of equal-length id rows".into(),
            ));
        }
        if len > self.config.max_position_embeddings {
            return Err(Error::InvalidInput(format!(
                "{len} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            )));
        }
        if clip_skip >= self.layers.len() {
            return Err(Error::InvalidInput(format!(
                "clip_skip {clip_skip} must be below the encoder's {} layers",
                self.layers.len()
            )));
        }
        let rows = self.token_embedding.rows();
        if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= rows) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {rows}"
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = (0..batch).flat_map(|_| 0..len as u32).collect();
        let shape = [batch, len];
        let mut x = self.token_embedding.forward(&flat, shape, &self.device)
            + self
                .position_embedding
                .forward(&positions, shape, &self.device);
        let heads = self.config.num_attention_heads;
        for layer in &self.layers[..self.layers.len() - clip_skip] {
            x = layer.forward(x, heads, self.activation);
        }
        Ok(self.final_norm.forward(x))
    }
}
