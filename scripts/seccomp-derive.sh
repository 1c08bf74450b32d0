#!/bin/sh
# Re-derive squib's seccomp allow-lists (crates/sys/src/seccomp/policy.rs).
#
# Runs the end-to-end suites under `strace -f` with the debug binary's audit mode
# (SQUIB_SECCOMP_AUDIT=1: the filters are installed but log instead of deny), then prints, per
# thread role (vmm = main thread + fc_stdin, api = fc_api, vcpu = fc_vcpu N), every system call
# a thread issued after its own `seccomp(SECCOMP_SET_MODE_FILTER)` call, with the arguments the
# policy filters on. Compare with policy.rs; calls the suites never reach are added there by hand.
#
# Usage: scripts/seccomp-derive.sh [test ...]   (default: boot_test_guest boot_virtio snapshot)
# Needs strace and /dev/kvm. Slow: the suites run under ptrace.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${SQUIB_TRACE_DIR:-$root/target/seccomp-trace}
mkdir -p "$out"
tests=${*:-boot_test_guest boot_virtio snapshot}
cd "$root/apps/squib-cli"
export CARGO_BIN_EXE_squib="$root/target/debug/squib" SQUIB_SECCOMP_AUDIT=1
traces=""
for t in $tests; do
    exe=$(cargo test -q -p squib-cli --test "$t" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] \
            and "test" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])' "$t")
    echo "== $t ($exe)" >&2
    strace -f -Y -qq -e signal=none -s 0 -o "$out/$t.txt" "$exe" --test-threads=2 >&2
    traces="$traces $out/$t.txt"
done
# shellcheck disable=SC2086
python3 "$root/scripts/seccomp_syscalls.py" $traces
