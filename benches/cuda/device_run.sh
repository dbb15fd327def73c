#!/usr/bin/env bash
# One call on a GPU machine with no Rust toolchain: the GPU tests, the Qwen2.5-0.5B-shaped forward
# bench (programmatic dependent launch on and off, a per-stage profile, the decode kernel's
# activation loads three ways), a sweep of the decode kernel's splits, then the kernel bench on
# chosen shapes, each cut to the time left.
#
# Build here first (the binaries go to .device/kbin, git-ignored):
#   benches/cuda/device_run.sh --pack
# then, on the device, from the repository root with .device/kbin carried:
#   LIMIT=540 benches/cuda/device_run.sh
# Outputs go to $OUT (default /tmp/out); a summary is printed.
set -u
KBIN=.device/kbin
if [ "${1:-}" = "--pack" ]; then
    set -e
    mkdir -p $KBIN
    list=$(mktemp)
    cargo test --release --features cuda --no-run 2>&1 | grep -E "cuda_kernels|cuda_model" > "$list"
    cargo bench --features cuda --no-run --bench cuda --bench cuda_forward 2>&1 | grep Executable >> "$list"
    for pair in tests/cuda_kernels.rs:cuda_kernels tests/cuda_model.rs:cuda_model \
        benches/cuda/main.rs:cuda_bench benches/cuda/forward.rs:cuda_forward; do
        key=${pair%%:*}; name=${pair##*:}
        path=$(grep -F "$key" "$list" | head -1 | sed 's/.*(\(.*\))/\1/')
        strip -o "$KBIN/$name" "$path"
        xz -T2 -6 -f "$KBIN/$name"
    done
    rm -f "$list"
    ls -la $KBIN
    exit 0
fi
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/k
T0=$SECONDS
left() { echo $(( ${LIMIT:-570} - (SECONDS - T0) )); }
for b in cuda_kernels cuda_model cuda_bench cuda_forward; do
    xz -dc $KBIN/$b.xz > /tmp/k/$b; chmod +x /tmp/k/$b
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in cuda_kernels cuda_model; do
    s=$SECONDS
    timeout 150 /tmp/k/$t --test-threads 1 --nocapture > "$OUT/$t.txt" 2>&1; rc=$?
    echo "$t rc $rc $((SECONDS - s)) s"
    grep -E "^test |panicked|test result|worst|over all" "$OUT/$t.txt" | head -20
    if [ $rc != 0 ]; then
        # Tell a failure of the kernels from one of programmatic dependent launch.
        LOWBIT_CUDA_NO_PDL=1 timeout 120 /tmp/k/$t --test-threads 1 > "$OUT/${t}_no_pdl.txt" 2>&1
        echo "$t without PDL rc $?"; grep -E "panicked|test result" "$OUT/${t}_no_pdl.txt" | head
    fi
done
# At most $1 seconds, fewer when less is left; 1 (next to nothing: timeout 0 would not
# limit) when under 15 s remain.
cap() { local t; t=$(left); if [ "$t" -gt 15 ]; then echo $(( t - 5 < $1 ? t - 5 : $1 )); else echo 1; fi; }
s=$SECONDS
timeout $(cap 170) /tmp/k/cuda_forward --schemes w4a16-g128 \
    --pdl ${PDL:-on,off} --profile --decode-tokens 64 > "$OUT/forward.txt" 2>&1
echo "cuda_forward rc $? $((SECONDS - s)) s"
grep -v "^  " "$OUT/forward.txt" | tail -22
grep -A14 "^profile w4a16-g128 (PDL on" "$OUT/forward.txt"
# The decode kernel's activation loads three ways (X_LOAD in kernels/quant_gemm.cu).
for x_load in 1 0 2; do
    s=$SECONDS
    LOWBIT_CUDA_X_LOAD=$x_load timeout $(cap 40) /tmp/k/cuda_bench --sweep \
        --shapes "4096x4096,14336x4096,4096x14336,9728x896" > "$OUT/sweep_x_load_$x_load.txt" 2>&1
    echo "activation loads $x_load: sweep rc $? $((SECONDS - s)) s"
    grep -E "sweep best" "$OUT/sweep_x_load_$x_load.txt"
done
for x_load in 0 2; do
    s=$SECONDS
    LOWBIT_CUDA_X_LOAD=$x_load timeout $(cap 40) /tmp/k/cuda_forward --schemes w4a16-g128 \
        --pdl on --decode-tokens 64 > "$OUT/forward_x_load_$x_load.txt" 2>&1
    echo "activation loads $x_load: forward rc $? $((SECONDS - s)) s"
    tail -4 "$OUT/forward_x_load_$x_load.txt"
done
s=$SECONDS
timeout $(cap 90) /tmp/k/cuda_forward --schemes w4a16-g128 --pdl on --batch 1,16 \
    --skip-stages norm,qkv,qkv_rope,attention,o_proj,gate_up_swiglu,down,lm_head \
    --decode-tokens 16 > "$OUT/stage_costs.txt" 2>&1
echo "stage costs rc $? $((SECONDS - s)) s"; grep "^stage cost" "$OUT/stage_costs.txt"
s=$SECONDS
timeout $(cap 120) /tmp/k/cuda_bench --sweep \
    --shapes "${SHAPES:-4096x4096,14336x4096,4096x14336,9728x896,896x4864,1152x896}" \
    > "$OUT/sweep.txt" 2>&1
echo "sweep rc $? $((SECONDS - s)) s"; grep -E "sweep (best|diagnostic)" "$OUT/sweep.txt"
s=$SECONDS
timeout $(cap 600) /tmp/k/cuda_bench \
    --shapes "${SHAPES:-4096x4096,14336x4096,4096x14336,9728x896,896x4864,1152x896}" \
    > "$OUT/bench.txt" 2>&1
echo "cuda_bench rc $? $((SECONDS - s)) s"
grep -E "^device|checks|bandwidth|FAIL|registers" "$OUT/bench.txt" | head -24
grep -E "^\| \[[0-9]+, [0-9]+\] \| (1|16|2048) \| (cuBLAS|w4a16-g128 gemv|w4a16-g128 \(|w8a8-fp8 )" \
    "$OUT/bench.txt" | cut -c1-110 | head -60
