"""Writes tests/fixtures/eval/: small evaluation sets in each benchmark's published file format,
made from GSM8K (MIT licence, grade-school-math commit 3101c7d), because the real ARC, MMLU,
LAMBADA and WikiText files are not available here.

usage: python3 tests/reference/make_eval_fixtures.py GSM8K_DIR [OUT_DIR --large]

With OUT_DIR and --large it writes the same layout, larger, for studies on a real model
(`benches/studies/smollm2.toml`): ARC from test rows 0..500, LAMBADA from rows 500..1000 and the
perplexity text from rows 1000..1040 (question and answer), all disjoint from each other and
from the training split the calibration sets draw from; and calibration.jsonl, the first 2048
training rows as `Question: ...\nAnswer: ...` text records (the layout of the study's built-in
calibration set), for calibration budgets up to 2048 samples.

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
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval")
large = "--large" in sys.argv[3:]


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
arc_rows = test[:500] if large else test[:100]
for i, row in enumerate(arc_rows):
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
lambada_rows = test[500:1000] if large else test[140:240]
write("lambada/lambada_test.jsonl",
      "\n".join(json.dumps({"text": r["question"].strip()}) for r in lambada_rows) + "\n")
text_rows = test[1000:1040] if large else train[:30]
write("text.txt", "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in text_rows))
write("gsm8k/test.jsonl", "\n".join(json.dumps(r) for r in test[:8]) + "\n")
if large:
    write("calibration.jsonl", "\n".join(
        json.dumps({"text": f"Question: {r['question']}\nAnswer: {r['answer']}"}) for r in train[:2048]) + "\n")
