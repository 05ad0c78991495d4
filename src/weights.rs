//! Safetensors weights with diffusers/transformers tensor names, decoded to f32 on the device.
//!
//! A model asks for each tensor by name and exact shape, through a [`Scope`] that carries the
//! dotted prefix of the submodule being built. Every request is recorded, so that once the
//! model is built [`Weights::finish`] can refuse a file holding tensors the model never used
//! (a sign that the config and the weights disagree).

use std::cell::RefCell;
use std::collections::BTreeSet;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Buffers that transformers writes into some checkpoints but that carry no learned state.
const IGNORED_SUFFIXES: &[&str] = &["position_ids"];

pub struct Weights<'a> {
    file: String,
    backing: Backing<'a>,
    used: RefCell<BTreeSet<String>>,
    device: Device,
}

enum Backing<'a> {
    File(SafeTensors<'a>),
    /// Random values of the requested shapes, drawn on the device: for building full-size
    /// architectures (timings, memory checks) without their multi-gigabyte checkpoints.
    Random,
}

impl<'a> Weights<'a> {
    /// Parses a safetensors buffer. A truncated or malformed file fails here, naming `file`.
    pub fn from_bytes(file: &str, bytes: &'a [u8], device: &Device) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| Error::WeightFile {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            file: file.to_string(),
            backing: Backing::File(tensors),
            used: RefCell::new(BTreeSet::new()),
            device: device.clone(),
        })
    }

    /// Random N(0, 0.02²) weights (unit scale for norms) for any requested tensor. Not
    /// seeded: only for timings and shape checks, never for images.
    pub fn random(device: &Device) -> Weights<'static> {
        Weights {
            file: "<random weights>".into(),
            backing: Backing::Random,
            used: RefCell::new(BTreeSet::new()),
            device: device.clone(),
        }
    }

    /// Whether the file holds a tensor of this name (to tell a full VAE from a decoder).
    pub fn contains(&self, name: &str) -> bool {
        self.names().contains(&name)
    }

    fn names(&self) -> Vec<&str> {
        match &self.backing {
            Backing::File(t) => t.names(),
            Backing::Random => Vec::new(),
        }
    }

    pub fn root(&self) -> Scope<'_, 'a> {
        Scope {
            weights: self,
            prefix: String::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Marks every tensor under `prefix` as accounted for: parts of a checkpoint that this
    /// runtime knowingly does not use (the VAE's encoder when only decoding).
    pub fn skip_prefix(&self, prefix: &str) {
        let mut used = self.used.borrow_mut();
        for name in self.names() {
            if name.starts_with(prefix) {
                used.insert(name.to_string());
            }
        }
    }

    /// Fails if the file holds tensors that no part of the model asked for.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut unused: Vec<&str> = self
            .names()
            .into_iter()
            .filter(|n| !used.contains(*n))
            .filter(|n| !IGNORED_SUFFIXES.iter().any(|s| n.ends_with(s)))
            .collect();
        unused.sort_unstable();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::UnusedTensors {
                file: self.file.clone(),
                count: unused.len(),
                first: first.to_string(),
            }),
        }
    }

    fn load<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let tensors = match &self.backing {
            Backing::File(t) => t,
            Backing::Random => {
                self.used.borrow_mut().insert(name.to_string());
                let is_norm_scale = name.ends_with("weight") && D == 1;
                return Ok(if is_norm_scale {
                    Tensor::ones(shape, &self.device)
                } else {
                    Tensor::random(shape, Distribution::Normal(0.0, 0.02), &self.device)
                });
            }
        };
        let view = tensors.tensor(name).map_err(|_| Error::MissingTensor {
            file: self.file.clone(),
            name: name.to_string(),
        })?;
        if view.shape() != shape {
            return Err(Error::TensorShape {
                file: self.file.clone(),
                name: name.to_string(),
                found: view.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        let values = decode_f32(view.dtype(), view.data()).ok_or_else(|| Error::TensorDtype {
            file: self.file.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }
}

/// Decodes little-endian f32, f16 or bf16 bytes to f32; `None` for any other dtype.
fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(values)
}

/// A dotted name prefix inside a [`Weights`] file: `scope.at("mid_block").at("resnets.0")`.
#[derive(Clone)]
pub struct Scope<'w, 'a> {
    weights: &'w Weights<'a>,
    prefix: String,
}

impl<'w, 'a> Scope<'w, 'a> {
    pub fn at(&self, name: impl std::fmt::Display) -> Self {
        Self {
            weights: self.weights,
            prefix: self.path(&name.to_string()),
        }
    }

    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.weights.load(&self.path(name), shape)
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}
