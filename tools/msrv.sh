#!/usr/bin/env bash
# Proves that the workspace's `rust-version` (Cargo.toml) is the true minimum: the declared
# toolchain checks every crate and target, and the release before it fails. Installs both
# toolchains with rustup (minimal profile, cached in ~/.rustup). The floor today is set by a
# dependency: candle-core 0.11.1 calls `__cpuid_count` outside `unsafe`, which Rust 1.94 made
# safe; our own code needs 1.89 (the AVX-512 intrinsics; clippy's `incompatible_msrv` checks our
# std use against `rust-version` in every clippy run).
# The older release is run with --ignore-rust-version, so it fails by compiling, not by cargo
# refusing the declared version.
# When rustup cannot reach its server the script says so and exits 3 (test.sh reports it and
# goes on: the toolchain server is not a project failure); any other failure is a real one.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
[[ -n "$msrv" ]] || { echo "msrv.sh: no rust-version in Cargo.toml" >&2; exit 1; }
prev="${msrv%.*}.$(( ${msrv##*.} - 1 ))"
target="${MSRV_TARGET_DIR:-target/msrv}"

# Every crate inherits the workspace's rust-version.
for c in crates/*/Cargo.toml; do
  grep -q '^rust-version.workspace = true' "$c" || { echo "msrv.sh: $c does not inherit rust-version" >&2; exit 1; }
done

# No dependency declares a newer minimum than ours.
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
msrv = tuple(int(x) for x in sys.argv[1].split("."))
m = json.load(sys.stdin)
over = ["%s %s needs %s" % (p["name"], p["version"], p["rust_version"]) for p in m["packages"]
        if p["source"] and p["rust_version"]
        and tuple(int(x) for x in p["rust_version"].split(".")) > msrv]
if over:
    sys.exit("msrv.sh: dependencies need more than " + sys.argv[1] + ": " + "; ".join(over))
' "$msrv"

for v in "$msrv" "$prev"; do
  if ! timeout 300 rustup toolchain install "$v" --profile minimal >/dev/null 2>&1; then
    echo "msrv.sh: rustup could not install Rust $v (toolchain server unreachable?); not checked" >&2
    exit 3
  fi
done

echo "msrv.sh: cargo +$msrv check (rust-version = $msrv)" >&2
CARGO_TARGET_DIR="$target" cargo "+$msrv" check --workspace --all-targets --locked --quiet

echo "msrv.sh: cargo +$prev check must fail" >&2
if CARGO_TARGET_DIR="$target" cargo "+$prev" check --workspace --all-targets --locked --quiet --ignore-rust-version >"$target/prev.log" 2>&1; then
  echo "msrv.sh: Rust $prev builds the workspace too: lower rust-version to the true minimum" >&2
  exit 1
fi
grep -m1 -E '^error' "$target/prev.log" | sed "s/^/msrv.sh: Rust $prev fails as expected: /" >&2
echo "msrv.sh: rust-version $msrv is the minimum" >&2
