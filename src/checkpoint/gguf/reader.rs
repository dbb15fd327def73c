//! The GGUF container, versions 2 and 3, little-endian.
//!
//! ```text
//! header        magic "GGUF" (4 bytes) | version u32 (2 or 3) | tensor_count u64 | kv_count u64
//! kv_count  x   key: string | value_type u32 | value
//! tensor_count x name: string | n_dims u32 (<= 4) | dims u64 x n_dims (innermost first)
//!               | ggml_type u32 | offset u64 (from the start of the data section)
//! padding       zeros up to a multiple of `general.alignment` (u32, default 32)
//! data          tensor bytes; each tensor starts at a multiple of the alignment
//!
//! string        length u64 | UTF-8 bytes (no terminator)
//! value         u8 i8 u16 i16 u32 i32 f32 bool(u8) string array u64 i64 f64   (types 0..=12)
//! array         element_type u32 | count u64 | count values (arrays may nest)
//! ```
//!
//! Every count and length is checked against the bytes left in the file before anything is
//! allocated, so a corrupt header yields an [`Error::Format`] naming the file, never a panic or
//! an allocation larger than a small multiple of the file size.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::dequant::GgmlType;
use super::value::{GgufArray, GgufValue};
use crate::error::{Error, Result};

/// Default alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays accepted in metadata (real files use one level).
const MAX_ARRAY_DEPTH: usize = 8;

/// Where one tensor lives in the file and how it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The GGUF tensor name (llama.cpp naming, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as stored: innermost (contiguous) first, the reverse of a row-major shape.
    pub dims: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the first byte from the start of the file (data section start + stored offset).
    pub file_offset: usize,
    /// Number of bytes of the tensor's data.
    pub size_bytes: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row-major (Hugging Face / PyTorch) shape: the stored dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A memory-mapped, validated GGUF file: metadata, tensor directory and raw tensor bytes.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Arc<Mmap>,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    alignment: usize,
    data_offset: usize,
}

/// A little-endian cursor over the mapped bytes that turns every overrun into a format error.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::format(
                self.path,
                format!(
                    "truncated file: {} needs {n} bytes at offset {}, {} left",
                    what(),
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in the rest of the file at `min_size` bytes per item.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(Error::format(
                self.path,
                format!(
                    "{} is {n}, larger than the {} bytes left in the file allow",
                    what(),
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::format(self.path, format!("{} is not valid UTF-8", what())))
    }
}

/// Smallest encoded size of one value of `value_type`, used to bound array counts.
fn min_value_size(value_type: u32) -> usize {
    match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

fn read_value(cur: &mut Cursor<'_>, value_type: u32, key: &str, depth: usize) -> Result<GgufValue> {
    let what = || format!("value of '{key}'");
    Ok(match value_type {
        0 => GgufValue::U8(cur.array::<1>(&what)?[0]),
        1 => GgufValue::I8(cur.array::<1>(&what)?[0] as i8),
        2 => GgufValue::U16(u16::from_le_bytes(cur.array(&what)?)),
        3 => GgufValue::I16(i16::from_le_bytes(cur.array(&what)?)),
        4 => GgufValue::U32(cur.u32(&what)?),
        5 => GgufValue::I32(i32::from_le_bytes(cur.array(&what)?)),
        6 => GgufValue::F32(f32::from_le_bytes(cur.array(&what)?)),
        7 => match cur.array::<1>(&what)?[0] {
            0 => GgufValue::Bool(false),
            1 => GgufValue::Bool(true),
            other => {
                return Err(Error::format(
                    cur.path,
                    format!("'{key}': boolean byte {other} is neither 0 nor 1"),
                ))
            }
        },
        8 => GgufValue::String(cur.string(&what)?),
        9 => GgufValue::Array(read_array(cur, key, depth + 1)?),
        10 => GgufValue::U64(cur.u64(&what)?),
        11 => GgufValue::I64(i64::from_le_bytes(cur.array(&what)?)),
        12 => GgufValue::F64(f64::from_le_bytes(cur.array(&what)?)),
        other => {
            return Err(Error::format(
                cur.path,
                format!("'{key}': unknown metadata value type {other}"),
            ))
        }
    })
}

fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<GgufArray> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Error::format(
            cur.path,
            format!("'{key}': arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
        ));
    }
    let element_type = cur.u32(&|| format!("array type of '{key}'"))?;
    if element_type > 12 {
        return Err(Error::format(
            cur.path,
            format!("'{key}': unknown array element type {element_type}"),
        ));
    }
    let n = cur.count(min_value_size(element_type), &|| {
        format!("element count of '{key}'")
    })?;
    macro_rules! collect {
        ($variant:ident, $pattern:pat => $value:expr) => {{
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                match read_value(cur, element_type, key, depth)? {
                    $pattern => out.push($value),
                    _ => unreachable!("read_value returns the requested type"),
                }
            }
            GgufArray::$variant(out)
        }};
    }
    Ok(match element_type {
        0 => collect!(U8, GgufValue::U8(v) => v),
        1 => collect!(I8, GgufValue::I8(v) => v),
        2 => collect!(U16, GgufValue::U16(v) => v),
        3 => collect!(I16, GgufValue::I16(v) => v),
        4 => collect!(U32, GgufValue::U32(v) => v),
        5 => collect!(I32, GgufValue::I32(v) => v),
        6 => collect!(F32, GgufValue::F32(v) => v),
        7 => collect!(Bool, GgufValue::Bool(v) => v),
        8 => collect!(String, GgufValue::String(v) => v),
        9 => collect!(Array, GgufValue::Array(v) => v),
        10 => collect!(U64, GgufValue::U64(v) => v),
        11 => collect!(I64, GgufValue::I64(v) => v),
        _ => collect!(F64, GgufValue::F64(v) => v),
    })
}

impl GgufFile {
    /// Maps and validates `path`: header, metadata, tensor directory, and that every tensor's
    /// bytes are aligned, inside the file and disjoint from the others.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private; lowbit never writes the file while it is
        // mapped. A file truncated by another process while mapped is outside what any mmap
        // reader can guard against (the same contract as the safetensors and candle loaders).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, Arc::new(mmap))
    }

    fn parse(path: &Path, mmap: Arc<Mmap>) -> Result<Self> {
        let mut cur = Cursor {
            bytes: &mmap[..],
            pos: 0,
            path,
        };
        let magic = cur.array::<4>(&|| "magic".into())?;
        if &magic != b"GGUF" {
            return Err(Error::format(
                path,
                format!("not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""),
            ));
        }
        let version = cur.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (a big-endian GGUF file; only little-endian files are supported)"
            } else {
                ""
            };
            return Err(Error::format(
                path,
                format!("unsupported GGUF version {version}{hint}; versions 2 and 3 are supported"),
            ));
        }
        // Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
        let tensor_count = cur.count(24, &|| "tensor count".into())?;
        // Smallest key-value: empty key (8) + type (4) + a one-byte value.
        let kv_count = cur.count(13, &|| "metadata key-value count".into())?;

        let mut metadata = BTreeMap::new();
        for index in 0..kv_count {
            let key = cur.string(&|| format!("metadata key #{index}"))?;
            let value_type = cur.u32(&|| format!("value type of '{key}'"))?;
            let value = read_value(&mut cur, value_type, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::format(
                    path,
                    format!("metadata key '{key}' appears twice"),
                ));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as usize,
            Some(other) => {
                return Err(Error::format(
                    path,
                    format!("'general.alignment' must be a u32 power of two, found {other:?}"),
                ))
            }
        };

        let mut raw = Vec::with_capacity(tensor_count);
        let mut names = HashSet::with_capacity(tensor_count);
        for index in 0..tensor_count {
            let name = cur.string(&|| format!("name of tensor #{index}"))?;
            let n_dims = cur.u32(&|| format!("dimension count of tensor '{name}'"))? as usize;
            if n_dims > MAX_DIMS {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}': {n_dims} dimensions, at most {MAX_DIMS} allowed"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = cur.u64(&|| format!("dimensions of tensor '{name}'"))?;
                dims.push(usize::try_from(d).map_err(|_| {
                    Error::format(
                        path,
                        format!("tensor '{name}': dimension {d} does not fit in memory"),
                    )
                })?);
            }
            let type_id = cur.u32(&|| format!("type of tensor '{name}'"))?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                Error::format(
                    path,
                    format!("tensor '{name}': unknown ggml type {type_id}"),
                )
            })?;
            let offset = cur.u64(&|| format!("offset of tensor '{name}'"))?;
            if !names.insert(name.clone()) {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}' appears twice"),
                ));
            }
            raw.push((name, dims, ggml_type, offset));
        }

        let data_offset = cur.pos.div_ceil(alignment) * alignment;
        let file_len = mmap.len();
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ggml_type, offset) in raw {
            let elements = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    Error::format(
                        path,
                        format!("tensor '{name}': dimensions {dims:?} overflow"),
                    )
                })?;
            let (block, block_bytes) = ggml_type.block_layout();
            if dims.first().is_some_and(|&d| d % block != 0) {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}': innermost dimension {} is not a multiple of the {ggml_type} block size {block}", dims[0]),
                ));
            }
            let size_bytes = (elements / block).checked_mul(block_bytes).ok_or_else(|| {
                Error::format(path, format!("tensor '{name}': byte size overflows"))
            })?;
            if offset % alignment as u64 != 0 {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            let end = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_offset))
                .and_then(|start| start.checked_add(size_bytes).map(|end| (start, end)));
            match end {
                Some((file_offset, end)) if end <= file_len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    file_offset,
                    size_bytes,
                }),
                _ => {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor '{name}': data ({size_bytes} bytes at data offset {offset}) extends past the end of the file ({file_len} bytes; truncated?)"
                        ),
                    ))
                }
            }
        }

        let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size_bytes > 0).collect();
        by_offset.sort_by_key(|t| t.file_offset);
        for pair in by_offset.windows(2) {
            if pair[0].file_offset + pair[0].size_bytes > pair[1].file_offset {
                return Err(Error::format(
                    path,
                    format!(
                        "tensors '{}' and '{}' have overlapping data",
                        pair[0].name, pair[1].name
                    ),
                ));
            }
        }

        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Tensors in the order the file lists them.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` (GGUF naming), if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw stored bytes of a tensor (checked to lie in the file when it was opened).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.file_offset..info.file_offset + info.size_bytes]
    }

    /// The tensor's values as f32, in stored order (innermost dimension fastest).
    /// [`Error::UnsupportedDtype`] names the tensor when its type cannot be dequantized.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        super::dequant::dequantize(info.ggml_type, self.tensor_bytes(info), info.len()).map_err(
            |e| match e {
                Error::UnsupportedDtype { dtype, .. } => Error::UnsupportedDtype {
                    tensor: format!("{}: {}", self.path.display(), info.name),
                    dtype,
                },
                other => other,
            },
        )
    }
}
