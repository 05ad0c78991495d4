//! Where a model's files come from: a folder natively, or a map of paths to bytes that the
//! browser layer filled from fetch or file pickers. Paths are diffusers-layout relative
//! paths such as `unet/config.json`. Weight files are read as streams of chunks, so a source
//! that can (a folder) never holds a whole one in memory.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::weights::WeightsUpload;

pub trait FileSource {
    /// The file's bytes, or `None` if the model does not have it.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Feeds the file to `sink` in chunks; `false` if the model does not have it. The default
    /// reads it whole: right for sources that already hold their files in memory.
    fn stream(&self, path: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        match self.read(path)? {
            Some(bytes) => sink(&bytes).map(|()| true),
            None => Ok(false),
        }
    }

    /// The file's length in bytes, where the source can tell without reading it; `None`
    /// otherwise (and for a missing file). Weight files' headers are checked against it.
    fn len(&self, _path: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// A weight file this source already put on the device while it arrived, handed over
    /// once. `None`: read it through `stream`.
    fn take_uploaded(&self, _path: &str) -> Option<WeightsUpload> {
        None
    }

    fn require(&self, path: &str) -> Result<Vec<u8>> {
        self.read(path)?
            .ok_or_else(|| Error::MissingFile(path.to_string()))
    }

    fn require_text(&self, path: &str) -> Result<String> {
        self.read_text(path)?
            .ok_or_else(|| Error::MissingFile(path.to_string()))
    }

    /// The file as UTF-8 text, or `None` if the model does not have it.
    fn read_text(&self, path: &str) -> Result<Option<String>> {
        self.read(path)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| Error::config(path, "is not UTF-8 text"))
            })
            .transpose()
    }
}

/// Files held in memory.
#[derive(Default, Clone)]
pub struct MemorySource {
    files: HashMap<String, Vec<u8>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(path.into(), bytes);
    }
}

impl FileSource for MemorySource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.files.get(path).cloned())
    }

    fn len(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.files.get(path).map(|b| b.len() as u64))
    }
}

/// Files gathered as they arrived, in any order (the browser's loader): small files as bytes,
/// weight files already uploaded to the device tensor by tensor.
#[derive(Default)]
pub struct StagedSource {
    files: MemorySource,
    uploads: RefCell<HashMap<String, WeightsUpload>>,
}

impl StagedSource {
    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(path, bytes);
    }

    /// A weight file whose stream has ended.
    pub fn insert_uploaded(&mut self, path: impl Into<String>, upload: WeightsUpload) {
        self.uploads.get_mut().insert(path.into(), upload);
    }
}

impl FileSource for StagedSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.files.read(path)
    }

    fn len(&self, path: &str) -> Result<Option<u64>> {
        self.files.len(path)
    }

    fn take_uploaded(&self, path: &str) -> Option<WeightsUpload> {
        self.uploads.borrow_mut().remove(path)
    }
}

/// A diffusers folder on disk, or a single-file checkpoint paired with a folder that holds
/// what such a file lacks (the tokenizer; configs, where the inferred ones will not do).
#[cfg(not(target_arch = "wasm32"))]
pub struct DirSource {
    root: std::path::PathBuf,
    /// A file served under another path: a single-file checkpoint as
    /// [`crate::single_file::CHECKPOINT_FILE`], a lone weight file as its folder's.
    alias: Option<(String, std::path::PathBuf)>,
    /// Whether the alias is all the source holds.
    alone: bool,
    chunk: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirSource {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        Self {
            root: root.into(),
            alias: None,
            alone: false,
            chunk: 1 << 20,
        }
    }

    /// `file` alone, served as `path`: a lone weight file as the folder it would sit in
    /// names it (an original ControlNet file as `diffusion_pytorch_model.safetensors`), with
    /// nothing beside it, whatever its own folder holds.
    pub fn single(file: impl Into<std::path::PathBuf>, path: &str) -> Self {
        let file = file.into();
        Self {
            root: file
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
            alias: Some((path.to_string(), file)),
            alone: true,
            chunk: 1 << 20,
        }
    }

    /// What a user names as a model: a diffusers folder, or a single `.safetensors`
    /// checkpoint, paired with `config` (a diffusers folder for its tokenizer and any configs
    /// that should win over inferred ones; by default the checkpoint's own folder). A pickled
    /// checkpoint is refused unread.
    pub fn open(model: &std::path::Path, config: Option<&std::path::Path>) -> Result<Self> {
        if model.is_dir() {
            return match config {
                None => Ok(Self::new(model)),
                Some(_) => Err(Error::InvalidInput(format!(
                    "{} is a diffusers folder, which holds its own configs; a config folder pairs only with a single-file checkpoint",
                    model.display()
                ))),
            };
        }
        let extension = model.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ["ckpt", "pt", "pth", "bin"].contains(&extension.to_ascii_lowercase().as_str()) {
            return Err(Error::PickledWeights(model.display().to_string()));
        }
        if !model.exists() {
            return Err(Error::MissingFile(model.display().to_string()));
        }
        let beside = model.parent().unwrap_or(std::path::Path::new("."));
        Ok(Self::new(config.unwrap_or(beside)).with_checkpoint(model))
    }

    /// Serves `file` as the model's single-file checkpoint.
    pub fn with_checkpoint(mut self, file: impl Into<std::path::PathBuf>) -> Self {
        self.alias = Some((crate::single_file::CHECKPOINT_FILE.to_string(), file.into()));
        self
    }

    /// Where `path` is on disk; `None` for a path a lone file's source does not hold.
    fn resolve(&self, path: &str) -> Option<std::path::PathBuf> {
        match &self.alias {
            Some((served, file)) if path == served => Some(file.clone()),
            _ if self.alone => None,
            _ => Some(self.root.join(path)),
        }
    }

    /// Reads weight files in chunks of `bytes` (1 MiB by default).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(1);
        self
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource for DirSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(full) = self.resolve(path) else {
            return Ok(None);
        };
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(full.display(), e)),
        }
    }

    fn len(&self, path: &str) -> Result<Option<u64>> {
        let Some(full) = self.resolve(path) else {
            return Ok(None);
        };
        match std::fs::metadata(&full) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(full.display(), e)),
        }
    }

    fn stream(&self, path: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        use std::io::Read;
        let Some(full) = self.resolve(path) else {
            return Ok(false);
        };
        let io = |e: std::io::Error| Error::io(full.display(), e);
        let mut file = match std::fs::File::open(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let mut buffer = vec![0u8; self.chunk];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return Ok(true),
                Ok(n) => sink(&buffer[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
}
