//! Safetensors files streamed in chunks onto the device, tensor by tensor.

use std::collections::HashMap;
use std::rc::Rc;

use burn::tensor::Device;

use super::resident::{Resident, layout_for, upload_in_blocks};
use super::stream::TensorStream;
use super::{Backing, Weights};
use crate::error::{Error, Result};

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

    /// The names and shapes of the tensors uploaded so far (skipped ones aside).
    pub fn shapes(&self) -> Vec<(&str, &[usize])> {
        self.tensors
            .iter()
            .map(|(name, t)| (name.as_str(), t.shape.as_slice()))
            .collect()
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
        Ok(Weights::over(
            source,
            Backing::Resident(self.tensors),
            &self.device,
        ))
    }
}
