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
        "{file}: tensor `{name}` has unsupported dtype {dtype} (f32, f16, bf16 and the fp8 types e4m3fn and e5m2 are supported)"
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

    /// A weight file whose tensor names match no layout this runtime reads.
    #[error(
        "{file}: the tensor names match no known checkpoint layout; nearest: {nearest}; first names that fit none: {unexpected}"
    )]
    UnknownLayout {
        file: String,
        /// The three nearest known layouts, each with the share of the file's tensors it
        /// explains.
        nearest: String,
        unexpected: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("missing file `{0}` in the model folder")]
    MissingFile(String),

    /// A single-file checkpoint without the files it cannot hold (its tokenizer), with
    /// where to get them. Code `missing_file`, as for a folder.
    #[error(
        "`{0}`: a single-file checkpoint holds no tokenizer; pair it with a diffusers folder of its family, which gives the tokenizer and any configs that should win over the inferred ones (lina-cli: --config DIR; loadModel: url or files beside checkpoint)"
    )]
    NoTokenizer(String),

    /// A pickled PyTorch weight file (`.bin`, `.ckpt`, `.pt`) where safetensors was expected:
    /// never loaded, because unpickling runs whatever code the file holds.
    #[error(
        "`{0}` is a pickled PyTorch file, which this runtime never loads (unpickling can run any code the file holds); convert it to safetensors first, for example with `safetensors.torch.save_file(torch.load(path, weights_only=True), \"model.safetensors\")`, or diffusers' `save_pretrained(folder, safe_serialization=True)`"
    )]
    PickledWeights(String),

    #[error("invalid input: {0}")]
    InvalidInput(String),

    #[error("device: {0}")]
    Device(String),

    /// The GPU device was lost (a driver reset, a fault): its tensors are gone, and the model
    /// must be loaded again, on a fresh device.
    #[error("the GPU device was lost ({reason}) while reading back {what}; load the model again")]
    DeviceLost { reason: String, what: String },

    /// The adapter cannot do what was asked within its limits (buffer binding size, memory).
    #[error("too large for this device: {0}")]
    DeviceLimit(String),

    #[error("generation cancelled")]
    Cancelled,

    /// A host's step callback (a page's `onStep`) failed; the generation stops there.
    #[error("{0}")]
    Callback(String),

    /// Reading or writing a file failed; the I/O error stays attached as the source.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A stable code for each kind of error, for programs to branch on (the browser API's
    /// `error.code`); messages may change, codes do not.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::WeightFile { .. } => "weight_file",
            Error::MissingTensor { .. } => "missing_tensor",
            Error::TensorShape { .. } => "tensor_shape",
            Error::TensorDtype { .. } => "tensor_dtype",
            Error::UnusedTensors { .. } => "unused_tensors",
            Error::UnknownLayout { .. } => "unknown_layout",
            Error::Tokenizer(_) => "tokenizer",
            Error::MissingFile(_) | Error::NoTokenizer(_) => "missing_file",
            Error::PickledWeights(_) => "pickled_weights",
            Error::InvalidInput(_) => "invalid_input",
            Error::Device(_) => "device",
            Error::DeviceLost { .. } => "device_lost",
            Error::DeviceLimit(_) => "device_limit",
            Error::Cancelled => "cancelled",
            Error::Callback(_) => "callback",
            Error::Io { .. } => "io",
        }
    }

    /// An I/O failure on `path`, keeping the error it came from.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    pub fn config(file: &str, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.to_string(),
            message: message.into(),
        }
    }
}
