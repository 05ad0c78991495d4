//! transformers' `T5EncoderModel`: SD 3's third text encoder (T5 v1.1 XXL).
//!
//! A pre-norm transformer with RMS norms (no mean, no shift), unscaled attention scores plus a
//! learned bias per head and relative-position bucket (the first block's table, shared by
//! all blocks), and a gated GELU feed-forward (v1.1; the original T5's ReLU one too). SD 3's
//! pipeline feeds it 256 ids without an attention mask, so padding is attended like text.

use burn::tensor::activation::{gelu_approximate, relu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use super::config::{check_size, parse};
use crate::error::{Error, Result};
use crate::nn::{Embedding, Linear, RmsNorm};
use crate::weights::Weights;

/// SD 3's T5 config; FLUX's is [`CONFIG_FILE_FLUX`].
pub const CONFIG_FILE: &str = "text_encoder_3/config.json";
/// FLUX's T5 config: its second text encoder.
pub const CONFIG_FILE_FLUX: &str = "text_encoder_2/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "d_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "d_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "d_proj")]
    pub feed_forward_proj: String,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
}

fn d_buckets() -> usize {
    32
}
fn d_max_distance() -> usize {
    128
}
fn d_proj() -> String {
    "relu".into()
}
fn d_eps() -> f64 {
    1e-6
}

/// The feed-forward's form: v1.1's gated GELU (tanh approximation, transformers'
/// `gelu_new`), or the original T5's plain ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedForwardKind {
    GatedGelu,
    Relu,
}

impl T5Config {
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_file(CONFIG_FILE, json)
    }

    /// The config in `json`, read from `file` (which errors name).
    pub fn from_file(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        let f = file;
        for (field, value, max) in [
            ("vocab_size", c.vocab_size, 1 << 20),
            ("d_model", c.d_model, 1 << 14),
            ("d_kv", c.d_kv, 1024),
            ("d_ff", c.d_ff, 1 << 16),
            ("num_layers", c.num_layers, 256),
            ("num_heads", c.num_heads, 256),
            (
                "relative_attention_num_buckets",
                c.relative_attention_num_buckets,
                4096,
            ),
            (
                "relative_attention_max_distance",
                c.relative_attention_max_distance,
                1 << 20,
            ),
        ] {
            check_size(f, field, value, max)?;
        }
        if c.relative_attention_num_buckets < 4 {
            return Err(Error::config(
                f,
                "relative_attention_num_buckets must be at least 4",
            ));
        }
        c.feed_forward().map_err(|e| Error::config(f, e))?;
        Ok(c)
    }

    /// Its feed-forward, or what is wrong with `feed_forward_proj` (checked when the config
    /// is read, so a loaded config always has one).
    fn feed_forward(&self) -> std::result::Result<FeedForwardKind, String> {
        match self.feed_forward_proj.as_str() {
            "gated-gelu" | "gated-gelu_new" => Ok(FeedForwardKind::GatedGelu),
            "relu" => Ok(FeedForwardKind::Relu),
            other => Err(format!(
                "feed_forward_proj: {other:?} is not supported (\"gated-gelu\", \"relu\")"
            )),
        }
    }
}

struct FeedForward {
    kind: FeedForwardKind,
    /// `wi` (ReLU), or `wi_0` and `wi_1` side by side (gated: gelu(wi_0 x) * wi_1 x).
    input: Linear,
    output: Linear,
}

struct Block {
    attention_norm: RmsNorm,
    /// q, k and v side by side.
    qkv: Linear,
    out: Linear,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

pub struct T5Encoder {
    config: T5Config,
    embedding: Embedding,
    /// [buckets, heads]: the first block's relative-position bias table.
    relative_bias: Tensor<2>,
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    device: burn::tensor::Device,
}

impl T5Encoder {
    pub fn load(config: T5Config, weights: &Weights) -> Result<Self> {
        let w = weights.root();
        let (d, inner) = (config.d_model, config.num_heads * config.d_kv);
        let eps = config.layer_norm_epsilon;
        // The embedding is saved as `shared` and, tied to it, `encoder.embed_tokens` (often
        // left out of the file as a duplicate): one of them is read.
        let embedding = match w.contains("shared.weight") {
            true => {
                weights.skip_prefix("encoder.embed_tokens.");
                Embedding::load(&w.at("shared"), config.vocab_size, d)?
            }
            false => Embedding::load(&w.at("encoder.embed_tokens"), config.vocab_size, d)?,
        };
        let kind = config
            .feed_forward()
            .map_err(|e| Error::config(CONFIG_FILE, e))?;
        let blocks = (0..config.num_layers)
            .map(|i| {
                let b = w.at("encoder.block").at(i);
                let (attn, ff) = (b.at("layer.0"), b.at("layer.1"));
                let sa = attn.at("SelfAttention");
                let dense = ff.at("DenseReluDense");
                let input = match kind {
                    FeedForwardKind::GatedGelu => Linear::load_side_by_side(
                        &["wi_0", "wi_1"].map(|n| (dense.at(n), config.d_ff)),
                        d,
                        false,
                    )?,
                    FeedForwardKind::Relu => Linear::load(&dense.at("wi"), d, config.d_ff, false)?,
                };
                Ok(Block {
                    attention_norm: RmsNorm::load(&attn.at("layer_norm"), d, eps)?,
                    qkv: Linear::load_side_by_side(
                        &["q", "k", "v"].map(|n| (sa.at(n), inner)),
                        d,
                        false,
                    )?,
                    out: Linear::load(&sa.at("o"), inner, d, false)?,
                    ff_norm: RmsNorm::load(&ff.at("layer_norm"), d, eps)?,
                    ff: FeedForward {
                        kind,
                        input,
                        output: Linear::load(&dense.at("wo"), config.d_ff, d, false)?,
                    },
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            relative_bias: w.tensor(
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                [config.relative_attention_num_buckets, config.num_heads],
            )?,
            final_norm: RmsNorm::load(&w.at("encoder.final_layer_norm"), d, eps)?,
            embedding,
            blocks,
            device: weights.device().clone(),
            config,
        })
    }

    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The last hidden states [1, L, d_model] for one row of `ids`.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor<3>> {
        let vocab = self.config.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside T5's vocabulary of {vocab}"
            )));
        }
        let len = ids.len();
        let (heads, d_kv) = (self.config.num_heads, self.config.d_kv);
        let mut x = self.embedding.forward(ids, [1, len], &self.device);
        let bias = self.position_bias(len);
        let split = |t: Tensor<3>| t.reshape([1, len, heads, d_kv]).swap_dims(1, 2);
        let options = AttentionModuleOptions {
            // T5 folds the usual 1/sqrt(d) into its weights.
            scale: Some(1.0),
            softcap: None,
            is_causal: false,
        };
        for block in &self.blocks {
            let [q, k, v] = block
                .qkv
                .forward(block.attention_norm.forward(x.clone()))
                .chunk(3, 2)
                .try_into()
                .expect("three parts");
            let attended = attention(
                split(q),
                split(k),
                split(v),
                None,
                Some(bias.clone()),
                options,
            )
            .swap_dims(1, 2)
            .reshape([1, len, heads * d_kv]);
            x = x + block.out.forward(attended);
            let h = block.ff.input.forward(block.ff_norm.forward(x.clone()));
            let h = match block.ff.kind {
                FeedForwardKind::GatedGelu => {
                    let [gate, value] = h.chunk(2, 2).try_into().expect("halves");
                    gelu_approximate(gate) * value
                }
                FeedForwardKind::Relu => relu(h),
            };
            x = x + block.ff.output.forward(h);
        }
        Ok(self.final_norm.forward(x))
    }

    /// [1, heads, L, L]: each head's bias for the bucket of every key's offset from each query.
    fn position_bias(&self, len: usize) -> Tensor<4> {
        let buckets: Vec<i32> = (0..len)
            .flat_map(|q| (0..len).map(move |k| (q, k)))
            .map(|(q, k)| self.bucket(k as i64 - q as i64) as i32)
            .collect();
        let index =
            Tensor::<1, Int>::from_data(TensorData::new(buckets, [len * len]), &self.device);
        let heads = self.config.num_heads;
        self.relative_bias
            .clone()
            .select(0, index)
            .reshape([len, len, heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    /// transformers' bidirectional bucket of a key's offset from its query: half the buckets
    /// for each direction; exact offsets up to a quarter of the buckets, then logarithmic
    /// up to `relative_attention_max_distance` (in f32, as transformers computes it).
    fn bucket(&self, offset: i64) -> usize {
        let half = self.config.relative_attention_num_buckets / 2;
        let base = if offset > 0 { half } else { 0 };
        let distance = offset.unsigned_abs() as usize;
        let exact = half / 2;
        if distance < exact {
            return base + distance;
        }
        let max = self.config.relative_attention_max_distance as f64;
        let log = (distance as f32 / exact as f32).ln() / (max / exact as f64).ln() as f32;
        let large = exact + (log * (half - exact) as f32) as usize;
        base + large.min(half - 1)
    }
}
