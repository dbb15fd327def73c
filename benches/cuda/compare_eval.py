# Compares the per-item picks of two `lowbit eval --out` files (CPU and GPU).
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
total = same = 0
for task, samples in a["samples"].items():
    other = b["samples"][task]
    for x, y in zip(samples, other):
        if "pred" in x:
            keys = ["pred", "pred_norm"]
        else:
            keys = ["is_greedy"]
        for k in keys:
            total += 1
            same += x[k] == y[k]
            if x[k] != y[k]:
                print(f"  differs: {task} doc {x['doc_id']} {k}: cpu {x[k]} gpu {y[k]}")
    for m, v in a["results"][task].items():
        if m.endswith(",none") and not m.endswith("_stderr,none"):
            print(f"  {task} {m}: cpu {v:.4f} gpu {b['results'][task][m]:.4f}")
print(f"AGREEMENT {sys.argv[3]}: {same}/{total} = {100.0 * same / max(total, 1):.1f}%")
