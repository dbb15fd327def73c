#!/bin/sh
# Builds liblowbit (release), compiles generate.c, quantize.c and eval.c against include/lowbit.h,
# and runs them: generate with the arguments given, then quantize, which writes the quantized
# model to a temporary directory and generates with it, then eval, which scores the model on the
# fixtures in tests/fixtures/eval. Arguments: [PROMPT [MODEL_PATH]].
# Exits non-zero on any failure.
# tests/c_api.rs does the same from `cargo test` and also checks the text against the Rust API.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --lib --manifest-path "$root/Cargo.toml"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for example in generate quantize eval; do
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -pedantic -I "$root/include" \
        "$root/ffi-examples/c/$example.c" -L "$target_dir/release" -llowbit -o "$out/$example"
done
LD_LIBRARY_PATH="$target_dir/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
DYLD_LIBRARY_PATH="$target_dir/release${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH}"
export LD_LIBRARY_PATH DYLD_LIBRARY_PATH
"$out/generate" "$@"
"$out/quantize" "$out/quantized" "$@"
"$out/eval" "$root/tests/fixtures/eval" ${2+"$2"}
