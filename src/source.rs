//! Where a model's files come from: a folder natively, or a map of paths to bytes that the
//! browser layer filled from fetch or file pickers. Paths are diffusers-layout relative
//! paths such as `unet/config.json`.

use std::collections::HashMap;

use crate::error::{Error, Result};

pub trait FileSource {
    /// The file's bytes, or `None` if the model does not have it.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;

    fn require(&self, path: &str) -> Result<Vec<u8>> {
        self.read(path)?
            .ok_or_else(|| Error::MissingFile(path.to_string()))
    }

    fn require_text(&self, path: &str) -> Result<String> {
        String::from_utf8(self.require(path)?).map_err(|_| Error::config(path, "is not UTF-8 text"))
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
}

/// A diffusers folder on disk.
#[cfg(not(target_arch = "wasm32"))]
pub struct DirSource {
    root: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
impl DirSource {
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource for DirSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let full = self.root.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(format!("{}: {e}", full.display()))),
        }
    }
}
