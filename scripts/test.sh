#!/usr/bin/env bash
# squib's test command: formatting, lints, the whole test suite, and the seed contract.
# Installs what it needs (on Debian-like machines) and runs from any directory.
#
#   scripts/test.sh            # everything
#   SQUIB_SKIP_SEEDS=1 ...     # skip ../shared/seeds/check-seed-tests.sh (when ../shared is absent)
#   SQUIB_FUZZ_SECONDS=N ...   # fuzz each target N seconds (default 10; 14 targets)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "cargo not found: installing the Rust toolchain with rustup is required (https://rustup.rs)" >&2
  exit 1
fi
if ! need cc; then
  echo "== installing build-essential (C toolchain for the test guest)"
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings

echo "== cargo test"
if [ -e /dev/kvm ]; then echo "(/dev/kvm present: KVM tests will run)"; else echo "SKIPPED: no /dev/kvm"; fi
mkdir -p target
# The ACPI variant of the shared Linux guest (boot_linux_acpi.rs); cached after the first build.
if [ -f ../shared/guest/make-guest.sh ] && [ -e /dev/kvm ]; then
  echo "== ACPI Linux guest (scripts/make-acpi-guest.sh; first build 5-10 min, then cached)"
  if acpi_dir=$(scripts/make-acpi-guest.sh 2> target/make-acpi-guest.log); then
    export SQUIB_ACPI_GUEST_DIR=$acpi_dir
  else
    echo "ACPI guest build failed (target/make-acpi-guest.log); boot_linux_acpi will say SKIPPED"
    tail -5 target/make-acpi-guest.log
  fi
fi
status=0
cargo test --workspace 2>&1 | tee target/test-output.txt || status=$?
[ "$status" -eq 0 ] || { echo "cargo test failed (exit $status)"; exit "$status"; }

# Coverage-guided fuzzing, a short budget per target (scripts/fuzz.sh; prints one SKIPPED line
# and passes when the fuzz toolchain cannot be set up). A crash fails the run.
echo "== fuzz (${SQUIB_FUZZ_SECONDS:-10} s per target)"
scripts/fuzz.sh "${SQUIB_FUZZ_SECONDS:-10}"

seeds="../shared/seeds/check-seed-tests.sh"
if [ "${SQUIB_SKIP_SEEDS:-0}" = 1 ]; then
  echo "== seed contract: skipped (SQUIB_SKIP_SEEDS=1)"
elif [ -f "$seeds" ]; then
  echo "== seed contract ($seeds)"
  bash "$seeds" .
else
  echo "== seed contract: NOT RUN, $seeds not found (expected ../shared beside the checkout)"
  exit 1
fi

# One summary line over every test binary.
passed=$(grep -Eo '[0-9]+ passed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
