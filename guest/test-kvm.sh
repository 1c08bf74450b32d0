#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Build squib-test-guest and boot it on /dev/kvm with tools/fc-boot, a tiny
# loader that reproduces Firecracker's x86_64 boot (zero page at 0x7000,
# 64-bit entry, 1 GiB boot page tables, MP table, RSDP/XSDT/MADT, APs waiting
# for SIPI). This covers the default artifact's Linux 64-bit boot path, which
# QEMU cannot boot; test-qemu.sh covers the PVH artifact under QEMU.
#
#   guest/test-kvm.sh [OUTDIR]
#
# Needs gcc and a usable /dev/kvm. The last line is always "N passed, M failed".
set -u

here=$(cd "$(dirname "$0")" && pwd)
VERBOSE=${VERBOSE:-0}
pass=0
fail=0

artifacts=$("$here/build.sh" "$@") || {
	echo "test-kvm.sh: build failed" >&2
	echo "0 passed, 1 failed"
	exit 1
}
elf=$(echo "$artifacts" | sed -n 1p)
pvh=$(echo "$artifacts" | sed -n 2p)
outdir=$(dirname "$elf")

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
	echo "test-kvm.sh: /dev/kvm is not usable here" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
fcboot="$outdir/fc-boot"
gcc -O2 -Wall -Wextra -pthread -o "$fcboot" "$here/tools/fc-boot.c" || {
	echo "test-kvm.sh: building tools/fc-boot.c failed" >&2
	echo "0 passed, 1 failed"
	exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/squib-guest-kvm.XXXXXX")
trap 'rm -rf "$work"' EXIT

errs=
# boot NAME [fc-boot args...]: stdout (serial) -> $out, stderr -> $log, status -> $rc
boot() {
	local name=$1
	shift
	out="$work/$name.out"
	log="$work/$name.log"
	"$fcboot" "$@" >"$out" 2>"$log"
	rc=$?
	if [ "$VERBOSE" = 1 ]; then
		sed "s/^/    | /" "$out" "$log"
	fi
}
expect_rc() { [ "$rc" = "$1" ] || errs="$errs; fc-boot exit $rc, expected $1 ($(tail -n1 "$log"))"; }
expect_line() { grep -aqxF "$1" "$out" || errs="$errs; missing line '$1'"; }
expect_re() { grep -aqE "$1" "$out" || errs="$errs; no line matching /$1/"; }
expect_no_re() { ! grep -aqE "$1" "$out" || errs="$errs; unexpected line matching /$1/"; }
expect_log_re() { grep -aqE "$1" "$log" || errs="$errs; fc-boot log has no /$1/"; }
expect_clean() {
	expect_rc 0
	[ "$(head -n1 "$out")" = "SQUIBTEST BEGIN $1" ] || errs="$errs; first line is not 'SQUIBTEST BEGIN $1'"
	[ "$(tail -n1 "$out")" = "SQUIBTEST END $1" ] || errs="$errs; last line is not 'SQUIBTEST END $1'"
	expect_no_re '^TEST fail'
}
verdict() {
	if [ -z "$errs" ]; then
		pass=$((pass + 1))
		echo "PASS $1"
	else
		fail=$((fail + 1))
		echo "FAIL $1${errs}"
		sed "s/^/    | /" "$out" "$log" | tail -n 20
	fi
	errs=
}

T="-t 60"

# ---- Linux 64-bit boot protocol (default artifact) ----
for mib in 128 1024; do
	args="squibtest=hello console=ttyS0 reboot=k panic=1 pci=off"
	boot "hello-$mib" $T -m "$mib" "$elf" "$args"
	expect_clean hello
	expect_line "TEST info boot=linux64 boot_info=0x7000 valid=1"
	expect_line "TEST info cmdline_len=${#args}"
	expect_line "TEST info mem_mib=$mib"
	expect_line "TEST ok hello"
	expect_log_re '^fc-boot: Guest-boot-time = [0-9]+ us'
	verdict "hello, Linux 64-bit entry, $mib MiB"
done

boot virtio $T "$elf" "squibtest=hello virtio_mmio.device=4K@0xc0001000:5"
expect_clean hello
expect_line "TEST info virtio_mmio_devices=1"
expect_re '^TEST info virtio_mmio base=0xc0001000 size=0x1000 irq=5 magic=0xffffffff '
verdict "hello reads the virtio-mmio slot at 0xc0001000 (nothing there: all ones)"

for c in 1 2 4; do
	boot "smp-$c" $T -c "$c" "$elf" "squibtest=smp"
	expect_clean smp
	expect_line "TEST info mptable_cpus=$c"
	expect_line "TEST info mptable_addr=0x9fc00"
	expect_line "TEST info acpi_cpus=$c"
	expect_line "TEST info madt_addr=0xa0100"
	expect_line "TEST ok smp cpus=$c"
	verdict "smp, $c vCPU(s), Linux 64-bit entry"
done

boot fault $T "$elf" "squibtest=fault"
expect_rc 3
expect_line "TEST info fault=triple-fault-next"
expect_no_re '^SQUIBTEST END'
verdict "fault -> KVM_EXIT_SHUTDOWN, Linux 64-bit entry"

boot exception $T "$elf" "squibtest=exception"
expect_rc 0
expect_re '^TEST fail exception vector=6 '
expect_line "SQUIBTEST END exception"
verdict "exception reported, then i8042 reset"

boot counter -t 6 "$elf" "squibtest=counter squibtest.tick_shift=14"
expect_rc 124
expect_line "TICK 1"
expect_line "TICK 2"
expect_no_re '^SQUIBTEST END'
verdict "counter ticks until the timeout"

# ---- PVH (the -pvh artifact, Firecracker's PVH layout) ----
boot pvh-hello $T --pvh "$pvh" "squibtest=hello"
expect_clean hello
expect_line "TEST info boot=pvh boot_info=0x6000 valid=1"
expect_line "TEST info mem_mib=128"
verdict "hello, PVH entry"

boot pvh-smp $T --pvh -c 4 "$pvh" "squibtest=smp"
expect_clean smp
expect_line "TEST ok smp cpus=4"
verdict "smp, 4 vCPUs, PVH entry"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
