#!/usr/bin/env python3
"""Regenerates tests/fixtures/smollm2_tokenizer_ids.json, the reference token ids that
`tests/gguf.rs::gguf_tokenizer_matches_hugging_face_smollm2` compares lowbit's tokenizer with.

How to run (from the repository root; needs `pip install gguf tokenizers transformers`, no torch):

    LOWBIT_DEFAULT_GGUF=/path/to/SmolLM2-135M-Instruct.Q4_1.gguf \
        python3 tests/reference/tokenizer_reference.py

Optional arguments: `--corpus PATH` (default tests/fixtures/tokenizer_corpus.txt) and
`--out PATH` (default tests/fixtures/smollm2_tokenizer_ids.json).

Samples: every line of the corpus (without its newline), then the whole corpus file as one text
(which covers newlines, blank-line runs and indentation across lines). All ids are computed with
`add_special_tokens=False`.

Where the reference comes from. A GGUF carries no tokenizer.json, so the Hugging Face tokenizer of
SmolLM2-135M-Instruct is rebuilt here with the `tokenizers` library from the GGUF's vocabulary and
merges plus the definition of the original `tokenizer.json` (the StarCoder-style byte-level BPE
HuggingFaceTB uses for SmolLM/SmolLM2):

    pre_tokenizer: Sequence[Digits(individual_digits=True),
                            ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    model:         BPE, no unk token (characters whose bytes are not in the vocabulary vanish)
    decoder:       ByteLevel
    added tokens:  the 17 CONTROL tokens (ids 0..16), special, not normalized

Evidence for the pre-tokenizer: llama.cpp's "smollm" pre-tokenizer type (ggml-org/llama.cpp
PR #8609, checked against HF with test-tokenizer-0) splits `\\p{N}` into single digits before the
GPT-2 regex, and the vocabulary has no token holding a digit other than the ten single digits.

The script also loads the file through transformers (`AutoTokenizer.from_pretrained(dir,
gguf_file=name)`, or without torch transformers' `convert_gguf_tokenizer` on the same metadata)
and reports where that loader disagrees. It does: transformers maps
`tokenizer.ggml.pre = "smollm"` to no split rule of its own, so it uses GPT-2's byte-level regex
without the digit split, which tokenizes runs of spaces before a digit differently (e.g. "a  1").
Those disagreements are listed in the fixture under `transformers_gguf_disagrees`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

ROOT = Path(__file__).resolve().parents[2]
CONTROL = 3
USER_DEFINED = 4


def field_strings(reader, key):
    field = reader.fields[key]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def field_ints(reader, key):
    field = reader.fields[key]
    return [int(field.parts[i][0]) for i in field.data]


def field_str(reader, key):
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def reference_tokenizer(gguf_path):
    reader = gguf.GGUFReader(gguf_path)
    if field_str(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("expected a byte-level BPE (tokenizer.ggml.model = gpt2) GGUF")
    pre = field_str(reader, "tokenizer.ggml.pre")
    if pre != "smollm":
        sys.exit(f"this reference is for SmolLM2 (tokenizer.ggml.pre = smollm), found {pre!r}")
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    types = field_ints(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(reader, "tokenizer.ggml.merges")]
    vocab = {token: index for index, token in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types) if ty == CONTROL]
    )
    tok.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    )
    return tok


def transformers_tokenizer(gguf_path):
    """The tokenizer transformers builds for this GGUF, as a callable text -> ids.

    `AutoTokenizer.from_pretrained(dir, gguf_file=name)` needs torch (transformers' GGUF metadata
    reader imports it). Without torch, the same conversion is run from its second step: the
    metadata is read with the `gguf` package into the dict transformers' reader would produce,
    and handed to transformers' own `convert_gguf_tokenizer`.
    """
    path = Path(gguf_path)
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    if torch is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return lambda text: tok.encode(text, add_special_tokens=False), "AutoTokenizer"

    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    reader = gguf.GGUFReader(gguf_path)
    tokenizer_dict = {}
    for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        field = reader.fields.get(f"tokenizer.{key}")
        if field is not None:
            tokenizer_dict[name] = field.contents()
    backend, _ = convert_gguf_tokenizer(field_str(reader, "general.architecture"), tokenizer_dict)
    return (
        lambda text: backend.encode(text, add_special_tokens=False).ids,
        "convert_gguf_tokenizer (torch not installed)",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=ROOT / "tests/fixtures/tokenizer_corpus.txt")
    parser.add_argument("--out", default=ROOT / "tests/fixtures/smollm2_tokenizer_ids.json")
    args = parser.parse_args()
    gguf_path = os.environ.get("LOWBIT_DEFAULT_GGUF")
    if not gguf_path:
        sys.exit("set LOWBIT_DEFAULT_GGUF to the SmolLM2-135M-Instruct GGUF file")

    corpus = Path(args.corpus).read_text(encoding="utf-8")
    texts = corpus.split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    texts.append(corpus)

    reference = reference_tokenizer(gguf_path)
    hf_gguf, hf_gguf_how = transformers_tokenizer(gguf_path)
    samples, disagree = [], []
    for index, text in enumerate(texts):
        ids = reference.encode(text, add_special_tokens=False).ids
        other = hf_gguf(text)
        if other != ids:
            disagree.append({"sample": index, "transformers_gguf_ids": other})
        samples.append({"text": text, "ids": ids})

    out = {
        "description": "SmolLM2-135M-Instruct token ids (add_special_tokens=False) per corpus line, "
        "then for the whole corpus; regenerate with tests/reference/tokenizer_reference.py",
        "pre_tokenizer": "Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]",
        "samples": samples,
        "transformers_gguf_loader": hf_gguf_how,
        "transformers_gguf_disagrees": disagree,
    }
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(samples)} samples written to {args.out}")
    print(f"transformers' GGUF tokenizer agrees on {len(samples) - len(disagree)} of {len(samples)}")
    for d in disagree:
        print(f"  disagrees on sample {d['sample']}: {texts[d['sample']][:60]!r}")


if __name__ == "__main__":
    main()
