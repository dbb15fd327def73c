"""Quantizes a model with llm-compressor on exactly the calibration tokens lowbit used, and
writes the result so that lowbit scores both the same way.

usage: python3 llmcompressor_side_by_side.py MODEL_DIR CALIB.jsonl OUT_DIR METHOD [ACTORDER] [GROUP]

- MODEL_DIR: a Hugging Face checkpoint (for the default model: the folder `lowbit fetch` prints).
- CALIB.jsonl: `{"input_ids": [...]}` per sample, as `lowbit quantize ... --save-calib` writes
  it, so both tools calibrate on the same token sequences in the same order.
- METHOD: `gptq` (GPTQModifier) or `awq` (AWQModifier), int4 symmetric weights in groups of
  GROUP (default 64; lowbit's `w4a16-g64`), every Linear of the decoder blocks, lm_head kept.
  llm-compressor refuses groups that do not divide a layer's width, so the default model
  (576- and 1536-wide inputs) can be compared at groups of 32 or 64, not 128.
- ACTORDER (gptq only): `static` (llm-compressor's default), `group` or `none`.

OUT_DIR/dense holds the quantized model with its weights dequantized to f32
(`save_compressed=False`), which any loader reads (lowbit too); OUT_DIR/compressed holds the
compressed-tensors export where the package can write one. Score with, for example:
`lowbit eval --model OUT_DIR/dense --tasks text:HELDOUT --context 512 --stride 512`.

Needs llmcompressor (0.14 was used: `pip install llmcompressor`); it runs on the CPU.
"""

import json
import os
import sys
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcompressor import oneshot


def main():
    model_dir, calib_path, out_dir, method = sys.argv[1:5]
    actorder = sys.argv[5] if len(sys.argv) > 5 else "static"
    group = int(sys.argv[6]) if len(sys.argv) > 6 else 64
    with open(calib_path) as f:
        samples = [json.loads(line)["input_ids"] for line in f if line.strip()]
    dataset = Dataset.from_dict(
        {
            "input_ids": samples,
            "attention_mask": [[1] * len(s) for s in samples],
        }
    )
    longest = max(len(s) for s in samples)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    config_groups = {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 4,
                "type": "int",
                "symmetric": True,
                "strategy": "group",
                "group_size": group,
            },
        }
    }
    if method == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        recipe = GPTQModifier(
            config_groups=config_groups,
            ignore=["lm_head"],
            actorder=None if actorder == "none" else actorder,
        )
    elif method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        recipe = AWQModifier(config_groups=config_groups, ignore=["lm_head"])
    else:
        sys.exit(f"unknown method {method!r}: gptq or awq")

    started = time.time()
    oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        num_calibration_samples=len(samples),
        max_seq_length=longest,
        shuffle_calibration_samples=False,
    )
    seconds = time.time() - started
    print(f"llm-compressor {method} g{group} ({actorder}): {len(samples)} samples, {seconds:.1f} s")

    # The weights must now hold the quantized values: at most 16 per group.
    weight = model.model.layers[0].self_attn.q_proj.weight.detach()
    for row in range(4):
        for start in range(0, weight.shape[1] - group + 1, group):
            distinct = torch.unique(weight[row, start : start + group]).numel()
            assert distinct <= 16, f"q_proj row {row} group {start}: {distinct} values"

    dense = os.path.join(out_dir, "dense")
    model.save_pretrained(dense, save_compressed=False)
    tokenizer.save_pretrained(dense)
    # save_compressed=False leaves the quantization_config in config.json; the weights are
    # already dequantized, so drop it and let every loader read a plain f32 model.
    config_path = os.path.join(dense, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.pop("quantization_config", None)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    try:
        compressed = os.path.join(out_dir, "compressed")
        model.save_pretrained(compressed, save_compressed=True)
        tokenizer.save_pretrained(compressed)
    except Exception as e:  # noqa: BLE001 - report and keep the dense copy
        print(f"compressed save failed: {e}")
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(
            {
                "method": method,
                "actorder": actorder,
                "group_size": group,
                "samples": len(samples),
                "seconds": seconds,
                "torch": torch.__version__,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
