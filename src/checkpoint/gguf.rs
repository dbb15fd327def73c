//! GGUF reader (placeholder until implemented).
use std::path::Path;

use super::Checkpoint;
use crate::error::{Error, Result};

/// Opens a GGUF file as a checkpoint.
pub fn open(path: &Path) -> Result<Checkpoint> {
    Err(Error::format(path, "GGUF reading not implemented yet"))
}
