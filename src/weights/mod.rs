//! Safetensors weights with diffusers/transformers tensor names, decoded to f32 on the device.
//! Files stream in ([`WeightsUpload`]); each tensor is uploaded as soon as it is complete.
//!
//! A model asks for each tensor by name and exact shape, through a [`Scope`] that carries the
//! dotted prefix of the submodule being built. Every request is recorded, so that once the
//! model is built [`Weights::finish`] can refuse a file holding tensors the model never used
//! (a sign that the config and the weights disagree).

mod lora;
mod stream;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use burn::tensor::{Device, Distribution, FloatDType, Tensor, TensorData};

pub use lora::{EmbeddingVectors, Lora, LoraTarget, ScaledLora, embedding_vectors};
pub use stream::{StreamedTensor, TensorStream};

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

/// One uploaded tensor, flat; a model's request reshapes it (a free view).
struct Resident {
    /// The file it came from (shards differ).
    file: Rc<str>,
    shape: Vec<usize>,
    /// How its values lie on the device (see [`layout_for`]).
    layout: Layout,
    /// `Err(dtype)` for a tensor this runtime cannot decode.
    values: std::result::Result<Parts, String>,
}

/// A tensor on the device: whole, or, where it is larger than the adapter can bind in one
/// buffer (a big vocabulary's embedding), as consecutive blocks of whole rows.
struct Parts {
    blocks: Vec<Tensor<1>>,
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
        Weights {
            source: "<random weights>".into(),
            backing: Backing::Random,
            used: RefCell::new(BTreeSet::new()),
            device: device.clone(),
            kernels: Kernels::default(),
            pending: RefCell::default(),
            dtype: None,
        }
    }

    /// Weights that only count: every request succeeds with a broadcast zero, and
    /// [`Weights::requested_bytes`] tells how many f32 bytes the model asked for.
    pub fn count_only(device: &Device) -> Weights {
        Weights {
            source: "<counted weights>".into(),
            backing: Backing::Count(std::cell::Cell::new(0)),
            used: RefCell::new(BTreeSet::new()),
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

    /// Moves the tensors into `parts` new sets under new names, as `route` says for each
    /// (a single-file checkpoint splitting into its components). Nothing is copied except
    /// the fused tensors that [`Regroup::Split`] cuts into equal row blocks.
    pub fn regroup(
        self,
        parts: usize,
        mut route: impl FnMut(&str) -> Regroup,
    ) -> Result<Vec<Weights>> {
        let Backing::Resident(tensors) = self.backing else {
            return Err(Error::InvalidInput(
                "only loaded weights can be regrouped".into(),
            ));
        };
        let mut groups: Vec<HashMap<String, Resident>> =
            (0..parts).map(|_| HashMap::new()).collect();
        let mut place = |part: usize, name: String, resident: Resident| -> Result<()> {
            let group = groups.get_mut(part).ok_or_else(|| {
                Error::InvalidInput(format!("tensor `{name}` routed to part {part} of {parts}"))
            })?;
            if group.insert(name.clone(), resident).is_some() {
                return Err(Error::WeightFile {
                    file: self.source.clone(),
                    message: format!("two tensors map to `{name}`"),
                });
            }
            Ok(())
        };
        for (name, resident) in tensors {
            match route(&name) {
                Regroup::Drop => {}
                Regroup::Move { part, name } => place(part, name, resident)?,
                Regroup::Transpose { part, name } => {
                    let transposed = transpose_matrix(&name, resident, &self.source)?;
                    place(part, name, transposed)?
                }
                Regroup::SwapHalves { part, name } => {
                    let swapped = swap_halves(&name, resident, &self.source)?;
                    place(part, name, swapped)?
                }
                Regroup::Split { part, names } => {
                    for (piece, new_name) in split_rows(&name, resident, names.len(), &self.source)?
                        .into_iter()
                        .zip(names)
                    {
                        place(part, new_name, piece)?;
                    }
                }
            }
        }
        Ok(groups
            .into_iter()
            .map(|tensors| Weights {
                source: self.source.clone(),
                backing: Backing::Resident(tensors),
                used: RefCell::new(BTreeSet::new()),
                device: self.device.clone(),
                kernels: self.kernels,
                pending: RefCell::default(),
                dtype: None,
            })
            .collect())
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
        let stored = self.resident(name, &shape)?;
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
        let mut weight = stored.layout.view(flat, shape);
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

/// Where [`Weights::regroup`] puts one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regroup {
    /// Into part `part`, as `name`.
    Move { part: usize, name: String },
    /// Cut along its first axis into `names.len()` equal blocks (fused q/k/v projections),
    /// each into part `part` under its name.
    Split { part: usize, names: Vec<String> },
    /// A matrix stored the other way round (OpenCLIP's `x @ text_projection`), transposed
    /// into part `part` as `name`.
    Transpose { part: usize, name: String },
    /// Its two halves along the first axis in the other order (SD 3's final adaLN
    /// projections: shift then scale, where diffusers takes scale then shift), into part
    /// `part` as `name`.
    SwapHalves { part: usize, name: String },
    /// Not used by any part (training state, buffers a model recomputes).
    Drop,
}

/// A [rows, cols] `resident` as [cols, rows].
fn transpose_matrix(name: &str, resident: Resident, source: &str) -> Result<Resident> {
    let &[rows, cols] = resident.shape.as_slice() else {
        return Err(Error::WeightFile {
            file: source.to_string(),
            message: format!(
                "tensor `{name}` of shape {:?} is not a matrix",
                resident.shape
            ),
        });
    };
    let values = match resident.values {
        Err(dtype) => Err(dtype),
        Ok(parts) if parts.blocks.len() == 1 => {
            let flat = parts.blocks.into_iter().next().expect("one block");
            let t = flat
                .reshape([rows, cols])
                .transpose()
                .reshape([rows * cols]);
            Ok(Parts { blocks: vec![t] })
        }
        Ok(_) => {
            return Err(Error::WeightFile {
                file: source.to_string(),
                message: format!("tensor `{name}` is too large to transpose on this device"),
            });
        }
    };
    Ok(Resident {
        file: resident.file,
        shape: vec![cols, rows],
        layout: Layout::AsGiven,
        values,
    })
}

/// `resident` with its two row halves in the other order.
fn swap_halves(name: &str, resident: Resident, source: &str) -> Result<Resident> {
    let (file, shape, layout) = (
        resident.file.clone(),
        resident.shape.clone(),
        resident.layout,
    );
    let mut halves = split_rows(name, resident, 2, source)?;
    let second = halves.pop().expect("two halves");
    let first = halves.pop().expect("two halves");
    let values = match (first.values, second.values) {
        (Ok(a), Ok(b)) => {
            let halves: Vec<Tensor<1>> = b.blocks.into_iter().chain(a.blocks).collect();
            let whole = if layout == Layout::FilterMatrix {
                // Each half is [K, out / 2] flat: the halves sit side by side along out.
                let k = shape[1..].iter().product::<usize>();
                let columns = halves
                    .into_iter()
                    .map(|h| h.reshape([k as i32, -1]))
                    .collect();
                Tensor::cat(columns, 1).reshape([-1])
            } else {
                Tensor::cat(halves, 0)
            };
            Ok(Parts {
                blocks: vec![whole],
            })
        }
        (Err(dtype), _) | (_, Err(dtype)) => Err(dtype),
    };
    Ok(Resident {
        file,
        shape,
        layout,
        values,
    })
}

/// `resident` cut into `n` equal blocks of whole rows.
fn split_rows(name: &str, resident: Resident, n: usize, source: &str) -> Result<Vec<Resident>> {
    let rows = resident.shape.first().copied().unwrap_or(0);
    if n == 0 || rows % n != 0 {
        return Err(Error::WeightFile {
            file: source.to_string(),
            message: format!(
                "tensor `{name}` of shape {:?} does not split into {n} equal parts",
                resident.shape
            ),
        });
    }
    let mut shape = resident.shape.clone();
    shape[0] = rows / n;
    let len: usize = shape.iter().product();
    let blocks = match resident.values {
        Err(dtype) => {
            return Ok((0..n)
                .map(|_| Resident {
                    file: resident.file.clone(),
                    shape: shape.clone(),
                    layout: resident.layout,
                    values: Err(dtype.clone()),
                })
                .collect());
        }
        Ok(parts) if parts.blocks.len() == 1 => parts.blocks.into_iter().next().expect("one block"),
        Ok(_) => {
            return Err(Error::WeightFile {
                file: source.to_string(),
                message: format!("tensor `{name}` is too large to split on this device"),
            });
        }
    };
    Ok((0..n)
        .map(|i| Resident {
            file: resident.file.clone(),
            shape: shape.clone(),
            layout: resident.layout,
            values: Ok(Parts {
                blocks: vec![if resident.layout == Layout::FilterMatrix {
                    // Stored [K, out]: a block of outputs is a block of columns.
                    let k = len / shape[0];
                    let columns = i * shape[0]..(i + 1) * shape[0];
                    blocks
                        .clone()
                        .reshape([k, rows])
                        .slice([0..k, columns])
                        .reshape([len])
                } else {
                    blocks.clone().slice(i * len..(i + 1) * len)
                }],
            }),
        })
        .collect())
}

/// Builds [`Weights`] from one or more safetensors files (the shards of one model) that
/// arrive in chunks: each tensor goes to the device as soon as its bytes are in, so host
/// memory holds at most one tensor and one chunk, never a file.
pub struct WeightsUpload {
    device: Device,
    /// The most bytes one device buffer may hold; larger tensors go up in row blocks.
    max_block_bytes: u64,
    tensors: HashMap<String, Resident>,
    current: Option<(Rc<str>, TensorStream)>,
    /// Tensors read past without an upload (see [`WeightsUpload::skipping`]).
    skip: fn(&str) -> bool,
}

impl WeightsUpload {
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            max_block_bytes: crate::device::limits(device).max_binding_bytes,
            tensors: HashMap::new(),
            current: None,
            skip: |_| false,
        }
    }

    /// Reads past the tensors `skip` names instead of uploading them: parts of a file that no
    /// model uses (a single-file checkpoint's EMA copy can double its size).
    pub fn skipping(mut self, skip: fn(&str) -> bool) -> Self {
        self.skip = skip;
        self
    }

    /// Starts the next file; `file` names it in errors, and `length`, where the source knows
    /// it, bounds what its header may claim (a file's size, a response's Content-Length).
    pub fn begin_file(&mut self, file: &str, length: Option<u64>) -> Result<()> {
        if let Some((open, _)) = &self.current {
            return Err(Error::InvalidInput(format!(
                "{file}: cannot start while {open} is still being read"
            )));
        }
        self.current = Some((file.into(), TensorStream::new(file, length)));
        Ok(())
    }

    /// The next bytes of the current file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let Some((file, stream)) = &mut self.current else {
            return Err(Error::InvalidInput(
                "weight bytes arrived before any file was started".into(),
            ));
        };
        let (tensors, device, max_block) = (&mut self.tensors, &self.device, self.max_block_bytes);
        let skip = self.skip;
        stream.push(chunk, &mut |t| {
            let name = t.name;
            if skip(&name) {
                return Ok(());
            }
            if tensors.contains_key(&name) {
                return Err(Error::WeightFile {
                    file: file.to_string(),
                    message: format!("tensor `{name}` appears in more than one shard"),
                });
            }
            let layout = layout_for(&t.shape, device);
            let values = match t.values {
                Some(mut v) => {
                    v = layout.reorder(v, &t.shape);
                    let parts = upload_in_blocks(v, &t.shape, max_block, device);
                    // Hand the upload to the device now: backends that batch work would
                    // otherwise hold every tensor's host copy until the next readback.
                    device
                        .flush()
                        .map_err(|e| Error::Device(format!("uploading `{name}` failed: {e:?}")))?;
                    Ok(parts)
                }
                None => Err(format!("{:?}", t.dtype)),
            };
            let resident = Resident {
                file: file.clone(),
                shape: t.shape,
                layout,
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
            kernels: Kernels::default(),
            pending: RefCell::default(),
            dtype: None,
        })
    }
}

/// How a weight's values lie on the device. Convolution filters of more than one tap go to
/// GPUs reordered for the product a convolution is computed as, read back in PyTorch's
/// [out, in, kh, kw] order as a view without a copy; everything else (1x1 kernels, which
/// products read as PyTorch's [out, in] as it is, and every weight on the CPU backend) as
/// the file gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    AsGiven,
    /// [kh, kw, in, out]: the [K, N] matrix, row-major, that a convolution as gathered
    /// patches multiplies by (`kernels::conv2d_im2col`), and that splits along K into
    /// [parts, K / parts, N] as a free view (burn's matmul copies any other layout of it on
    /// every call).
    FilterMatrix,
    /// [out, kh, kw, in]: each output's filter as one row over K in the filter matrix's
    /// order, which the lanes matmul on software adapters reads as the transposed [K, N]
    /// (`kernels::conv2d_fused`): each lane then reads its columns' values of K in
    /// sequence. Read as [K, N] rows instead, SD 1.5's 16x16 convolutions ran at half the
    /// rate on lavapipe (their rows lie 5 KB apart).
    FilterRows,
}

/// The layout a weight of `shape` takes on `device`: a filter of more than one tap goes to a
/// GPU as the filter matrix, or as filter rows on a software adapter with subgroups where the
/// lanes matmul serves its channels (`kernels::matmul_kernel`: in and out in fours).
fn layout_for(shape: &[usize], device: &Device) -> Layout {
    if shape.len() != 4 || shape[2] * shape[3] == 1 || !crate::device::is_gpu(device) {
        return Layout::AsGiven;
    }
    let limits = crate::device::limits(device);
    let lanes = limits.software
        && limits.subgroup_lanes.is_some()
        && shape[0].is_multiple_of(4)
        && shape[1].is_multiple_of(4);
    if lanes {
        Layout::FilterRows
    } else {
        Layout::FilterMatrix
    }
}

impl Layout {
    /// PyTorch-ordered values of a weight of `shape`, reordered on the host before the upload.
    fn reorder(self, values: Vec<f32>, shape: &[usize]) -> Vec<f32> {
        if self == Layout::AsGiven {
            return values;
        }
        let [o, i, kh, kw] = [shape[0], shape[1], shape[2], shape[3]];
        let taps = kh * kw;
        let mut out = vec![0.0; values.len()];
        for (f, filter) in values.chunks_exact(i * taps).enumerate() {
            for c in 0..i {
                for t in 0..taps {
                    let at = match self {
                        Layout::FilterMatrix => (t * i + c) * o + f,
                        _ => (f * taps + t) * i + c,
                    };
                    out[at] = filter[c * taps + t];
                }
            }
        }
        out
    }

    /// The stored values seen in PyTorch's order, without a copy.
    fn view<const D: usize>(self, flat: Tensor<1>, shape: [usize; D]) -> Tensor<D> {
        let (order, axes) = match self {
            Layout::AsGiven => return flat.reshape(shape),
            // Stored [kh, kw, in, out]: out is axis 3, in axis 2, the taps axes 0 and 1.
            Layout::FilterMatrix => ([2, 3, 1, 0], [3, 2, 0, 1]),
            // Stored [out, kh, kw, in].
            Layout::FilterRows => ([0, 2, 3, 1], [0, 3, 1, 2]),
        };
        let stored: [usize; D] = std::array::from_fn(|d| shape[order[d]]);
        let axes: [usize; D] = std::array::from_fn(|d| axes[d]);
        flat.reshape(stored).permute(axes)
    }
}

/// Uploads `values` whole, or in blocks of whole rows of at most `max_block` bytes where the
/// device cannot bind it in one buffer. Rows are along the first axis longer than 1 (SD 3's
/// position table is [1, positions, width]).
fn upload_in_blocks(values: Vec<f32>, shape: &[usize], max_block: u64, device: &Device) -> Parts {
    let bytes = values.len() as u64 * 4;
    let shape = &shape[shape.iter().take_while(|&&d| d == 1).count()..];
    let row = shape.iter().skip(1).product::<usize>().max(1);
    let rows_per_block = ((max_block / 4) as usize / row).max(1);
    if bytes <= max_block || shape.len() < 2 || rows_per_block >= shape[0] {
        let n = values.len();
        return Parts {
            blocks: vec![Tensor::from_data(TensorData::new(values, [n]), device)],
        };
    }
    let blocks = values
        .chunks(rows_per_block * row)
        .map(|block| Tensor::from_data(TensorData::new(block.to_vec(), [block.len()]), device))
        .collect();
    Parts { blocks }
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

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn filter_weights_read_back_in_pytorch_order() {
        let shape = [2, 3, 2, 2];
        let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let device = crate::device::cpu();
        for layout in [Layout::FilterMatrix, Layout::FilterRows] {
            let stored = layout.reorder(values.clone(), &shape);
            match layout {
                // Row (tap, channel) of the [K, out] matrix holds that weight of each output:
                // tap (0, 1) of input channel 0 is row 3, value 1 of output 0 and value 13 of
                // output 1.
                Layout::FilterMatrix => assert_eq!(&stored[6..8], &[1.0, 13.0]),
                // Output 1's row starts with tap (0, 0) of each input channel: 12, 16, 20.
                _ => assert_eq!(&stored[12..15], &[12.0, 16.0, 20.0]),
            }
            let flat = Tensor::from_data(TensorData::new(stored, [24]), &device);
            let seen = layout.view(flat, shape);
            let got = seen.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(got, values, "{layout:?}");
        }
    }

    #[test]
    fn a_table_with_a_leading_unit_axis_splits_along_its_rows() {
        let device = crate::device::cpu();
        let values: Vec<f32> = (0..40).map(|v| v as f32).collect();
        // [1, 10, 4] in blocks of at most 3 rows (48 bytes): 3 + 3 + 3 + 1 rows.
        let parts = upload_in_blocks(values, &[1, 10, 4], 48, &device);
        let lengths: Vec<usize> = parts.blocks.iter().map(|b| b.dims()[0]).collect();
        assert_eq!(lengths, [12, 12, 12, 4]);
    }
}
