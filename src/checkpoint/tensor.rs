//! Tensors as lowbit holds them: either owned data, or a zero-copy view into a memory-mapped
//! checkpoint file in its stored dtype. Dense compute uses f32, f16 and bf16; the integer and
//! FP8 dtypes hold the packed codes of quantized weights.

use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

/// Element type of a stored dense tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer (packed 4-bit codes, eight per word).
    I32,
    /// Signed 64-bit integer (shapes and indices in imported checkpoints).
    I64,
    /// FP8 E4M3 ("fn" variant: no infinities, max 448).
    F8E4M3,
}

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::F8E4M3 => 1,
        }
    }

    /// The name safetensors uses for this dtype.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::F8E4M3 => "F8_E4M3",
        }
    }

    /// Whether dense compute can use this dtype (f32, f16, bf16).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
}

#[derive(Clone, Debug)]
enum Storage {
    /// f32 values owned by the tensor (converted, dequantized or computed).
    Owned(Arc<Vec<f32>>),
    /// Bytes from `offset` of a mapped file, in `dtype`, little-endian; the length follows from
    /// the shape.
    Mapped { mmap: Arc<Mmap>, offset: usize },
}

/// A dense tensor, row-major. Cloning is cheap (shared storage).
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: Dtype,
    storage: Storage,
}

impl Tensor {
    /// An owned f32 tensor. Panics if `data.len()` is not the product of `shape` (a programming
    /// error, never a property of input files: loaders validate sizes before building tensors).
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor size");
        Tensor {
            shape,
            dtype: Dtype::F32,
            storage: Storage::Owned(Arc::new(data)),
        }
    }

    /// A view of `len` bytes at `offset` in `mmap`. The caller has checked that the range lies in
    /// the map and that `len == product(shape) * dtype.size()`.
    pub(crate) fn mapped(
        shape: Vec<usize>,
        dtype: Dtype,
        mmap: Arc<Mmap>,
        offset: usize,
        len: usize,
    ) -> Self {
        debug_assert!(offset + len <= mmap.len());
        debug_assert_eq!(shape.iter().product::<usize>() * dtype.size(), len);
        Tensor {
            shape,
            dtype,
            storage: Storage::Mapped { mmap, offset },
        }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The stored element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly `len() * dtype.size()` bytes (owned 16-bit buffers carry up to 2 bytes of padding).
    fn bytes(&self) -> &[u8] {
        let n = self.len() * self.dtype.size();
        match &self.storage {
            Storage::Owned(v) => &bytemuck::cast_slice(v.as_slice())[..n],
            Storage::Mapped { mmap, offset, .. } => &mmap[*offset..*offset + n],
        }
    }

    /// The data as f32 without copying, when stored as aligned f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self.dtype {
            Dtype::F32 => bytemuck::try_cast_slice(self.bytes()).ok(),
            _ => None,
        }
    }

    /// The data as bf16 without copying, when stored as aligned bf16.
    pub fn as_bf16(&self) -> Option<&[bf16]> {
        match self.dtype {
            Dtype::BF16 => bytemuck::try_cast_slice(self.bytes()).ok(),
            _ => None,
        }
    }

    /// The data as f16 without copying, when stored as aligned f16.
    pub fn as_f16(&self) -> Option<&[f16]> {
        match self.dtype {
            Dtype::F16 => bytemuck::try_cast_slice(self.bytes()).ok(),
            _ => None,
        }
    }

    /// Copies the data out as f32 (exact for every stored dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let bytes = self.bytes();
        match self.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
            Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::F8E4M3 => bytes
                .iter()
                .map(|&b| crate::quant::fp8::e4m3_to_f32(b))
                .collect(),
        }
    }

    /// Converts to an owned tensor of `dtype`: rounding to nearest even for 16-bit floats and
    /// FP8, rounding and saturating for the integer types.
    pub fn to_dtype(&self, dtype: Dtype) -> Tensor {
        if dtype == self.dtype {
            return self.clone();
        }
        let values = self.to_f32_vec();
        let shape = self.shape.clone();
        match dtype {
            Dtype::I8 => {
                let v: Vec<u8> = values.iter().map(|&x| x.round() as i8 as u8).collect();
                Tensor::from_bytes(shape, dtype, &v)
            }
            Dtype::U8 => {
                let v: Vec<u8> = values.iter().map(|&x| x.round() as u8).collect();
                Tensor::from_bytes(shape, dtype, &v)
            }
            Dtype::I32 => {
                let v: Vec<i32> = values.iter().map(|&x| x.round() as i32).collect();
                Tensor::from_bytes(shape, dtype, bytemuck::cast_slice(&v))
            }
            Dtype::I64 => {
                let v: Vec<i64> = values.iter().map(|&x| x.round() as i64).collect();
                Tensor::from_bytes(shape, dtype, bytemuck::cast_slice(&v))
            }
            Dtype::F8E4M3 => {
                let v: Vec<u8> = values
                    .iter()
                    .map(|&x| crate::quant::fp8::f32_to_e4m3(x))
                    .collect();
                Tensor::from_bytes(shape, dtype, &v)
            }
            Dtype::F32 => Tensor::from_f32(shape, values),
            Dtype::F16 => {
                let v: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
                Tensor::from_bytes(shape, Dtype::F16, bytemuck::cast_slice(&v))
            }
            Dtype::BF16 => {
                let v: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
                Tensor::from_bytes(shape, Dtype::BF16, bytemuck::cast_slice(&v))
            }
        }
    }

    /// An owned tensor from little-endian `bytes` of `dtype`, kept in an f32-aligned buffer so
    /// typed views stay aligned. Panics if the byte count does not match the shape (a
    /// programming error: loaders validate sizes first).
    pub fn from_bytes(shape: Vec<usize>, dtype: Dtype, bytes: &[u8]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>() * dtype.size(),
            bytes.len(),
            "tensor byte size"
        );
        let mut words = vec![0f32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<f32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Tensor {
            shape,
            dtype,
            storage: Storage::Owned(Arc::new(words)),
        }
    }

    /// The raw little-endian bytes of the tensor in its stored dtype.
    pub fn raw_bytes(&self) -> &[u8] {
        self.bytes()
    }
}
