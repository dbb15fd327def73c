#!/usr/bin/env python3
"""Reference checks of lowbit's compressed-tensors export and import against the
compressed-tensors package and Hugging Face transformers (CPU, float32).

Needs torch, transformers and compressed-tensors (pip installs them; no GPU is used) and a
release build of lowbit (`cargo build --release`). From the repository root:

  python3 tests/reference/compressed_tensors_reference.py [--lowbit target/release/lowbit]

It writes:

  tests/fixtures/compressed_tensors/<name>/   checkpoints of the synthetic llama_gqa model
      (tests/fixtures/synthetic/llama_gqa) compressed here by the compressed-tensors package's
      own compressors (its packing, its quantize), with scales computed below by round to
      nearest; lowbit must import them.
  tests/fixtures/reference/compressed_tensors.json   transformers' logits for
      - "exports": each scheme quantized and exported by lowbit (the Rust test redoes the same
        export in memory and checks it loads to the same logits in lowbit), and
      - "imports": each checkpoint above.

transformers loads both through its compressed-tensors integration with run_compressed=False,
which decompresses the weights (and applies dynamic activation quantization where the scheme
has one).
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig

from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import (
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
)

torch.set_grad_enabled(False)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(ROOT, "tests", "fixtures", "synthetic", "llama_gqa")
IMPORTS = os.path.join(ROOT, "tests", "fixtures", "compressed_tensors")
OUT = os.path.join(ROOT, "tests", "fixtures", "reference", "compressed_tensors.json")

# Same prompt as the forward-pass reference (vocabulary of 256).
PROMPT = [1, 17, 200, 45, 3, 99, 128, 7, 255, 64, 12]

# lowbit schemes exported by lowbit (every scheme with a compressed-tensors format).
EXPORTS = [
    "w4a16-g32",
    "w4a16-g64-asym",
    "w8a16",
    "w8a8",
    "w4a8-g32",
    "fp8",
    "fp8-block",
    "w8a8-fp8",
    # w8a8-fp8-block is refused on these 64-wide layers: its activation groups of 128 need
    # whole groups (the package's own forward fails on them).
]

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def args_int(bits, strategy, group_size=None, symmetric=True):
    return QuantizationArgs(
        num_bits=bits,
        type="int",
        strategy=strategy,
        group_size=group_size,
        symmetric=symmetric,
        dynamic=False,
    )


# Checkpoints made by the compressed-tensors package: name -> (format, weights, activations).
IMPORT_SCHEMES = {
    "w4a16_g32_sym": ("pack-quantized", args_int(4, "group", 32), None),
    "w4a16_g64_asym": ("pack-quantized", args_int(4, "group", 64, symmetric=False), None),
    "w8a16_channel": ("pack-quantized", args_int(8, "channel"), None),
    "w8a8_int": (
        "int-quantized",
        args_int(8, "channel"),
        QuantizationArgs(num_bits=8, type="int", strategy="token", symmetric=True, dynamic=True),
    ),
    "fp8_dynamic": (
        "float-quantized",
        QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True),
        QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True),
    ),
}


def add_activation_quantization(model, args):
    """Dynamic activation quantization on the input of every decoder-block linear, which
    transformers' decompressed loading leaves out. FP8 uses the compressed-tensors package's
    own dynamic scales and fake quantization; int8 uses vLLM's dynamic per-token kernel's
    scale (absmax / 127: the package's fake quantization divides by 127.5 instead)."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp

    def hook(module, inputs):
        x = inputs[0]
        if args.type == "int":
            scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127.0
            return ((x / scale).round().clamp(-127, 127) * scale,)
        width = x.shape[-1]
        if args.group_size and width % args.group_size:
            # Zero padding to whole groups (zeros change no group's absmax).
            x = torch.nn.functional.pad(x, (0, args.group_size - width % args.group_size))
        scale, zero = compute_dynamic_scales_and_zp(value=x, args=args, module=module)
        return (fake_quantize(x=x, scale=scale, zero_point=zero, args=args)[..., :width],)

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            module.register_forward_pre_hook(hook)


def logits(path):
    # Decompressed loading: with run_compressed=True, transformers 5.23 with compressed-tensors
    # 0.20 rejects the packed zero points of asymmetric pack-quantized checkpoints, the
    # package's own included (their shape differs from the module's unpacked parameter).
    model = AutoModelForCausalLM.from_pretrained(
        path,
        torch_dtype=torch.float32,
        quantization_config=CompressedTensorsConfig(run_compressed=False),
    )
    model.eval()
    with open(os.path.join(path, "config.json")) as f:
        groups = json.load(f)["quantization_config"]["config_groups"]
    activations = [g.get("input_activations") for g in groups.values()]
    assert len(activations) == 1, "one scheme per checkpoint here"
    if activations[0] is not None:
        add_activation_quantization(model, QuantizationArgs(**activations[0]))
    out = model(torch.tensor([PROMPT])).logits[0]
    return [[round(x, 6) for x in row] for row in out.tolist()]


def qparams(weight, args):
    """Round-to-nearest scales (and zero points) per group, channel or tensor."""
    out, inp = weight.shape
    w = weight.float()
    if args.strategy == "group":
        g = args.group_size
        groups = (inp + g - 1) // g
        padded = torch.nn.functional.pad(w, (0, groups * g - inp))
        blocks = padded.reshape(out, groups, g)
        lo, hi = blocks.amin(-1), blocks.amax(-1)
    else:
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    if args.type == "float":
        return (hi.abs().maximum(lo.abs()) / 448.0).clamp(min=1e-8), None
    qmax = 2 ** (args.num_bits - 1) - 1
    if args.symmetric:
        return (hi.abs().maximum(lo.abs()) / qmax).clamp(min=1e-8).half(), None
    scale = ((hi - lo) / (2**args.num_bits - 1)).clamp(min=1e-8).half()
    zero = (torch.round(-lo / scale.float()) - 2 ** (args.num_bits - 1)).clamp(
        -(2 ** (args.num_bits - 1)), qmax
    )
    return scale, zero.to(torch.int8)


def make_import(name, fmt, weights, activations):
    dest = os.path.join(IMPORTS, name)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    tensors = load_file(os.path.join(SOURCE, "model.safetensors"))
    scheme = QuantizationScheme(
        targets=["Linear"], weights=weights, input_activations=activations, format=fmt
    )
    compressor = BaseCompressor.get_value_from_registry(fmt)
    out = {}
    for key, value in tensors.items():
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and module.rsplit(".", 1)[-1] in LINEARS:
            scale, zero = qparams(value, weights)
            state = {"weight": value, "weight_scale": scale}
            if zero is not None:
                state["weight_zero_point"] = zero
            for k, v in compressor.compress(state, scheme).items():
                out[f"{module}.{k}"] = v.contiguous()
        else:
            out[key] = value
    save_file(out, os.path.join(dest, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(SOURCE, "config.json")) as f:
        config = json.load(f)
    qconfig = QuantizationConfig(
        config_groups={"group_0": scheme},
        format=fmt,
        quantization_status="compressed",
        ignore=["lm_head"],
    )
    config["quantization_config"] = json.loads(qconfig.model_dump_json())
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return dest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lowbit", default=os.path.join(ROOT, "target", "release", "lowbit"))
    a = parser.parse_args()
    result = {"prompt": PROMPT, "exports": {}, "imports": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in EXPORTS:
            quantized = os.path.join(tmp, f"q-{scheme}")
            exported = os.path.join(tmp, f"ct-{scheme}")
            subprocess.run(
                [a.lowbit, "quantize", "--model", SOURCE, "--scheme", scheme, "--out", quantized],
                check=True,
            )
            subprocess.run(
                [a.lowbit, "export", "--model", quantized, "--out", exported], check=True
            )
            result["exports"][scheme] = logits(exported)
            print(f"export {scheme}: ok")
    for name, (fmt, weights, activations) in IMPORT_SCHEMES.items():
        result["imports"][name] = logits(make_import(name, fmt, weights, activations))
        print(f"import {name}: ok")
    with open(OUT, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
