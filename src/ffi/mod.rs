//! The C ABI (placeholder).
