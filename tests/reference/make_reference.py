#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for lowbit's forward-pass tests.

Runs on a machine with torch and transformers (the device machine has both; no GPU is used:
the reference runs on the CPU in float32 with eager attention). It writes:

  tests/fixtures/reference/<variant>.json   for every synthetic checkpoint under
                                            tests/fixtures/synthetic/<variant>/
  tests/fixtures/reference/smollm2.json     with --gguf PATH (SmolLM2-135M-Instruct Q4_1 GGUF,
  tests/fixtures/reference/smollm2.safetensors   loaded by transformers' own GGUF reader,
                                            which needs the `gguf` package)

Usage (from the repository root):
  python3 tests/reference/make_reference.py [--gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_grad_enabled(False)
torch.manual_seed(0)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC = os.path.join(ROOT, "tests", "fixtures", "synthetic")
OUT = os.path.join(ROOT, "tests", "fixtures", "reference")

# Token-id prompts for the synthetic models (vocabulary of 256). The long one passes the
# original context of the scaled-RoPE variants (64 and 32 positions).
SYNTHETIC_PROMPTS = [
    [1, 17, 200, 45, 3, 99, 128, 7, 255, 64, 12],
    [1, 5, 250, 33],
    [1] + [(i * 37 + 11) % 256 for i in range(79)],
]
GREEDY_TOKENS = 32

SMOLLM2_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is 17 * 23? Answer with a number.<|im_end|>\n<|im_start|>assistant\n",
]


def greedy(model, ids, steps):
    """Greedy continuation by full recomputation (no cache), so nothing but the forward pass
    decides the tokens."""
    out = []
    seq = list(ids)
    for _ in range(steps):
        logits = model(torch.tensor([seq])).logits[0, -1]
        token = int(torch.argmax(logits))
        out.append(token)
        seq.append(token)
    return out


def synthetic():
    for name in sorted(os.listdir(SYNTHETIC)):
        path = os.path.join(SYNTHETIC, name)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        cases = []
        for i, ids in enumerate(SYNTHETIC_PROMPTS):
            logits = model(torch.tensor([ids])).logits[0]
            case = {"ids": ids}
            if i < 2:
                case["logits"] = [[float(v) for v in row] for row in logits]
                case["greedy"] = greedy(model, ids, GREEDY_TOKENS)
            else:
                case["last_logits"] = [float(v) for v in logits[-1]]
            cases.append(case)
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump({"model": name, "transformers": __import__("transformers").__version__,
                       "cases": cases}, f)
        print(name, "ok", [len(c["ids"]) for c in cases])


def smollm2(gguf):
    from safetensors.torch import save_file

    folder, file = os.path.split(os.path.abspath(gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    cases, tensors = [], {}
    for i, text in enumerate(SMOLLM2_PROMPTS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0]
        tensors[f"last_logits.{i}"] = logits[-1].contiguous()
        cases.append({"text": text, "ids": ids, "greedy": greedy(model, ids, GREEDY_TOKENS),
                      "argmax_all": [int(v) for v in torch.argmax(logits, dim=-1)]})
        print("smollm2", i, len(ids), tok.decode(cases[-1]["greedy"]))
    save_file(tensors, os.path.join(OUT, "smollm2.safetensors"))
    with open(os.path.join(OUT, "smollm2.json"), "w") as f:
        json.dump({"model": "SmolLM2-135M-Instruct Q4_1 GGUF via transformers",
                   "transformers": __import__("transformers").__version__, "cases": cases},
                  f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if not args.skip_synthetic:
        synthetic()
    if args.gguf:
        smollm2(args.gguf)


if __name__ == "__main__":
    sys.exit(main())
