"""Writes tests/fixtures/eval/: small evaluation sets in each benchmark's published file format,
made from GSM8K (MIT licence, grade-school-math commit 3101c7d), because the real ARC, MMLU,
LAMBADA and WikiText files are not available here.

usage: python3 tests/reference/make_eval_fixtures.py GSM8K_DIR

- arc/ARC-Easy-Test.jsonl (AI2 layout): a GSM8K question, the right number and three wrong ones.
- mmlu/test/gsm8k_arithmetic_test.csv, mmlu/dev/gsm8k_arithmetic_dev.csv (MMLU CSV layout).
- lambada/lambada_test.jsonl: a GSM8K question; the target is its last word.
- text.txt: the first 30 training question/answer pairs, for perplexity.
- gsm8k/test.jsonl: the first 8 test rows (for gsm8k_cot, whose few-shot examples are fixed).
"""

import csv
import json
import os
import random
import sys

src = sys.argv[1]
out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval")


def rows(name):
    with open(os.path.join(src, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


test = rows("test.jsonl")
train = rows("train.jsonl")


def gold(row):
    return int(row["answer"].split("####")[-1].strip().replace(",", ""))


def choices(i, row):
    g = gold(row)
    wrong = []
    for c in (g + 1, g - 1 if g > 0 else g + 2, 2 * g if g != 0 else g + 3, g + 10):
        if c != g and c not in wrong:
            wrong.append(c)
    options = [g] + wrong[:3]
    random.Random(i).shuffle(options)
    return [str(o) for o in options], options.index(g)


def write(rel, text):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write(text)


lines = []
for i, row in enumerate(test[:100]):
    texts, g = choices(i, row)
    labels = ["A", "B", "C", "D"]
    lines.append(json.dumps({
        "id": f"gsm8k-{i}",
        "question": {"stem": row["question"],
                     "choices": [{"text": t, "label": l} for t, l in zip(texts, labels)]},
        "answerKey": labels[g],
    }))
write("arc/ARC-Easy-Test.jsonl", "\n".join(lines) + "\n")


def mmlu_csv(items, offset):
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, row in enumerate(items):
        texts, g = choices(offset + i, row)
        w.writerow([row["question"], *texts, "ABCD"[g]])
    return buf.getvalue()


write("mmlu/test/gsm8k_arithmetic_test.csv", mmlu_csv(test[100:140], 100))
write("mmlu/dev/gsm8k_arithmetic_dev.csv", mmlu_csv(train[:5], 10_000))
write("lambada/lambada_test.jsonl",
      "\n".join(json.dumps({"text": r["question"].strip()}) for r in test[140:240]) + "\n")
write("text.txt", "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in train[:30]))
write("gsm8k/test.jsonl", "\n".join(json.dumps(r) for r in test[:8]) + "\n")
