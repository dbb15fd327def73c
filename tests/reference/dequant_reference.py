#!/usr/bin/env python3
"""Regenerates tests/fixtures/smollm2_tensor_hashes.json, the reference that
`tests/gguf.rs::gguf_smollm2_tensors_match_python_gguf` compares lowbit's GGUF loading with.

How to run (from the repository root; needs `pip install gguf numpy`):

    LOWBIT_DEFAULT_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf \
        python3 tests/reference/dequant_reference.py [--out PATH]

For every tensor of the file it records two hashes of f32 values, each
`sum(bits[i] * (2 * i + 1)) mod 2**64` over the IEEE bit patterns `bits` (every term is an odd
multiple of one element, so any single changed bit changes the hash):

- `gguf_hash`: the values as stored, dequantized by the `gguf` package
  (`gguf.quants.dequantize`, the Python port of ggml's `dequantize_row_*`);
- `hf_hash`: the same values in the Hugging Face layout lowbit produces, i.e. for Llama q/k
  weights after transformers' `reverse_permute` (`modeling_gguf_pytorch_utils.py`).

Matching hashes mean lowbit's values are bit-identical to the `gguf` package's.
"""

import argparse
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[2]

HF_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(name):
    stem, suffix = name.rsplit(".", 1)
    if stem in TOP:
        return f"{TOP[stem]}.{suffix}"
    _, block, part = stem.split(".", 2)
    return f"model.layers.{block}.{HF_NAMES[part]}.{suffix}"


def bit_hash(values):
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return f"{int((bits * weights).sum(dtype=np.uint64)):016x}"


def reverse_permute(weights, n_head):
    # transformers' TensorProcessor._reverse_permute_weights
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=ROOT / "tests/fixtures/smollm2_tensor_hashes.json")
    args = parser.parse_args()
    path = os.environ.get("LOWBIT_DEFAULT_GGUF")
    if not path:
        sys.exit("set LOWBIT_DEFAULT_GGUF to the SmolLM2-135M-Instruct GGUF file")
    reader = gguf.GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    n_head = int(reader.fields[f"{arch}.attention.head_count"].parts[-1][0])
    n_head_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].parts[-1][0])
    tensors = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = values.reshape(shape)
        hf_values = values
        if arch == "llama" and ".attn_q." in t.name:
            hf_values = reverse_permute(values, n_head)
        elif arch == "llama" and ".attn_k." in t.name:
            hf_values = reverse_permute(values, n_head_kv)
        tensors[t.name] = {
            "hf_name": hf_name(t.name),
            "ggml_type": t.tensor_type.name,
            "shape": shape,
            "gguf_hash": bit_hash(values),
            "hf_hash": bit_hash(hf_values),
        }
    out = {
        "description": "hashes of SmolLM2-135M-Instruct.Q4_1.gguf tensors dequantized by the Python "
        "gguf package; regenerate with tests/reference/dequant_reference.py",
        "gguf_package_version": importlib.metadata.version("gguf"),
        "tensors": tensors,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"{len(tensors)} tensors written to {args.out}")


if __name__ == "__main__":
    main()
