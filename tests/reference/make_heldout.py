#!/usr/bin/env python3
"""Writes the held-out text of the calibration study: GSM8K test rows 300..380 (80 question/answer
pairs) as "Question: ...\nAnswer: ...\n\n" paragraphs, the format the calibration reader gives
GSM8K train rows. Calibration draws from train.jsonl only, so the two never overlap.

Usage: make_heldout.py GSM8K_TEST_JSONL OUT_TXT [FIRST] [COUNT]
Score with: lowbit eval --model DIR --tasks text:OUT_TXT --context 512 --stride 512
(token_perplexity is the study's figure).
"""
import json
import sys


def main():
    test, out = sys.argv[1], sys.argv[2]
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 80
    with open(test, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    chosen = rows[first : first + count]
    if len(chosen) != count:
        sys.exit(f"{test}: {len(rows)} rows, cannot take {count} from {first}")
    with open(out, "w", encoding="utf-8") as f:
        paragraphs = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in chosen]
        f.write("\n\n".join(paragraphs))


if __name__ == "__main__":
    main()
