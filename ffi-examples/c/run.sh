#!/bin/sh
# Builds liblowbit (release), compiles the C examples against include/lowbit.h, and runs them:
# generate with the arguments given; quantize, which writes the quantized model to a temporary
# directory and generates with it; eval, which scores the model on the fixtures in
# tests/fixtures/eval; pipeline (quantize in memory, save, generate, perplexity, bench) linked
# once against the shared and once against the static library. Arguments: [PROMPT [MODEL_PATH]].
# Exits non-zero on any failure.
# tests/c_api.rs and tests/ffi_examples.rs do the same from `cargo test` and also check the
# output against the Rust API; misuse.c (run by tests/ffi_examples.rs) needs a small model.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --lib --manifest-path "$root/Cargo.toml"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-std=c11 -Wall -Wextra -Werror -pedantic -I $root/include"
for example in generate quantize eval pipeline; do
    ${CC:-cc} $flags "$root/ffi-examples/c/$example.c" -L "$target_dir/release" -llowbit \
        -o "$out/$example"
done
${CC:-cc} $flags "$root/ffi-examples/c/pipeline.c" "$target_dir/release/liblowbit.a" \
    -lgcc_s -lutil -lrt -lpthread -lm -ldl -o "$out/pipeline-static"
LD_LIBRARY_PATH="$target_dir/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
DYLD_LIBRARY_PATH="$target_dir/release${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH}"
export LD_LIBRARY_PATH DYLD_LIBRARY_PATH
"$out/generate" "$@"
"$out/quantize" "$out/quantized" "$@"
"$out/eval" "$root/tests/fixtures/eval" ${2+"$2"}
"$out/pipeline" "$out/pipeline-shared" "$@"
"$out/pipeline-static" "$out/pipeline-static-out" "$@"
