//! Safetensors weights with diffusers/transformers tensor names, decoded to f32 on the device.
//! Files stream in ([`WeightsUpload`]); each tensor is uploaded as soon as it is complete.
//!
//! A model asks for each tensor by name and exact shape, through a [`Scope`] that carries the
//! dotted prefix of the submodule being built. Every request is recorded, so that once the
//! model is built [`Weights::finish`] can refuse a file holding tensors the model never used
//! (a sign that the config and the weights disagree).

mod lora;
mod regroup;
mod resident;
mod stream;
mod upload;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use burn::tensor::{Device, Distribution, FloatDType, Tensor};

pub use lora::{EmbeddingVectors, Lora, LoraTarget, ScaledLora, embedding_vectors};
pub use regroup::Regroup;
pub use stream::{StreamedTensor, TensorStream};
pub use upload::WeightsUpload;

use resident::{Parts, Resident, layout_for};

use crate::error::{Error, Result};
use crate::kernels::Kernels;

/// Buffers that transformers writes into some checkpoints but that carry no learned state.
const IGNORED_SUFFIXES: &[&str] = &["position_ids"];

/// A model's tensors, already on the device, by name.
pub struct Weights {
    /// What errors name: the weight file, or a sharded model's index.
    source: String,
    backing: Backing,
    used: RefCell<BTreeSet<String>>,
    device: Device,
    /// The kernels the layers built from these weights run.
    kernels: Kernels,
    /// LoRA updates not yet merged, by the weight they adapt.
    pending: RefCell<HashMap<String, Vec<lora::Delta>>>,
    /// The float type tensors are handed out in, where it is not the device's own (an f32
    /// VAE on a device that computes in f16).
    dtype: Option<FloatDType>,
}

enum Backing {
    Resident(HashMap<String, Resident>),
    /// Random values of the requested shapes, drawn on the device: for building full-size
    /// architectures (timings, memory checks) without their multi-gigabyte checkpoints.
    Random,
    /// No values at all (one zero broadcast to each shape), only a count of the bytes the
    /// model asked for: a model's weight size from its config alone.
    Count(std::cell::Cell<u64>),
}

impl Weights {
    /// Reads a whole safetensors file held in memory. A truncated or malformed file fails
    /// here, naming `file`.
    pub fn from_bytes(file: &str, bytes: &[u8], device: &Device) -> Result<Self> {
        let mut upload = WeightsUpload::new(device);
        upload.begin_file(file, Some(bytes.len() as u64))?;
        upload.push(bytes)?;
        upload.end_file()?;
        upload.finish(file)
    }

    /// Random N(0, 0.02²) weights (unit scale for norms) for any requested tensor. Not
    /// seeded: only for timings and shape checks, never for images.
    pub fn random(device: &Device) -> Weights {
        Self::over("<random weights>", Backing::Random, device)
    }

    /// Weights that only count: every request succeeds with a broadcast zero, and
    /// [`Weights::requested_bytes`] tells how many f32 bytes the model asked for.
    pub fn count_only(device: &Device) -> Weights {
        Self::over(
            "<counted weights>",
            Backing::Count(std::cell::Cell::new(0)),
            device,
        )
    }

    /// Weights over `backing`, none of them asked for yet, run by the default kernels.
    fn over(source: impl Into<String>, backing: Backing, device: &Device) -> Self {
        Self {
            source: source.into(),
            backing,
            used: RefCell::default(),
            device: device.clone(),
            kernels: Kernels::default(),
            pending: RefCell::default(),
            dtype: None,
        }
    }

    /// The f32 bytes of every tensor requested so far.
    pub fn requested_bytes(&self) -> u64 {
        match &self.backing {
            Backing::Count(total) => total.get(),
            Backing::Resident(t) => self
                .used
                .borrow()
                .iter()
                .filter_map(|n| t.get(n))
                .map(|r| r.shape.iter().product::<usize>() as u64 * 4)
                .sum(),
            Backing::Random => 0,
        }
    }

    /// The weight file (or a sharded model's index) these were read from, as errors name it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the file holds a tensor of this name (to tell a full VAE from a decoder).
    pub fn contains(&self, name: &str) -> bool {
        match &self.backing {
            Backing::Resident(t) => t.contains_key(name),
            Backing::Random | Backing::Count(_) => false,
        }
    }

    fn names(&self) -> Vec<&str> {
        match &self.backing {
            Backing::Resident(t) => t.keys().map(String::as_str).collect(),
            Backing::Random | Backing::Count(_) => Vec::new(),
        }
    }

    /// Every tensor's name and shape, in name order (a checkpoint's layout is told from them).
    pub fn shapes(&self) -> Vec<(&str, &[usize])> {
        let mut shapes: Vec<(&str, &[usize])> = match &self.backing {
            Backing::Resident(t) => t.iter().map(|(n, r)| (n.as_str(), &r.shape[..])).collect(),
            Backing::Random | Backing::Count(_) => Vec::new(),
        };
        shapes.sort_unstable();
        shapes
    }

    /// These weights handed out in `dtype` (see [`Weights::dtype`]) instead of the device's
    /// float type.
    pub fn with_dtype(mut self, dtype: FloatDType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// The float type the weights are handed out in, where it is not the device's own.
    pub fn dtype(&self) -> Option<FloatDType> {
        self.dtype
    }

    /// These weights with the layers built from them running `kernels` (the default is
    /// [`Kernels::Fused`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Merges `loras`' updates for `target` into these weights as the model loads them. Fails
    /// now if a module matches no weight of the file; [`Weights::finish`] fails if the model
    /// never asked for one it matched.
    pub fn adapt(&self, loras: &[ScaledLora], target: LoraTarget) -> Result<()> {
        let names = self.names();
        let deltas = lora::deltas_for(loras, target, &names)?;
        self.pending.borrow_mut().extend(deltas);
        Ok(())
    }

    /// Forgets which tensors were asked for and every LoRA update not yet merged: to build a
    /// component from these weights again ([`Weights::adapt`] first, for other scales).
    pub fn reset(&self) {
        self.used.borrow_mut().clear();
        self.pending.borrow_mut().clear();
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

    /// Fails if the file holds tensors that no part of the model asked for, or a LoRA
    /// adapts a weight that no part of the model asked for.
    pub fn finish(&self) -> Result<()> {
        if let Some(delta) = self.pending.borrow().values().flatten().next() {
            return Err(Error::InvalidInput(format!(
                "{}: adapts a weight this model never loads",
                delta.label
            )));
        }
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
        match &self.backing {
            Backing::Resident(_) => {}
            Backing::Count(total) => {
                total.set(total.get() + shape.iter().product::<usize>() as u64 * 4);
                return Ok(Tensor::<D>::zeros([1; D], &self.device).expand(shape));
            }
            Backing::Random => {
                self.used.borrow_mut().insert(name.to_string());
                let is_norm_scale = name.ends_with("weight") && D == 1;
                let normal = Distribution::Normal(0.0, 0.02);
                return Ok(if is_norm_scale {
                    Tensor::ones(shape, &self.device)
                } else {
                    layout_for(&shape, &self.device).view(
                        Tensor::random([shape.iter().product::<usize>()], normal, &self.device),
                        shape,
                    )
                });
            }
        };
        // A LoRA update that reads more inputs than the stored weight has widens it, the new
        // inputs' weights zero (FLUX.1's control LoRAs widen its input layer).
        let mut stored_shape = shape;
        if let Some(stored) = self.narrower(name, &shape) {
            stored_shape[D - 1] = stored;
        }
        let stored = self.resident(name, &stored_shape)?;
        let parts = self.decoded(name, stored)?;
        if parts.blocks.len() > 1 {
            let limits = crate::device::limits(&self.device);
            return Err(Error::DeviceLimit(format!(
                "tensor `{name}` needs one buffer of {}, but {} binds at most {} per buffer",
                human_bytes(shape.iter().product::<usize>() as u64 * 4),
                limits.adapter,
                human_bytes(limits.max_binding_bytes),
            )));
        }
        self.used.borrow_mut().insert(name.to_string());
        let mut flat = parts.blocks[0].clone();
        if let Some(dtype) = self.dtype {
            flat = flat.cast(dtype);
        }
        let mut weight = stored.layout.view(flat, stored_shape);
        if stored_shape != shape {
            let mut zeros = Tensor::<D>::zeros(shape, &self.device);
            if let Some(dtype) = self.dtype {
                zeros = zeros.cast(dtype);
            }
            weight = zeros.slice_assign(stored_shape.map(|d| 0..d), weight);
        }
        if let Some(deltas) = self.pending.borrow_mut().remove(name) {
            for delta in deltas {
                weight = delta.merged_into(weight, &self.device)?;
            }
        }
        Ok(weight)
    }

    /// Tensors concatenated along their first axis. Only the count is taken for counted
    /// weights: their concatenation would allocate what counting is meant to avoid.
    fn load_stacked<const D: usize>(&self, parts: &[(String, [usize; D])]) -> Result<Tensor<D>> {
        let mut loaded = parts
            .iter()
            .map(|(name, shape)| self.load(name, *shape))
            .collect::<Result<Vec<_>>>()?;
        let mut stacked = parts[0].1;
        stacked[0] = parts.iter().map(|(_, shape)| shape[0]).sum();
        Ok(match &self.backing {
            Backing::Count(_) => Tensor::<D>::zeros([1; D], &self.device).expand(stacked),
            _ if loaded.len() == 1 => loaded.pop().expect("one part"),
            _ => Tensor::cat(loaded, 0),
        })
    }

    fn decoded<'s>(&self, name: &str, stored: &'s Resident) -> Result<&'s Parts> {
        stored.values.as_ref().map_err(|dtype| Error::TensorDtype {
            file: stored.file.to_string(),
            name: name.to_string(),
            dtype: dtype.clone(),
        })
    }

    /// A [rows, cols] tensor as blocks of whole rows, each small enough for the device to
    /// bind: for lookups that touch a few rows of a large table.
    fn load_rows(&self, name: &str, shape: [usize; 2]) -> Result<Vec<Tensor<2>>> {
        if let Backing::Random | Backing::Count(_) = self.backing {
            return Ok(vec![self.load(name, shape)?]);
        }
        let parts = self.decoded(name, self.resident(name, &shape)?)?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(parts
            .blocks
            .iter()
            .map(|b| {
                let rows = b.dims()[0] / shape[1];
                b.clone().reshape([rows, shape[1]])
            })
            .collect())
    }

    /// The columns of the stored 2-D weight `name` where a pending LoRA update reads `shape`'s
    /// more inputs (see [`lora::Lora::flux_input_width`]).
    fn narrower(&self, name: &str, shape: &[usize]) -> Option<usize> {
        let Backing::Resident(tensors) = &self.backing else {
            return None;
        };
        let stored = &tensors.get(name)?.shape;
        let (&[rows, columns], &[stored_rows, stored_columns]) = (shape, &stored[..]) else {
            return None;
        };
        let wider = stored_rows == rows && stored_columns < columns;
        let read = self
            .pending
            .borrow()
            .get(name)
            .is_some_and(|deltas| deltas.iter().any(|d| d.inputs() == Some(columns)));
        (wider && read).then_some(stored_columns)
    }

    /// The uploaded tensor `name`, which must have `shape`.
    fn resident(&self, name: &str, shape: &[usize]) -> Result<&Resident> {
        let Backing::Resident(tensors) = &self.backing else {
            unreachable!("only called for uploaded weights")
        };
        let stored = tensors.get(name).ok_or_else(|| Error::MissingTensor {
            file: self.source.clone(),
            name: name.to_string(),
        })?;
        // A [out, in, 1, 1] convolution weight serves as the [out, in] linear one it equals
        // (older diffusers VAEs store their attention projections so), never the reverse;
        // and a [1, rows, cols] table as its [rows, cols] (SD 3's position table).
        let extra = stored.shape.len().saturating_sub(shape.len());
        let squeezed = extra > 0
            && ((stored.shape[..shape.len()] == *shape
                && stored.shape[shape.len()..].iter().all(|&d| d == 1))
                || (stored.shape[extra..] == *shape
                    && stored.shape[..extra].iter().all(|&d| d == 1)));
        if stored.shape != shape && !squeezed {
            return Err(Error::TensorShape {
                file: stored.file.to_string(),
                name: name.to_string(),
                found: stored.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(stored)
    }
}

/// Bytes for people: "152.0 MiB".
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A dotted name prefix inside a [`Weights`] file: `scope.at("mid_block").at("resnets.0")`.
#[derive(Clone)]
pub struct Scope<'w> {
    weights: &'w Weights,
    prefix: String,
}

impl<'w> Scope<'w> {
    /// The kernels the layers built from this scope run.
    pub fn kernels(&self) -> Kernels {
        self.weights.kernels
    }

    pub fn at(&self, name: impl std::fmt::Display) -> Self {
        Self {
            weights: self.weights,
            prefix: self.path(&name.to_string()),
        }
    }

    /// A tensor of `value`s that a layer holds with no entry in the file (a layer norm's
    /// unit scale where the model learns none), in the type the weights are handed out in.
    pub fn constant<const D: usize>(&self, shape: [usize; D], value: f32) -> Tensor<D> {
        let t = Tensor::<D>::full(shape, value, self.weights.device());
        match self.weights.dtype {
            Some(dtype) => t.cast(dtype),
            None => t,
        }
    }

    /// Whether the file holds tensor `name` of this scope (to tell one naming from another).
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.path(name))
    }

    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.weights.load(&self.path(name), shape)
    }

    /// The tensor `name` of each scope, of the shape given with it, concatenated along their
    /// first axis: the weights of projections that run as one matmul. Until the weights are
    /// dropped (after their model is built) the parts and the whole are both held.
    pub fn stacked<const D: usize>(
        parts: &[(Scope<'w>, [usize; D])],
        name: &str,
    ) -> Result<Tensor<D>> {
        let weights = parts.first().expect("at least one scope").0.weights;
        let names: Vec<(String, [usize; D])> = parts
            .iter()
            .map(|(scope, shape)| (scope.path(name), *shape))
            .collect();
        weights.load_stacked(&names)
    }

    /// A [rows, cols] table in blocks of whole rows that the device can bind (one block
    /// where it fits): see [`crate::nn::Embedding`].
    pub fn row_blocks(&self, name: &str, shape: [usize; 2]) -> Result<Vec<Tensor<2>>> {
        self.weights.load_rows(&self.path(name), shape)
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}
