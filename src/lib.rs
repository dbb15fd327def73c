//! lowbit: load, quantize, run and score low-bit LLMs, from Rust or through a stable C ABI.
//!
//! The crate is layered; data flows one way:
//! [`checkpoint`] (files) -> [`model`] (forward pass, generation) -> [`ffi`] (C ABI).

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod error;
pub mod eval;
pub mod ffi;
pub mod io;
pub mod model;
pub mod quant;
pub mod study;

pub use checkpoint::{Checkpoint, Tokenizer};
pub use error::{Error, Result};
pub use model::{GenerateParams, Model, ModelConfig};

/// The library version, `MAJOR.MINOR.PATCH`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
