#!/bin/sh
# Builds liblowbit (release), compiles choice.cpp with the RAII wrapper lowbit.hpp, and runs it
# (arguments: [MODEL_PATH]). tests/ffi_examples.rs does the same and checks the scores against
# the Rust API.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --lib --manifest-path "$root/Cargo.toml"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
${CXX:-c++} -std=c++17 -Wall -Wextra -Werror -pedantic -I "$root/include" -I "$root/ffi-examples/cpp" \
    "$root/ffi-examples/cpp/choice.cpp" -L "$target_dir/release" -llowbit -o "$out/choice"
LD_LIBRARY_PATH="$target_dir/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$out/choice" "$@"
