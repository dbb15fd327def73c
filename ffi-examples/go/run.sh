#!/bin/sh
# Builds liblowbit (release) and runs the Go package's tests against it. Set LOWBIT_TEST_MODEL
# to a small checkpoint with a tokenizer to run the tests that need a model (tests/ffi_examples.rs
# writes one); without it they are skipped.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --lib --manifest-path "$root/Cargo.toml"
cd "$root/ffi-examples/go"
CGO_ENABLED=1 CGO_LDFLAGS="-L$target_dir/release -Wl,-rpath,$target_dir/release" go test -v -count=1 ./...
