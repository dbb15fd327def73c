#!/usr/bin/env bash
# Builds the library's unit tests and the quantized-kernel tests for aarch64 and runs them under
# qemu user-mode emulation, once on a CPU with the dotprod extension (`-cpu max`: kernel sets
# Scalar, Neon, NeonDotprod) and once on one without (`-cpu cortex-a72`: Scalar, Neon), so every
# NEON kernel is checked against the references on an x86-64 machine. Emulated: correctness only,
# no timings.
#
# Needs the Rust target and a cross linker and emulator, e.g. on Debian/Ubuntu:
#   rustup target add aarch64-unknown-linux-gnu
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
# Extra arguments go to every test binary (e.g. a name filter). TARGET_DIR overrides the cargo
# target directory (default: target/).
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
sysroot=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
if [[ -n "${TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR=$TARGET_DIR
fi

for tool in "$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER" qemu-aarch64; do
    command -v "$tool" >/dev/null || { echo "aarch64.sh: $tool not found (see the header)" >&2; exit 2; }
done

# The test executables, from cargo's JSON messages (the CLI binary built alongside is not one).
mapfile -t binaries < <(
    cargo test --release --target "$target" --lib --test quant_kernels --no-run \
        --message-format=json |
        grep '"profile":{[^}]*"test":true' |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p'
)
if [[ ${#binaries[@]} -eq 0 ]]; then
    echo "aarch64.sh: no test executables were built" >&2
    exit 1
fi

for cpu in max cortex-a72; do
    for binary in "${binaries[@]}"; do
        echo "== qemu-aarch64 -cpu $cpu $(basename "$binary")"
        qemu-aarch64 -L "$sysroot" -cpu "$cpu" "$binary" "$@"
    done
done
