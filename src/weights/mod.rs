//! Safetensors weights with diffusers/transformers tensor names, decoded to f32 on the device.
//! Files stream in ([`WeightsUpload`]); each tensor is uploaded as soon as it is complete.
//!
//! A model asks for each tensor by name and exact shape, through a [`Scope`] that carries the
//! dotted prefix of the submodule being built. Every request is recorded, so that once the
//! model is built [`Weights::finish`] can refuse a file holding tensors the model never used
//! (a sign that the config and the weights disagree).

mod stream;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use burn::tensor::{Device, Distribution, Tensor, TensorData};

pub use stream::{StreamedTensor, TensorStream};

use crate::error::{Error, Result};

/// Buffers that transformers writes into some checkpoints but that carry no learned state.
const IGNORED_SUFFIXES: &[&str] = &["position_ids"];

/// A model's tensors, already on the device, by name.
pub struct Weights {
    /// What errors name: the weight file, or a sharded model's index.
    source: String,
    backing: Backing,
    used: RefCell<BTreeSet<String>>,
    device: Device,
}

enum Backing {
    Resident(HashMap<String, Resident>),
    /// Random values of the requested shapes, drawn on the device: for building full-size
    /// architectures (timings, memory checks) without their multi-gigabyte checkpoints.
    Random,
}

/// One uploaded tensor, flat; a model's request reshapes it (a free view).
struct Resident {
    /// The file it came from (shards differ).
    file: Rc<str>,
    shape: Vec<usize>,
    /// `Err(dtype)` for a tensor this runtime cannot decode.
    values: std::result::Result<Tensor<1>, String>,
}

impl Weights {
    /// Reads a whole safetensors file held in memory. A truncated or malformed file fails
    /// here, naming `file`.
    pub fn from_bytes(file: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        let mut upload = WeightsUpload::new(device);
        upload.begin_file(file)?;
        upload.push(bytes)?;
        upload.end_file()?;
        upload.finish(file)
    }

    /// Random N(0, 0.02²) weights (unit scale for norms) for any requested tensor. Not
    /// seeded: only for timings and shape checks, never for images.
    pub fn random(device: &Device) -> Weights {
        Weights {
            source: "<random weights>".into(),
            backing: Backing::Random,
            used: RefCell::new(BTreeSet::new()),
            device: device.clone(),
        }
    }

    /// Whether the file holds a tensor of this name (to tell a full VAE from a decoder).
    pub fn contains(&self, name: &str) -> bool {
        match &self.backing {
            Backing::Resident(t) => t.contains_key(name),
            Backing::Random => false,
        }
    }

    fn names(&self) -> Vec<&str> {
        match &self.backing {
            Backing::Resident(t) => t.keys().map(String::as_str).collect(),
            Backing::Random => Vec::new(),
        }
    }

    pub fn root(&self) -> Scope<'_> {
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
                file: self.source.clone(),
                count: unused.len(),
                first: first.to_string(),
            }),
        }
    }

    fn load<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let tensors = match &self.backing {
            Backing::Resident(t) => t,
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
        let stored = tensors.get(name).ok_or_else(|| Error::MissingTensor {
            file: self.source.clone(),
            name: name.to_string(),
        })?;
        if stored.shape != shape {
            return Err(Error::TensorShape {
                file: stored.file.to_string(),
                name: name.to_string(),
                found: stored.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let values = stored.values.as_ref().map_err(|dtype| Error::TensorDtype {
            file: stored.file.to_string(),
            name: name.to_string(),
            dtype: dtype.clone(),
        })?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(values.clone().reshape(shape))
    }
}

/// Builds [`Weights`] from one or more safetensors files (the shards of one model) that
/// arrive in chunks: each tensor goes to the device as soon as its bytes are in, so host
/// memory holds at most one tensor and one chunk, never a file.
pub struct WeightsUpload {
    device: Device,
    tensors: HashMap<String, Resident>,
    current: Option<(Rc<str>, TensorStream)>,
}

impl WeightsUpload {
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            tensors: HashMap::new(),
            current: None,
        }
    }

    /// Starts the next file; `file` names it in errors.
    pub fn begin_file(&mut self, file: &str) -> Result<()> {
        if let Some((open, _)) = &self.current {
            return Err(Error::InvalidInput(format!(
                "{file}: cannot start while {open} is still being read"
            )));
        }
        self.current = Some((file.into(), TensorStream::new(file)));
        Ok(())
    }

    /// The next bytes of the current file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let Some((file, stream)) = &mut self.current else {
            return Err(Error::InvalidInput(
                "weight bytes arrived before any file was started".into(),
            ));
        };
        let (tensors, device) = (&mut self.tensors, &self.device);
        stream.push(chunk, &mut |t| {
            let name = t.name;
            if tensors.contains_key(&name) {
                return Err(Error::WeightFile {
                    file: file.to_string(),
                    message: format!("tensor `{name}` appears in more than one shard"),
                });
            }
            let values = match t.values {
                Some(v) => {
                    let n = v.len();
                    let tensor = Tensor::from_data(TensorData::new(v, [n]), device);
                    // Hand the upload to the device now: backends that batch work would
                    // otherwise hold every tensor's host copy until the next readback.
                    device
                        .flush()
                        .map_err(|e| Error::Device(format!("uploading `{name}` failed: {e:?}")))?;
                    Ok(tensor)
                }
                None => Err(format!("{:?}", t.dtype)),
            };
            let resident = Resident {
                file: file.clone(),
                shape: t.shape,
                values,
            };
            tensors.insert(name, resident);
            Ok(())
        })
    }

    /// Takes in the tensors of another upload (a shard that arrived on its own).
    pub fn merge(&mut self, other: WeightsUpload) -> Result<()> {
        if let Some((open, _)) = &other.current {
            return Err(Error::InvalidInput(format!(
                "{open}: the file was never ended"
            )));
        }
        for (name, resident) in other.tensors {
            if self.tensors.contains_key(&name) {
                return Err(Error::WeightFile {
                    file: resident.file.to_string(),
                    message: format!("tensor `{name}` appears in more than one shard"),
                });
            }
            self.tensors.insert(name, resident);
        }
        Ok(())
    }

    /// Ends the current file: fails if it was truncated.
    pub fn end_file(&mut self) -> Result<()> {
        match self.current.take() {
            Some((_, stream)) => stream.finish(),
            None => Err(Error::InvalidInput("no weight file is being read".into())),
        }
    }

    /// The uploaded tensors; `source` (the file, or a sharded model's index) names them in
    /// errors about missing or unused tensors.
    pub fn finish(self, source: &str) -> Result<Weights> {
        if let Some((open, _)) = &self.current {
            return Err(Error::InvalidInput(format!(
                "{open}: the file was never ended"
            )));
        }
        Ok(Weights {
            source: source.to_string(),
            backing: Backing::Resident(self.tensors),
            used: RefCell::new(BTreeSet::new()),
            device: self.device,
        })
    }
}

/// A dotted name prefix inside a [`Weights`] file: `scope.at("mid_block").at("resnets.0")`.
#[derive(Clone)]
pub struct Scope<'w> {
    weights: &'w Weights,
    prefix: String,
}

impl<'w> Scope<'w> {
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
