#!/usr/bin/env bash
# Real-model run on a GPU machine (the numbers of NOTES.md, "the whole forward pass"): GPU
# tests, the 0.5B-shaped forward bench, generation on CPU and GPU, `lowbit bench --device cuda`
# at batch 1 and 16, and eval parity (ARC-Easy and LAMBADA fixtures, dense and w4a16-g128).
# Run from the repository root with the built binaries (no toolchain needed there):
#   MODEL=path/to/SmolLM2-135M-Instruct.Q4_1.gguf LOWBIT=target/release/lowbit \
#   CUDA_MODEL=target/release/deps/cuda_model-... CUDA_FORWARD=target/release/deps/cuda_forward-... \
#   OUT=results bash benches/cuda/real_model.sh
set -o pipefail
: "${MODEL:?path of the GGUF model}" "${LOWBIT:?lowbit binary}" "${OUT:?output folder}"
mkdir -p "$OUT"
export LOWBIT_DEFAULT_GGUF=$MODEL
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv
[ -n "${CUDA_MODEL:-}" ] && "$CUDA_MODEL" --test-threads 1 --nocapture 2>&1 |
    grep -E "panicked|test result|^test |worst|diverged"
[ -n "${CUDA_FORWARD:-}" ] && "$CUDA_FORWARD" --decode-tokens 64
for dev in cpu cuda; do
    "$LOWBIT" generate --device $dev --model "$MODEL" --prompt "The capital of France is" --max-tokens 24
done
"$LOWBIT" bench --device cuda --batch 1,16 --model "$MODEL" --prompt-tokens 128 --decode-tokens 64
for s in none w4a16-g128; do
    opt=""; [ $s != none ] && opt="--scheme $s"
    for dev in cpu cuda; do
        start=$SECONDS
        "$LOWBIT" eval --device $dev --model "$MODEL" $opt --tasks arc_easy,lambada_openai \
            --data-dir tests/fixtures/eval --out "$OUT/eval_${s}_$dev.json" 2>&1 |
            grep -v "^lowbit: \[" | tail -8 || echo "eval $s $dev failed"
        echo "eval $s $dev: $((SECONDS - start)) s"
    done
    python3 benches/cuda/compare_eval.py "$OUT/eval_${s}_cpu.json" "$OUT/eval_${s}_cuda.json" $s
done
"$LOWBIT" bench --device cpu --batch 1 --model "$MODEL" --prompt-tokens 128 --decode-tokens 32 \
    --schemes w4a16-g128
