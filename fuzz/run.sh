#!/usr/bin/env bash
# Runs every fuzz target of the sink (fuzz/fuzz_targets) for a bounded time:
#   fuzz/run.sh [SECONDS_PER_TARGET]   (default 30)
# Seeds come from `cargo run -p trace-sink --example fuzz_seeds` (generated, not
# committed); what a run learns stays in fuzz/corpus, a crash in
# fuzz/artifacts/<target>/ and fails the run. CI runs it from .ci/run.
# Needs: cargo; a nightly toolchain if installed (else the stable one with
# RUSTC_BOOTSTRAP=1, which cargo fuzz needs no more of without a sanitizer);
# installs cargo-fuzz from crates.io if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs="${1:-30}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2; exit 2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if [[ $'\n'"$(rustup toolchain list 2>/dev/null)" == *$'\n'nightly* ]]; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi

cargo run --quiet --locked -p trace-sink --example fuzz_seeds -- fuzz/seeds

# -O -a: optimized, with debug assertions and overflow checks. No sanitizer:
# the code is safe Rust; what is looked for is panics, wrong answers (the
# targets assert the reference decoders' reading) and unbounded work.
flags=(-O -a -s none)
cd fuzz
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
for target in $(cargo "${toolchain[@]}" fuzz list); do
  echo "== fuzz $target (${secs}s)"
  mkdir -p "corpus/$target"
  log="$(mktemp)"
  status=0
  cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$log" || true
  if ((status != 0)); then
    tail -40 "$log" >&2
    echo "fuzz/run.sh: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -f "$log"
done
