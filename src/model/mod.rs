//! The decoder forward pass (placeholder).
pub use crate::checkpoint::ModelConfig;
/// A loaded model.
pub struct Model;
/// Generation parameters.
pub struct GenerateParams;
