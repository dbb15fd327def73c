#!/bin/sh
# Builds liblowbit (release), compiles generate.c against include/lowbit.h, and runs it.
# Arguments are passed to the program: [PROMPT [MODEL_PATH]]. Exits non-zero on any failure.
# tests/c_api.rs does the same from `cargo test` and also checks the text against the Rust API.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --lib --manifest-path "$root/Cargo.toml"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
${CC:-cc} -std=c11 -Wall -Wextra -Werror -pedantic -I "$root/include" \
    "$root/ffi-examples/c/generate.c" -L "$target_dir/release" -llowbit -o "$out/generate"
LD_LIBRARY_PATH="$target_dir/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
DYLD_LIBRARY_PATH="$target_dir/release${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH}" \
    "$out/generate" "$@"
