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
/// SDXL's second text encoder (`CLIPTextModelWithProjection`).
pub const CONFIG_FILE_2: &str = "text_encoder_2/config.json";

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
    /// Where the pooled output is read, as transformers reads it: the first position of this
    /// id (the first position where there is none), or, for the legacy value 2 (as CLIP's
    /// original configs have it) or none, the position of the largest id (the end token,
    /// which has the largest id of CLIP's vocabulary).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The width of `text_projection` (`CLIPTextModelWithProjection`).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_file(CONFIG_FILE, json)
    }

    /// [`ClipTextConfig::from_json`] for the config at `file` (errors name it).
    pub fn from_file(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        check_size(file, "vocab_size", c.vocab_size, 1 << 20)?;
        check_size(file, "hidden_size", c.hidden_size, 1 << 14)?;
        check_size(file, "intermediate_size", c.intermediate_size, 1 << 16)?;
        check_size(file, "num_hidden_layers", c.num_hidden_layers, 256)?;
        check_size(file, "num_attention_heads", c.num_attention_heads, 256)?;
        check_size(
            file,
            "max_position_embeddings",
            c.max_position_embeddings,
            1 << 14,
        )?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::config(
                file,
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
    /// `CLIPTextModelWithProjection`'s `text_projection` (SDXL's second encoder): the pooled
    /// output's projection, and its width.
    projection: Option<(Linear, usize)>,
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
            // At the file's root, beside `text_model.`.
            projection: weights
                .contains("text_projection.weight")
                .then(|| {
                    let width = config.projection_dim.unwrap_or(d);
                    Linear::load(&weights.root().at("text_projection"), d, width, false)
                        .map(|linear| (linear, width))
                })
                .transpose()?,
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
        self.check(ids, clip_skip)?;
        let mut x = self.embed(ids);
        let heads = self.config.num_attention_heads;
        for layer in &self.layers[..self.layers.len() - clip_skip] {
            x = layer.forward(x, heads, self.activation);
        }
        Ok(self.final_norm.forward(x))
    }

    /// Refuses ids the encoder cannot take, and a `clip_skip` that leaves no layer.
    fn check(&self, ids: &[Vec<u32>], clip_skip: usize) -> Result<()> {
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
        Ok(())
    }

    /// What SDXL's pipelines take from each text encoder: the hidden states `clip_skip + 1`
    /// layers before the end, without the final layer norm [B, L, hidden], and the pooled
    /// output: the final layer-normed state at the end token, through `text_projection`
    /// where the encoder has one [B, projection or hidden].
    pub fn penultimate_and_pooled(
        &self,
        ids: &[Vec<u32>],
        clip_skip: usize,
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        // One layer deeper than `forward` would stop: the penultimate layer.
        self.check(ids, clip_skip + 1)?;
        let mut x = self.embed(ids);
        let heads = self.config.num_attention_heads;
        let keep = self.layers.len() - clip_skip - 1;
        let mut kept = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if i == keep {
                kept = Some(x.clone());
            }
            x = layer.forward(x, heads, self.activation);
        }
        let last = self.final_norm.forward(x);
        let [batch, _, width] = last.dims();
        let rows = ids
            .iter()
            .enumerate()
            .map(|(b, row)| {
                let at = self.pooled_position(row);
                last.clone()
                    .slice([b..b + 1, at..at + 1, 0..width])
                    .reshape([1, width])
            })
            .collect::<Vec<_>>();
        let mut pooled = Tensor::cat(rows, 0);
        if let Some((projection, _)) = &self.projection {
            pooled = projection.forward(pooled);
        }
        debug_assert_eq!(pooled.dims()[0], batch);
        Ok((kept.expect("at least one layer"), pooled))
    }

    /// The width of [`ClipTextEncoder::penultimate_and_pooled`]'s pooled output.
    pub fn pooled_width(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.config.hidden_size, |(_, width)| *width)
    }

    /// transformers' rule for the pooled position (see [`ClipTextConfig::eos_token_id`]).
    fn pooled_position(&self, ids: &[u32]) -> usize {
        let largest = || {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&id| id == max).unwrap_or(0)
        };
        match self.config.eos_token_id {
            None | Some(2) => largest(),
            // As transformers: the first end token, or the first position without one.
            Some(eos) => ids.iter().position(|&id| id == eos).unwrap_or(0),
        }
    }

    /// Token plus position embeddings of a checked batch of ids, [B, L, hidden].
    fn embed(&self, ids: &[Vec<u32>]) -> Tensor<3> {
        let (batch, len) = (ids.len(), ids[0].len());
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = (0..batch).flat_map(|_| 0..len as u32).collect();
        let shape = [batch, len];
        self.token_embedding.forward(&flat, shape, &self.device)
            + self
                .position_embedding
                .forward(&positions, shape, &self.device)
    }
}
