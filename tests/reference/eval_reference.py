#!/usr/bin/env python3
"""Reference scores of lm-evaluation-harness for lowbit's evaluation tests.

The model is lm-eval's own `HFLM` (transformers, float32, eager attention, CPU) wrapping
SmolLM2-135M-Instruct read from its Q4_1 GGUF by transformers, with lowbit's tokenizer.json (the
one lowbit converts the GGUF's vocabulary into). Requests go through `HFLM.loglikelihood`,
`loglikelihood_rolling` and `generate_until`; windows, few-shot sampling, answer filters and
metrics are lm-eval's functions. Task prompts follow the task YAMLs of lm-eval 0.4.13 (the data
loaders need the `datasets` package, which is not installed where this runs). Data: the
fixtures in tests/fixtures/eval (see make_eval_fixtures.py) and, with --gsm8k, the GSM8K
test/train files for the 5-shot task.

usage: python3 tests/reference/eval_reference.py --lm-eval DIR --gguf FILE --tokenizer DIR
           [--gsm8k DIR] [--out tests/fixtures/reference/eval.json]
"""
import argparse
import csv
import json
import math
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "eval")
MAX_LENGTH = 512
GSM8K_DOCS = 8


def stub_missing(names):
    """lm-eval imports some packages only for metrics not used here."""
    for name in names:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lm-eval", required=True, help="folder holding the lm_eval package")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokenizer", required=True, help="folder with lowbit's tokenizer.json")
    ap.add_argument("--gsm8k", help="folder with GSM8K test.jsonl and train.jsonl")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "reference", "eval.json"))
    args = ap.parse_args()
    sys.path.insert(0, args.lm_eval)
    stub_missing(["sacrebleu", "evaluate", "rouge_score", "sqlitedict", "pytablewriter", "word2number"])

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval.api.instance import Instance
    from lm_eval.api import metrics as M
    from lm_eval.api.samplers import ContextSampler
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.models.huggingface import HFLM

    torch.set_grad_enabled(False)
    folder, file = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=torch.float32, attn_implementation="eager"
    ).eval().to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=16,
              device=args.device)

    def ll(pairs):
        reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
        return lm.loglikelihood(reqs, disable_tqdm=True)

    out = {"lm_eval": "0.4.13", "transformers": __import__("transformers").__version__,
           "max_length": MAX_LENGTH, "tasks": {}}

    def multiple_choice(items):
        pairs = [(ctx, " " + c) for ctx, choices, _ in items for c in choices]
        res = ll(pairs)
        k, records, acc, acc_norm = 0, [], [], []
        for ctx, choices, gold in items:
            lls = [r[0] for r in res[k:k + len(choices)]]
            k += len(choices)
            lens = np.array([float(len(c)) for c in choices])
            pred, pred_norm = int(np.argmax(lls)), int(np.argmax(np.array(lls) / lens))
            acc.append(1.0 if pred == gold else 0.0)
            acc_norm.append(1.0 if pred_norm == gold else 0.0)
            records.append({"loglikelihoods": lls, "pred": pred, "pred_norm": pred_norm})
        return {"acc": M.mean(acc), "acc_stderr": M.mean_stderr(acc),
                "acc_norm": M.mean(acc_norm), "acc_norm_stderr": M.mean_stderr(acc_norm),
                "samples": records}

    # ARC layout.
    items = []
    with open(os.path.join(FIXTURES, "arc", "ARC-Easy-Test.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            labels = [c["label"] for c in d["question"]["choices"]]
            items.append((f"Question: {d['question']['stem']}\nAnswer:",
                          [c["text"] for c in d["question"]["choices"]],
                          labels.index(d["answerKey"])))
    out["tasks"]["arc_easy"] = multiple_choice(items)
    print("arc_easy", out["tasks"]["arc_easy"]["acc"], flush=True)

    # MMLU layout, 0-shot and 5-shot (dev rows first-n).
    def mmlu_rows(path):
        with open(path, newline="") as f:
            return [(r[0], r[1:5], "ABCD".index(r[5])) for r in csv.reader(f)]

    test = mmlu_rows(os.path.join(FIXTURES, "mmlu", "test", "gsm8k_arithmetic_test.csv"))
    dev = mmlu_rows(os.path.join(FIXTURES, "mmlu", "dev", "gsm8k_arithmetic_dev.csv"))

    def mmlu_prompt(q, c):
        return f"{q.strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"

    desc = "The following are multiple choice questions (with answers) about gsm8k arithmetic.\n\n"
    for shots in (0, 5):
        fewshot = "".join(f"{mmlu_prompt(q, c)} {'ABCD'[g]}\n\n" for q, c, g in dev[:shots])
        items = [(desc + fewshot + mmlu_prompt(q, c), ["A", "B", "C", "D"], g) for q, c, g in test]
        out["tasks"][f"mmlu_{shots}shot"] = multiple_choice(items)
        print("mmlu", shots, out["tasks"][f"mmlu_{shots}shot"]["acc"], flush=True)

    # LAMBADA layout.
    with open(os.path.join(FIXTURES, "lambada", "lambada_test.jsonl")) as f:
        texts = [json.loads(line)["text"] for line in f]
    res = ll([(" ".join(t.split(" ")[:-1]), " " + t.split(" ")[-1]) for t in texts])
    out["tasks"]["lambada_openai"] = {
        "acc": M.mean([1.0 if g else 0.0 for _, g in res]),
        "perplexity": M.perplexity([l for l, _ in res]),
        "samples": [{"loglikelihood": l, "is_greedy": bool(g)} for l, g in res],
    }
    print("lambada", out["tasks"]["lambada_openai"]["acc"], flush=True)

    # Perplexity of a text file: rolling windows (word/byte perplexity, bits per byte) and token
    # perplexity over windows of 256 tokens advanced by 128.
    with open(os.path.join(FIXTURES, "text.txt")) as f:
        text = f.read()
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)],
                                          disable_tqdm=True)
    import re
    words = len(re.split(r"\s+", text))
    nbytes = len(text.encode("utf-8"))
    tokens = lm.tok_encode(text)
    window, stride = 256, 128
    reqs, start, scored_until = [], 0, 1
    while scored_until < len(tokens):
        end = min(start + window, len(tokens))
        first = max(scored_until, start + 1)
        reqs.append((("", ""), tokens[start:first], tokens[first:end]))
        scored_until = end
        start += stride
    token_res = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    count = sum(len(r[2]) for r in reqs)
    out["tasks"]["text"] = {
        "loglikelihood": rolling,
        "word_perplexity": M.weighted_perplexity([(rolling, words)]),
        "byte_perplexity": M.weighted_perplexity([(rolling, nbytes)]),
        "bits_per_byte": M.bits_per_byte([(rolling, nbytes)]),
        "token_perplexity": math.exp(-sum(r[0] for r in token_res) / count),
        "tokens": len(tokens),
    }
    print("text", out["tasks"]["text"], flush=True)

    # GSM8K: greedy generation, strict and flexible filters, exact match.
    def gsm8k(prompts, references, until, strict_pattern):
        reqs = [Instance("generate_until", {}, (p, {"until": until, "do_sample": False,
                                                    "max_gen_toks": 256}), i)
                for i, p in enumerate(prompts)]
        responses = lm.generate_until(reqs, disable_tqdm=True)
        strict = RegexFilter(regex_pattern=strict_pattern, group_select=0)
        flexible = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
        s = [r[0] for r in strict.apply([[r] for r in responses], [{}] * len(responses))]
        fl = [r[0] for r in flexible.apply([[r] for r in responses], [{}] * len(responses))]
        ignore = [",", "\\$", "(?s).*#### ", "\\.$"]

        def em(preds):
            return [M.exact_match_hf_evaluate([p], [r], regexes_to_ignore=ignore,
                                              ignore_case=True)["exact_match"]
                    for p, r in zip(preds, references)]

        sm, fm = em(s), em(fl)
        return {"exact_match,strict-match": M.mean(sm),
                "exact_match,flexible-extract": M.mean(fm),
                "samples": [{"response": r, "strict": a, "flexible": b, "strict_match": x,
                             "flexible_match": y}
                            for r, a, b, x, y in zip(responses, s, fl, sm, fm)]}

    with open(os.path.join(FIXTURES, "gsm8k", "test.jsonl")) as f:
        docs = [json.loads(line) for line in f]
    import yaml

    with open(os.path.join(args.lm_eval, "lm_eval", "tasks", "gsm8k", "gsm8k-cot.yaml")) as f:
        cot = yaml.safe_load(f)
    shots = "".join(f"Q: {s['question']}\nA: {s['target']}\n\n"
                    for s in cot["fewshot_config"]["samples"])
    prompts = [shots + f"Q: {d['question']}\nA:" for d in docs]
    refs = [d["answer"].split("####")[-1].strip() for d in docs]
    out["tasks"]["gsm8k_cot"] = gsm8k(prompts, refs, ["Q:", "</s>", "<|im_end|>"],
                                      r"The answer is (\-?[0-9\.\,]+).")
    print("gsm8k_cot", out["tasks"]["gsm8k_cot"]["exact_match,flexible-extract"], flush=True)

    if args.gsm8k:
        def read(name):
            with open(os.path.join(args.gsm8k, name)) as f:
                return [json.loads(line) for line in f]

        test_docs, train_docs = read("test.jsonl"), read("train.jsonl")
        sampler = ContextSampler(train_docs, rnd=1234)
        prompts = []
        for d in test_docs[:GSM8K_DOCS]:
            fs = sampler.sample(n=5)
            prompts.append("".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n"
                                   for e in fs) + f"Question: {d['question']}\nAnswer:")
        refs = [d["answer"] for d in test_docs[:GSM8K_DOCS]]
        out["tasks"]["gsm8k"] = gsm8k(prompts, refs, ["Question:", "</s>", "<|im_end|>"],
                                      r"#### (\-?[0-9\.\,]+)")
        out["tasks"]["gsm8k"]["prompts_sha256"] = [
            __import__("hashlib").sha256(p.encode()).hexdigest() for p in prompts]
        print("gsm8k", out["tasks"]["gsm8k"]["exact_match,flexible-extract"], flush=True)

    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
