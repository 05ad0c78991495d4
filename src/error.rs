//! One error type for the whole runtime. Every variant carries enough context (file, tensor,
//! field) for a user to act on it; the wasm layer turns it into a JS exception with this text.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    #[error("{file}: cannot read safetensors: {message}")]
    WeightFile { file: String, message: String },

    #[error("{file}: missing tensor `{name}`")]
    MissingTensor { file: String, name: String },

    #[error("{file}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        file: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error(
        "{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f16 and bf16 are supported)"
    )]
    TensorDtype {
        file: String,
        name: String,
        dtype: String,
    },

    #[error("{file}: {count} unexpected tensor(s) not used by the model, first `{first}`")]
    UnusedTensors {
        file: String,
        count: usize,
        first: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("missing file `{0}` in the model folder")]
    MissingFile(String),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("device: {0}")]
    Device(String),

    /// The adapter cannot do what was asked within its limits (buffer binding size, memory).
    #[error("too large for this device: {0}")]
    DeviceLimit(String),

    #[error("generation cancelled")]
    Cancelled,

    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(file: &str, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }
}
