#!/usr/bin/env bash
# The README's run command on a machine whose Rust toolchain lacks the
# wasm32-wasip2 target: the usual state of a machine that had Rust 1.95
# before it ever saw rust-toolchain.toml (rustup adds that file's targets
# only when it installs the toolchain).
#
# A scratch RUSTUP_HOME holds a copy of the active toolchain (hard links,
# so it costs no space) without the target; `cargo run --release -- --help`
# under it must build (host/build.rs adds the target) and run. Cargo's
# fingerprints do not depend on where the toolchain lives, so this reuses
# target/ and only re-runs the host's build script.
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-wasip2
toolchain="$(rustup show active-toolchain | cut -d' ' -f1)"
sysroot="$(rustc --print sysroot)"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
scratch="$(mktemp -d /tmp/blockreg-rustup-XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/toolchains"
cp "$rustup_home/settings.toml" "$scratch/"
copy="$scratch/toolchains/$toolchain"
# The toolchain may be a symlink to another (rustup links a pinned version
# to a channel that has it): copy what it points at.
mkdir -p "$copy"
cp -al "$(readlink -f "$sysroot")/." "$copy/"
rm -rf "$copy/lib/rustlib/$target" "$copy/lib/rustlib/manifest-rust-std-$target"
# rustup's record of installed components, in two files: rewritten as new
# files (not through the hard links), without the target's standard library.
grep -v "^rust-std-$target\$" "$copy/lib/rustlib/components" >"$scratch/components"
awk -v RS= -v ORS='\n\n' -v t="target = \"$target\"" 'index($0, t) == 0' \
    "$copy/lib/rustlib/multirust-config.toml" >"$scratch/multirust-config.toml"
for f in components multirust-config.toml; do
    rm "$copy/lib/rustlib/$f"
    mv "$scratch/$f" "$copy/lib/rustlib/$f"
done

if RUSTUP_HOME="$scratch" rustup target list --installed --toolchain "$toolchain" | grep -qx "$target"; then
    echo "FAIL fresh_toolchain: the scratch toolchain still has $target"
    echo "0 passed, 1 failed"
    exit 1
fi

log="$scratch/build.log"
if RUSTUP_HOME="$scratch" cargo run --release -- --help >"$log" 2>&1 &&
    grep -q "added the $target target" "$log" &&
    grep -q "Usage: blockreg" "$log" &&
    RUSTUP_HOME="$scratch" rustup target list --installed --toolchain "$toolchain" | grep -qx "$target"; then
    echo "PASS fresh_toolchain: cargo run --release added $target and ran"
    echo "1 passed, 0 failed"
else
    tail -n 30 "$log"
    echo "FAIL fresh_toolchain: cargo run --release did not build on a toolchain without $target"
    echo "0 passed, 1 failed"
    exit 1
fi
