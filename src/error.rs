//! The one error type of lowbit. Every variant carries the context a user needs to act on it:
//! which file, which tensor, which shape.

use std::fmt;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lowbit.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file (safetensors or GGUF) is malformed: truncated, corrupt header, bad offsets.
    Format {
        /// The file that is malformed.
        path: PathBuf,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// A tensor the architecture needs is absent from the checkpoint.
    MissingTensor {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The tensor name that was looked up.
        tensor: String,
    },
    /// A tensor has a shape other than the configuration implies.
    ShapeMismatch {
        /// The tensor name.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape found in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor is stored in a data type lowbit cannot use there.
    UnsupportedDtype {
        /// The tensor name.
        tensor: String,
        /// The data type found.
        dtype: String,
    },
    /// `config.json` (or GGUF metadata) is missing a field or has an invalid value.
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint's architecture is not one lowbit implements.
    UnsupportedArchitecture(String),
    /// The tokenizer could not be built or used.
    Tokenizer(String),
    /// An argument is out of range or inconsistent (empty prompt, bad sampling parameter, ...).
    InvalidArgument(String),
    /// The operation was cancelled by the caller.
    Cancelled,
    /// No usable GPU (driver or device missing, too old), or a GPU call failed.
    Device(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-file error for `path`.
    pub fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A configuration error for `path`.
    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::MissingTensor { path, tensor } => {
                write!(f, "{}: tensor '{tensor}' not found", path.display())
            }
            Error::ShapeMismatch {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "tensor '{tensor}': expected shape {expected:?}, found {found:?}"
            ),
            Error::UnsupportedDtype { tensor, dtype } => {
                write!(f, "tensor '{tensor}': unsupported data type {dtype}")
            }
            Error::Config { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::UnsupportedArchitecture(arch) => write!(
                f,
                "unsupported architecture '{arch}' (supported: LlamaForCausalLM, \
                 Qwen2ForCausalLM, Qwen3ForCausalLM)"
            ),
            Error::Tokenizer(reason) => write!(f, "tokenizer: {reason}"),
            Error::InvalidArgument(reason) => write!(f, "invalid argument: {reason}"),
            Error::Cancelled => write!(f, "cancelled"),
            Error::Device(reason) => write!(f, "GPU: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
