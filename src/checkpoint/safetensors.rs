//! Memory-mapped safetensors files, single or sharded (`model.safetensors.index.json`).
//!
//! The header is validated by the `safetensors` crate (size, JSON, offsets contiguous and inside
//! the file); tensors become zero-copy views into the map.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::tensor::{Dtype, Tensor};
use crate::error::{Error, Result};

/// Maps `path` read-only.
fn map_file(path: &Path) -> Result<Arc<Mmap>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and private; lowbit never writes the file while it is mapped.
    // A file truncated by another process while mapped is outside what any mmap reader can
    // guard against (the same contract as the safetensors and candle loaders).
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Arc::new(mmap))
}

/// Reads every tensor of one safetensors file into `out`.
pub fn read_file(path: &Path, out: &mut BTreeMap<String, Tensor>) -> Result<()> {
    let mmap = map_file(path)?;
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap[..])
        .map_err(|e| Error::format(path, format!("invalid safetensors file: {e}")))?;
    let data_start = 8 + header_len;
    for (name, info) in metadata.tensors() {
        let dtype = match info.dtype {
            StDtype::F32 => Dtype::F32,
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            StDtype::I8 => Dtype::I8,
            StDtype::U8 => Dtype::U8,
            StDtype::I32 => Dtype::I32,
            StDtype::I64 => Dtype::I64,
            StDtype::F8_E4M3 => Dtype::F8E4M3,
            other => {
                return Err(Error::UnsupportedDtype {
                    tensor: format!("{}: {name}", path.display()),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let (begin, end) = info.data_offsets;
        let expected = info
            .shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::format(path, format!("tensor '{name}': shape overflows")))?;
        if end - begin != expected {
            return Err(Error::format(
                path,
                format!(
                    "tensor '{name}': {} bytes stored for shape {:?} of {dtype:?}",
                    end - begin,
                    info.shape
                ),
            ));
        }
        let offset = data_start + begin;
        if offset + expected > mmap.len() {
            return Err(Error::format(
                path,
                format!("tensor '{name}': data past the end of the file (truncated?)"),
            ));
        }
        out.insert(
            name.clone(),
            Tensor::mapped(info.shape.clone(), dtype, mmap.clone(), offset, expected),
        );
    }
    Ok(())
}

/// Reads a sharded checkpoint through its index file.
pub fn read_sharded(index_path: &Path, out: &mut BTreeMap<String, Tensor>) -> Result<()> {
    let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(index_path, format!("invalid JSON: {e}")))?;
    let weight_map = index
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| Error::format(index_path, "missing 'weight_map' object"))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut shards = BTreeSet::new();
    for (name, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::format(index_path, format!("'{name}': shard must be a string"))
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(Error::format(
                index_path,
                format!("'{name}': bad shard name '{file}'"),
            ));
        }
        shards.insert(file.to_string());
    }
    for shard in &shards {
        read_file(&dir.join(shard), out)?;
    }
    for (name, file) in weight_map {
        if !out.contains_key(name) {
            return Err(Error::MissingTensor {
                path: dir.join(file.as_str().unwrap_or_default()),
                tensor: name.clone(),
            });
        }
    }
    Ok(())
}

/// Writes `tensors` as one safetensors file (dtype as stored in each tensor).
pub fn write_file(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.dtype() {
                Dtype::F32 => StDtype::F32,
                Dtype::F16 => StDtype::F16,
                Dtype::BF16 => StDtype::BF16,
                Dtype::I8 => StDtype::I8,
                Dtype::U8 => StDtype::U8,
                Dtype::I32 => StDtype::I32,
                Dtype::I64 => StDtype::I64,
                Dtype::F8E4M3 => StDtype::F8_E4M3,
            };
            let view =
                safetensors::tensor::TensorView::new(dtype, t.shape().to_vec(), t.raw_bytes())
                    .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => Error::io(path, io),
        other => Error::format(path, format!("cannot write safetensors: {other}")),
    })
}
