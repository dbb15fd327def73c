//! What the SIMD kernels share about rows: blocks of 32 values (the padding unit of activation
//! rows), scale groups of whole blocks, a zero-padded copy of a row's last block, and the size
//! checks behind their unchecked loads. Architecture-independent.

use std::ops::Range;

use super::RowArgs;

/// Values per block: the padding unit of activation rows.
pub(super) const BLOCK: usize = 32;

/// How a row splits into blocks and scale groups.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    /// Blocks in the padded row.
    pub blocks: usize,
    /// Blocks whose code bytes lie wholly inside `codes`.
    pub full_blocks: usize,
    /// Blocks per scale group.
    pub group_blocks: usize,
}

impl Geometry {
    /// The geometry of `row` with `block_bytes` code bytes per block; `None` when the group size
    /// is neither a multiple of [`BLOCK`] nor covers the row (the portable kernel handles that).
    pub(super) fn new(row: &RowArgs<'_>, block_bytes: usize) -> Option<Self> {
        let blocks = row.k.div_ceil(BLOCK);
        let group_blocks = if row.group_size >= row.k {
            blocks
        } else if row.group_size > 0 && row.group_size.is_multiple_of(BLOCK) {
            row.group_size / BLOCK
        } else {
            return None;
        };
        Some(Geometry {
            blocks,
            full_blocks: (row.codes.len() / block_bytes).min(blocks),
            group_blocks,
        })
    }

    /// Activation values per (padded) row.
    pub(super) fn values(&self) -> usize {
        self.blocks * BLOCK
    }

    /// The blocks of each scale group, in order.
    pub(super) fn groups(&self) -> impl Iterator<Item = Range<usize>> {
        let (blocks, step) = (self.blocks, self.group_blocks.max(1));
        (0..blocks)
            .step_by(step)
            .map(move |start| start..(start + step).min(blocks))
    }
}

/// The code bytes from `start` on (fewer than 32) in a zeroed buffer.
pub(super) fn tail_block(codes: &[u8], start: usize) -> [u8; 32] {
    let mut buffer = [0u8; 32];
    let rest = codes.get(start..).unwrap_or_default();
    let n = rest.len().min(buffer.len());
    buffer[..n].copy_from_slice(&rest[..n]);
    buffer
}

/// Checks the tile sizes the kernels rely on for their unchecked loads.
pub(super) fn check_tile<T>(xs: &[&[T]], outputs: usize, values: usize) {
    assert!(
        outputs >= xs.len() && xs.iter().all(|x| x.len() >= values),
        "quantized kernel: {} activation rows of {:?} values for {outputs} outputs, {values} \
         needed",
        xs.len(),
        xs.iter().map(|x| x.len()).min()
    );
}
