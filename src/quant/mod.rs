//! Quantization: formats ([`scheme`], [`weights`], [`nf4`], [`fp8`]), which layers are quantized
//! ([`rules`]), dynamic activation quantization ([`activation`]) and methods ([`rtn`]).

pub mod activation;
pub mod apply;
pub mod awq;
pub mod calibration;
pub mod config;
pub mod fp8;
pub mod gptq;
pub mod hessian;
pub mod nf4;
pub mod rtn;
pub mod rules;
pub(crate) mod scaling;
pub mod scheme;
pub mod smoothquant;
pub mod weights;

pub use apply::{quantize_checkpoint, quantize_model};
pub use gptq::{gptq_quantize, GptqOptions, GptqResult};
pub use rtn::{quantize_matrix, quantize_tensor, RtnOptions};
pub use rules::{LayerChoice, QuantRules};
pub use scheme::{ActivationFormat, Granularity, QuantScheme, WeightFormat};
pub use weights::{CodeKind, QuantizedTensor, Scales};
