//! The error type of the runtime. Every variant names the file, tensor, field or hook at fault.

use std::path::PathBuf;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model directory must contain is missing.
    #[error("{path}: missing ({what})")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is for, and what else would do.
        what: String,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// config.json names an architecture this runtime does not implement.
    #[error("{path}: unsupported model_type `{model_type}` (supported: {supported})")]
    UnsupportedModelType {
        /// The config file.
        path: PathBuf,
        /// The `model_type` it names.
        model_type: String,
        /// The supported values, comma separated.
        supported: String,
    },
    /// A field of config.json is missing or has a value the runtime cannot use.
    #[error("{path}: field `{field}`: {message}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A weight is absent from the checkpoint.
    #[error(
        "{dir}: tensor `{name}` not found in the checkpoint ({count} tensors, e.g. {examples})"
    )]
    MissingTensor {
        /// The model directory.
        dir: PathBuf,
        /// The tensor name.
        name: String,
        /// How many tensors the checkpoint has.
        count: usize,
        /// A few names that are present.
        examples: String,
    },
    /// A weight has a shape other than the config implies.
    #[error("{dir}: tensor `{name}` has shape {got:?}, config.json implies {expected:?}")]
    TensorShape {
        /// The model directory.
        dir: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        got: Vec<usize>,
    },
    /// A hook name that does not parse, or that this model does not have.
    #[error("hook `{name}`: {message}")]
    BadHook {
        /// The hook as written.
        name: String,
        /// Why it is refused, with the valid names where that helps.
        message: String,
    },
    /// The model would not fit in the memory this machine has available (checked before any
    /// tensor is read).
    #[error(
        "{path}: {parameters} parameters need about {needed_gb:.1} GB in {dtype}, but this \
         machine has {available_gb:.1} GB of memory available{hint}"
    )]
    TooLarge {
        /// The checkpoint.
        path: PathBuf,
        /// Its parameters.
        parameters: usize,
        /// The run dtype asked for.
        dtype: &'static str,
        /// What the weights would take, GB.
        needed_gb: f64,
        /// What the machine has (MemAvailable), GB.
        available_gb: f64,
        /// What would fit instead, if anything.
        hint: String,
    },
    /// A forward request that cannot be served (positions, shapes, resume layer).
    #[error("forward request: {0}")]
    BadRequest(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
