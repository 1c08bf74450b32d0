#!/usr/bin/env bash
# Coverage-guided fuzzing of squib's untrusted-input parsers with libFuzzer, on the STABLE
# toolchain: `fuzz/` is built with plain cargo and the sanitizer-coverage instrumentation
# (`-C passes=sancov-module` + `-C llvm-args=-sanitizer-coverage-*`, what cargo-fuzz passes with
# `-s none`); no nightly, no RUSTC_BOOTSTRAP, no sanitizer.
#
#   scripts/fuzz.sh SECONDS [TARGET...]   # each target (default: all) for SECONDS
#   scripts/fuzz.sh --list                 # the targets
#
# Corpora grow in fuzz/corpus/<target> (not checked in), starting from the checked-in seeds in
# fuzz/seeds/<target>. A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# fail after every target ran; reproduce it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
# If the fuzz toolchain cannot be set up (no C++ compiler for libFuzzer, no libfuzzer-sys, a
# rustc without the sancov pass), it prints one `SKIPPED: <reason>` line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(http_codec api_router config_file snapshot_state mmds_frames mmio_transport
  virtio_block virtio_net virtio_vsock vsock_packets virtio_balloon virtio_pmem virtio_mem
  virtio_rng)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
secs="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
[ "$#" -gt 0 ] && TARGETS=("$@")

skip() {
  echo "SKIPPED: fuzzing: $1"
  exit 0
}

command -v cargo >/dev/null 2>&1 || skip "cargo not found"
host=$(rustc -vV | sed -n 's/^host: //p')
if ! command -v c++ >/dev/null 2>&1; then
  echo "== installing g++ (libFuzzer is C++)"
  { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; } 2>/dev/null \
    || skip "no C++ compiler for libFuzzer and g++ cannot be installed"
fi

FLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-pc-table"
FLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares"

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
echo 'pub fn f(x: u8) -> bool { x == 7 }' >"$probe_dir/p.rs"
# Object only: the coverage callbacks are linked in from libFuzzer later.
# shellcheck disable=SC2086
rustc $FLAGS --crate-type lib --emit obj -o "$probe_dir/p.o" "$probe_dir/p.rs" 2>"$probe_dir/err" \
  || skip "this rustc cannot instrument for coverage ($(head -1 "$probe_dir/err"))"
cargo fetch -q --manifest-path fuzz/Cargo.toml 2>"$probe_dir/err" \
  || skip "cannot fetch the fuzz dependencies (libfuzzer-sys): $(tail -1 "$probe_dir/err")"

echo "== building fuzz targets (release, sancov, $host)"
RUSTFLAGS="$FLAGS" cargo build -q --release --manifest-path fuzz/Cargo.toml --target "$host" \
  --bins
bin_dir="fuzz/target/$host/release"

status=0
results=()
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  log="fuzz/artifacts/$t.log"
  echo "== $t (${secs}s)"
  rc=0
  "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1 \
    || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs_used=$(sed -n 's/^stat::.*//; s/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  ncorpus=$(find "$corpus" -type f | wc -l)
  rate="-"
  if [ -n "${runs:-}" ] && [ -n "${secs_used:-}" ] && [ "$secs_used" -gt 0 ]; then
    rate=$((runs / secs_used))
  fi
  if [ "$rc" -eq 0 ]; then
    verdict=ok
  else
    verdict="CRASH (exit $rc, see $log and $artifacts)"
    status=1
    grep -E "panicked at|==ERROR|deadly signal|SUMMARY" "$log" | head -5 || true
  fi
  results+=("$(printf '%-16s %10s %9s %6s %7s  %s' "$t" "${runs:-?}" "$rate" "${cov:-?}" "$ncorpus" "$verdict")")
done

echo
printf '%-16s %10s %9s %6s %7s  %s\n' target runs execs/s cov corpus result
printf '%s\n' "${results[@]}"
exit "$status"
