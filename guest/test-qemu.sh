#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Build squib-test-guest and run every scenario under QEMU (PVH artifact via
# `-kernel`), checking the serial output and how QEMU exits.
#
#   guest/test-qemu.sh [OUTDIR]
#
# Environment:
#   QEMU=...            QEMU binary (default qemu-system-x86_64)
#   SQUIB_TEST_KVM=0|1  also run a few cases with -accel kvm (default: 1 if /dev/kvm is usable)
#   VERBOSE=1           print each case's serial output
#
# Needs qemu-system-x86 (Debian: apt-get install qemu-system-x86).
# The last line is always "N passed, M failed"; exit status is 0 iff M == 0.
set -u

here=$(cd "$(dirname "$0")" && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
VERBOSE=${VERBOSE:-0}

pass=0
fail=0
skip=0

if ! command -v "$QEMU" >/dev/null 2>&1; then
	echo "test-qemu.sh: $QEMU not found; install it with: apt-get install qemu-system-x86" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

artifacts=$("$here/build.sh" "$@") || {
	echo "test-qemu.sh: build failed" >&2
	echo "0 passed, 1 failed"
	exit 1
}
elf=$(echo "$artifacts" | sed -n 1p)
pvh=$(echo "$artifacts" | sed -n 2p)
echo "built: $elf ($(stat -c %s "$elf") bytes), $pvh ($(stat -c %s "$pvh") bytes)"

work=$(mktemp -d "${TMPDIR:-/tmp}/squib-guest-test.XXXXXX")
qpid=
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

kvm_ok=0
if [ "${SQUIB_TEST_KVM:-1}" = 1 ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	kvm_ok=1
fi

# run_qemu NAME TIMEOUT_S STOP_REGEX -- QEMU ARGS...
# Boots the PVH artifact. Serial output goes to $work/NAME.out. Stops when QEMU
# exits, when STOP_REGEX (if non-empty) appears, or at the timeout.
# Sets: out (file), how (exited|matched|timeout), rc (QEMU exit status if exited).
run_qemu() {
	local name=$1 tmo=$2 stop=$3
	shift 4
	out="$work/$name.out"
	: >"$out"
	"$QEMU" -nodefaults -display none -no-reboot -monitor none \
		-serial "file:$out" -kernel "$pvh" "$@" \
		>"$work/$name.qemu.log" 2>&1 &
	qpid=$!
	local deadline=$((SECONDS + tmo))
	how=timeout
	rc=
	while :; do
		if ! kill -0 "$qpid" 2>/dev/null; then
			wait "$qpid"
			rc=$?
			how=exited
			break
		fi
		if [ -n "$stop" ] && grep -aEq "$stop" "$out"; then
			how=matched
			break
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			break
		fi
		sleep 0.1
	done
	if [ "$how" != exited ]; then
		kill "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
	qpid=
	if [ "$VERBOSE" = 1 ]; then
		sed "s/^/    | /" "$out"
	fi
}

# Checks append to $errs; verdict NAME turns them into PASS/FAIL.
errs=
expect_line() { # exact line present
	grep -aqxF "$1" "$out" || errs="$errs; missing line '$1'"
}
expect_re() { # a line matching the ERE
	grep -aqE "$1" "$out" || errs="$errs; no line matching /$1/"
}
expect_no_re() {
	! grep -aqE "$1" "$out" || errs="$errs; unexpected line matching /$1/"
}
expect_how() {
	[ "$how" = "$1" ] || errs="$errs; qemu $how (rc=$rc), expected $1"
}
expect_first_line() {
	[ "$(head -n1 "$out" | tr -d '\r')" = "$1" ] || errs="$errs; first line is not '$1'"
}
verdict() {
	local name=$1
	if [ -z "$errs" ]; then
		pass=$((pass + 1))
		echo "PASS $name"
	else
		fail=$((fail + 1))
		echo "FAIL $name${errs}"
		sed "s/^/    | /" "$out" | tail -n 20
	fi
	errs=
}

# A clean run: BEGIN first, END last, QEMU exited by itself (i8042 reset + -no-reboot).
expect_clean() {
	local sc=$1
	expect_how exited
	expect_first_line "SQUIBTEST BEGIN $sc"
	[ "$(tail -n1 "$out")" = "SQUIBTEST END $sc" ] || errs="$errs; last line is not 'SQUIBTEST END $sc'"
	expect_no_re '^TEST fail'
}

tcg="-accel tcg -m 256"

# ---- the artifacts themselves ----
out="$work/elf.txt"
readelf -lhW "$elf" >"$out" 2>&1
expect_re '^  Type: +EXEC'
expect_re '^  Machine: +Advanced Micro Devices X86-64'
expect_re '^  Entry point address: +0x1000000$'
expect_no_re '^  NOTE '
for paddr in $(awk '$1 == "LOAD" { print $4 }' "$out"); do
	[ $((paddr)) -ge $((0x100000)) ] || errs="$errs; PT_LOAD at $paddr is below 1 MiB"
done
[ -n "$(awk '$1 == "LOAD"' "$out")" ] || errs="$errs; no PT_LOAD"
verdict "default ELF: EXEC x86-64, entry 0x1000000, PT_LOADs >= 1 MiB, no PT_NOTE"

out="$work/elf-pvh.txt"
readelf -lnW "$pvh" >"$out" 2>&1
pvh_entry=$(nm "$pvh" | awk '$3 == "_start_pvh" { print $1 }' | sed 's/^0*//')
# little-endian u32 -> hex
desc=$(sed -n 's/.*description data: \([0-9a-f][0-9a-f]\) \([0-9a-f][0-9a-f]\) \([0-9a-f][0-9a-f]\) \([0-9a-f][0-9a-f]\).*/\4\3\2\1/p' "$out" | sed 's/^0*//')
expect_re '^  NOTE '
expect_re '^  Xen +0x00000004	Unknown note type: \(0x00000012\)'
[ -n "$pvh_entry" ] && [ "$desc" = "$pvh_entry" ] || errs="$errs; PVH note entry '$desc' != _start_pvh '$pvh_entry'"
verdict "PVH ELF: XEN_ELFNOTE_PHYS32_ENTRY (18) = _start_pvh (0x$pvh_entry)"

out="$work/repro.txt"
"$here/build.sh" "$work/r1" >"$out" 2>&1 && "$here/build.sh" "$work/r2" >>"$out" 2>&1 || errs="$errs; rebuild failed"
for f in squib-test-guest.elf squib-test-guest-pvh.elf; do
	cmp -s "$work/r1/$f" "$work/r2/$f" && cmp -s "$work/r1/$f" "$(dirname "$elf")/$f" ||
		errs="$errs; $f differs between builds"
done
verdict "build is reproducible (3 builds in different directories are identical)"

# ---- hello, on the three machine types ----
for machine in q35 pc microvm; do
	args="squibtest=hello console=ttyS0 pci=off"
	if [ "$machine" = microvm ]; then
		# microvm has no i8042: the reset does not take, the guest halts.
		run_qemu "hello-$machine" 30 '^SQUIBTEST END' -- $tcg -machine microvm -append "$args"
		expect_how matched
		expect_first_line "SQUIBTEST BEGIN hello"
	else
		run_qemu "hello-$machine" 30 '' -- $tcg -machine "$machine" -append "$args"
		expect_clean hello
	fi
	expect_line "TEST ok hello"
	expect_line "TEST info cmdline_len=${#args}"
	expect_re '^TEST info boot=pvh '
	expect_re '^TEST info mem_mib=25[56]$'
	verdict "hello ($machine, tcg)"
done

# ---- default scenario (no squibtest=) is hello ----
run_qemu default 30 '' -- $tcg -machine q35 -append "console=ttyS0"
expect_clean hello
expect_line "TEST ok hello"
verdict "no squibtest= runs hello (q35, tcg)"

# ---- virtio-mmio announcements are parsed (no device behind them in q35) ----
run_qemu virtio-cmdline 30 '' -- $tcg -machine q35 \
	-append "squibtest=hello virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6"
expect_clean hello
expect_line "TEST info virtio_mmio_devices=2"
expect_re '^TEST info virtio_mmio base=0xc0001000 size=0x1000 irq=5 '
expect_re '^TEST info virtio_mmio base=0xc0002000 size=0x1000 irq=6 '
verdict "hello parses virtio_mmio.device= (q35, tcg)"

# ---- real virtio-mmio devices: microvm without ACPI announces them on the command line ----
run_qemu virtio-microvm 30 '^SQUIBTEST END' -- $tcg -machine microvm,acpi=off \
	-global virtio-mmio.force-legacy=false -device virtio-rng-device -append "squibtest=hello"
expect_how matched
expect_line "TEST info virtio_mmio_devices=1"
expect_re '^TEST info virtio_mmio base=0x[0-9a-f]+ size=0x200 irq=[0-9]+ magic=0x74726976 version=2 device_id=4$'
verdict "hello probes a virtio-mmio rng (microvm, tcg)"

# ---- smp ----
for n in 1 2 4; do
	run_qemu "smp-q35-$n" 60 '' -- $tcg -machine q35 -smp "$n,sockets=$n,cores=1,threads=1" \
		-append "squibtest=smp"
	expect_clean smp
	expect_line "TEST info mptable_cpus=$n"
	expect_line "TEST info acpi_cpus=$n"
	expect_line "TEST ok smp cpus=$n"
	verdict "smp -smp $n (q35, tcg)"
done
run_qemu smp-microvm-4 60 '^SQUIBTEST END' -- $tcg -machine microvm -smp 4 -append "squibtest=smp"
expect_how matched
expect_line "TEST info mptable_cpus=4"
expect_line "TEST info mptable_addr=0x9fc00"
expect_line "TEST info bsp_apic_id=0 ap_apic_ids=1,2,3"
expect_line "TEST ok smp cpus=4"
verdict "smp -smp 4 (microvm/qboot MP table, tcg)"

# ---- counter: ticks advance, pause (HMP stop) freezes them, cont resumes ----
mkfifo "$work/mon.in" "$work/mon.out"
out="$work/counter-pr.out"
: >"$out"
"$QEMU" -nodefaults -display none -no-reboot -serial "file:$out" -kernel "$pvh" $tcg -machine q35 \
	-append "squibtest=counter squibtest.tick_shift=20" -monitor "pipe:$work/mon" \
	>"$work/counter-pr.qemu.log" 2>&1 &
qpid=$!
exec 3<>"$work/mon.out" 4>"$work/mon.in"
last_tick() { sed -n 's/^TICK \([0-9]*\)$/\1/p' "$out" | tail -n1; }
for _ in $(seq 100); do [ -n "$(last_tick)" ] && [ "$(last_tick)" -ge 3 ] && break; sleep 0.1; done
t0=$(last_tick)
echo stop >&4
sleep 0.5
t1=$(last_tick)
sleep 1.5
t2=$(last_tick)
echo cont >&4
for _ in $(seq 100); do [ "$(last_tick)" -gt "${t2:-0}" ] && break; sleep 0.1; done
t3=$(last_tick)
echo quit >&4
for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
kill "$qpid" 2>/dev/null
wait "$qpid" 2>/dev/null
qpid=
exec 3<&- 4>&-
[ "$VERBOSE" = 1 ] && sed -n '1,5p' "$out" | sed "s/^/    | /"
expect_first_line "SQUIBTEST BEGIN counter"
expect_line "TEST info tick_shift=20"
expect_no_re '^SQUIBTEST END'
[ -n "$t0" ] && [ "$t0" -ge 3 ] || errs="$errs; fewer than 3 ticks before pause (t0=$t0)"
[ "${t1:-x}" = "${t2:-y}" ] || errs="$errs; ticks advanced while paused ($t1 -> $t2)"
[ -n "$t3" ] && [ -n "$t2" ] && [ "$t3" -gt "$t2" ] || errs="$errs; ticks did not resume ($t2 -> $t3)"
# Ticks are consecutive: n, n+1, ...
sed -n 's/^TICK //p' "$out" | awk 'NR > 1 && $1 != prev + 1 { bad = 1 } { prev = $1 } END { exit bad }' ||
	errs="$errs; TICK numbers not consecutive"
verdict "counter ticks; stop/cont freezes and resumes them (q35, tcg) [ticks $t0, paused $t1..$t2, resumed $t3]"

# ---- counter with the default shift (24) still ticks ----
run_qemu counter-default 20 '^TICK 2$' -- $tcg -machine q35 -append "squibtest=counter"
expect_how matched
expect_line "TEST info tick_shift=24"
expect_line "TICK 1"
verdict "counter default tick_shift=24 (q35, tcg)"

# ---- fault: triple fault, QEMU resets (-no-reboot: exits), no END ----
run_qemu fault 30 '' -- $tcg -machine q35 -append "squibtest=fault" -d cpu_reset -D "$work/fault.cpu.log"
expect_how exited
expect_first_line "SQUIBTEST BEGIN fault"
expect_line "TEST info fault=triple-fault-next"
expect_no_re '^SQUIBTEST END'
grep -aq "Triple fault" "$work/fault.cpu.log" || errs="$errs; QEMU did not log a triple fault"
verdict "fault triple-faults (q35, tcg)"

# ---- exception: the guest's IDT reports #UD, then a clean reset ----
run_qemu exception 30 '' -- $tcg -machine q35 -append "squibtest=exception"
expect_how exited
expect_first_line "SQUIBTEST BEGIN exception"
expect_re '^TEST fail exception vector=6 error=0x0 rip=0x[0-9a-f]+ '
expect_line "SQUIBTEST END exception"
verdict "exception is reported by the guest IDT (q35, tcg)"

# ---- unknown scenario ----
run_qemu unknown 30 '' -- $tcg -machine q35 -append "squibtest=no-such-thing"
expect_how exited
expect_line "SQUIBTEST BEGIN no-such-thing"
expect_re '^TEST fail unknown-scenario no-such-thing '
expect_line "SQUIBTEST END no-such-thing"
verdict "unknown scenario fails cleanly (q35, tcg)"

# ---- virtio-blk and virtio-rng on microvm (acpi=off: QEMU appends virtio_mmio.device= itself) ----
# Modern (version 2) virtio-mmio transports; QEMU's default is legacy.
uvm="-machine microvm,acpi=off -global virtio-mmio.force-legacy=false"
# fnv1a64 FILE SECTORS [START]: 64-bit FNV-1a of SECTORS 512-byte sectors from sector START, as 16 hex digits
fnv1a64() {
	python3 - "$@" <<'PY'
import sys
f, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0
with open(f, "rb") as fh:
    fh.seek(start * 512)
    data = fh.read(n * 512)
h = 0xcbf29ce484222325
for b in data:
    h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print("%016x" % h)
PY
}
# check_pattern FILE START N ORIG: sectors [START, START+N) hold blk-write's pattern, the rest equals ORIG
check_pattern() {
	python3 - "$@" <<'PY'
import sys
f, start, n, orig = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d, o = open(f, "rb").read(), open(orig, "rb").read()
want = bytes((s * 31 + i) & 0xFF for s in range(start, start + n) for i in range(512))
lo, hi = start * 512, (start + n) * 512
if d[lo:hi] != want:
    sys.exit("pattern mismatch in sectors [%d, %d)" % (start, start + n))
if len(d) != len(o) or d[:lo] != o[:lo] or d[hi:] != o[hi:]:
    sys.exit("bytes outside the written range changed")
PY
}
# blkdev ID FILE [OPTS]: -drive/-device arguments for one virtio-blk device
blkdev() { echo "-drive if=none,id=$1,file=$2,format=raw${3:-} -device virtio-blk-device,drive=$1"; }

if command -v python3 >/dev/null 2>&1; then
	disk="$work/disk.img"   # 16 MiB = 32768 sectors of random bytes
	head -c $((16 << 20)) /dev/urandom >"$disk"
	disk2="$work/disk2.img" # 1 MiB = 2048 sectors
	head -c $((1 << 20)) /dev/urandom >"$disk2"

	run_qemu blk-read 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk") -append "squibtest=blk-read"
	expect_how matched
	expect_re '^TEST info virtio-blk index=0 base=0x[0-9a-f]+ irq=[0-9]+ features=0x1[0-9a-f]{8} .* queue_size=16 capacity=32768 '
	expect_line "TEST info blk-read requests=1 used_irq_missing=0 status=0xf"
	expect_line "TEST ok blk-read sectors=64 capacity=32768 sum=$(fnv1a64 "$disk" 64)"
	expect_line "SQUIBTEST END blk-read"
	verdict "blk-read 64 sectors, FNV-1a matches the file (microvm, tcg)"

	run_qemu blk-read-segs 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk") \
		-append "squibtest=blk-read squibtest.sectors=1000 squibtest.seg_bytes=4096"
	expect_how matched
	expect_re '^TEST info virtio-blk .* max_request=57344 segs=14$'
	expect_line "TEST ok blk-read sectors=1000 capacity=32768 sum=$(fnv1a64 "$disk" 1000)"
	verdict "blk-read 1000 sectors in 16-descriptor chains (SEG_MAX, seg_bytes=4096) (microvm, tcg)"

	run_qemu blk-read-second 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk") $(blkdev d1 "$disk2") \
		-append "squibtest=blk-read squibtest.blk=1 squibtest.sectors=5000"
	expect_how matched
	expect_line "TEST info blk-read sectors=5000 clamped-to capacity=2048"
	expect_line "TEST ok blk-read sectors=2048 capacity=2048 sum=$(fnv1a64 "$disk2" 2048)"
	verdict "blk-read squibtest.blk=1 picks the second disk; sectors clamped to capacity (microvm, tcg)"

	cp "$disk" "$work/w.img"
	run_qemu blk-write 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$work/w.img") -append "squibtest=blk-write"
	expect_how matched
	expect_line "TEST info blk-write flushed=1"
	expect_line "TEST info blk-write requests=3 used_irq_missing=0 status=0xf"
	expect_line "TEST ok blk-write sectors=8 start=8"
	msg=$(check_pattern "$work/w.img" 8 8 "$disk" 2>&1) || errs="$errs; file: $msg"
	verdict "blk-write 8 sectors at 8, flush, read back; the file holds the pattern (microvm, tcg)"

	cp "$disk" "$work/w2.img"
	run_qemu blk-write-big 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$work/w2.img") \
		-append "squibtest=blk-write squibtest.start=1000 squibtest.sectors=333 squibtest.seg_bytes=1024"
	expect_how matched
	expect_line "TEST ok blk-write sectors=333 start=1000"
	msg=$(check_pattern "$work/w2.img" 1000 333 "$disk" 2>&1) || errs="$errs; file: $msg"
	verdict "blk-write 333 sectors at 1000 in multi-request, multi-descriptor chains (microvm, tcg)"

	run_qemu blk-write-range 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk2") \
		-append "squibtest=blk-write squibtest.start=2040 squibtest.sectors=9"
	expect_how matched
	expect_line "TEST fail blk-write range start=2040 sectors=9 capacity=2048"
	verdict "blk-write beyond the capacity is refused by the guest (microvm, tcg)"

	cp "$disk" "$work/ro.img"
	run_qemu blk-ro 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$work/ro.img" ,readonly=on) \
		-append "squibtest=blk-ro"
	expect_how matched
	expect_line "TEST info blk-ro requests=2 used_irq_missing=0 status=0xf"
	expect_line "TEST ok blk-ro status=1 ro_offered=1"
	cmp -s "$disk" "$work/ro.img" || errs="$errs; the read-only file changed"
	verdict "blk-ro: write to a readonly=on drive -> IOERR, RO offered (microvm, tcg)"

	run_qemu blk-ro-rw 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$work/ro.img") -append "squibtest=blk-ro"
	expect_how matched
	expect_line "TEST fail blk-ro status=0 ro_offered=0"
	cmp -s "$disk" "$work/ro.img" || errs="$errs; blk-ro changed the file (it writes sector 0 back unchanged)"
	verdict "blk-ro on a writable drive fails (status=0) and leaves the file unchanged (microvm, tcg)"

	run_qemu blk-flush 30 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk") -append "squibtest=blk-flush"
	expect_how matched
	expect_line "TEST info blk-flush requests=1 used_irq_missing=0 status=0xf"
	expect_line "TEST ok blk-flush status=0 flush_offered=1"
	verdict "blk-flush (microvm, tcg)"

	run_qemu blk-throughput 120 '^SQUIBTEST END' -- $tcg $uvm $(blkdev d0 "$disk") \
		-append "squibtest=blk-throughput"
	expect_how matched
	expect_line "TEST info tsc_khz=0 source=none"
	expect_re '^TEST info blk-throughput phase=seq bytes=8388608 requests=128 tsc_cycles=[1-9][0-9]*$'
	expect_re '^TEST info blk-throughput phase=rand ops=2048 bytes=8388608 tsc_cycles=[1-9][0-9]*$'
	expect_line "TEST info blk-throughput requests=2176 used_irq_missing=0 status=0xf"
	expect_re '^TEST ok blk-throughput bytes=8388608 tsc_cycles=[1-9][0-9]* tsc_khz=0 mib_s=0 iops=0 ops=2048 ops_tsc_cycles=[1-9][0-9]*$'
	[ "$(grep -a '^BLK-T' "$out" | tr '\n' ' ')" = "BLK-T0 seq BLK-T1 seq BLK-T0 rand BLK-T1 rand " ] ||
		errs="$errs; BLK-T0/BLK-T1 markers missing or out of order"
	verdict "blk-throughput 8 MiB + 2048 random 4 KiB reads, markers, raw TSC counts (microvm, tcg)"

	run_qemu rng 30 '^SQUIBTEST END' -- $tcg $uvm -device virtio-rng-device $(blkdev d0 "$disk2") \
		-append "squibtest=rng"
	expect_how matched
	expect_re '^TEST info rng requests=[1-9][0-9]* used_irq_missing=0 status=0xf$'
	expect_re '^TEST ok rng bytes=4096 distinct=(2[0-4][0-9]|25[0-6]) nonzero=1$'
	expect_line "SQUIBTEST END rng"
	verdict "rng 4 KiB, >= 200 distinct byte values (microvm, tcg)"

	run_qemu blk-none 30 '^SQUIBTEST END' -- $tcg $uvm -device virtio-rng-device -append "squibtest=blk-read"
	expect_how matched
	expect_line "TEST fail blk-read no-virtio-blk index=0"
	verdict "blk-read without a virtio-blk device fails cleanly (microvm, tcg)"

	run_qemu blk-legacy 30 '^SQUIBTEST END' -- $tcg -machine microvm,acpi=off $(blkdev d0 "$disk2") \
		-append "squibtest=blk-read"
	expect_how matched
	expect_re '^TEST fail blk-read init legacy-transport base=0x[0-9a-f]+ '
	verdict "blk-read refuses a legacy (version 1) virtio-mmio transport (microvm, tcg)"

	# blk-patch: HMP block_resize changes the capacity and sends a config-change notification.
	cp "$disk2" "$work/p.img"
	out="$work/blk-patch.out"
	: >"$out"
	"$QEMU" -nodefaults -display none -no-reboot -serial "file:$out" -kernel "$pvh" $tcg $uvm \
		$(blkdev d0 "$work/p.img") -append "squibtest=blk-patch squibtest.timeout_ms=20000" \
		-monitor "pipe:$work/mon" >"$work/blk-patch.qemu.log" 2>&1 &
	qpid=$!
	exec 3<>"$work/mon.out" 4>"$work/mon.in"
	for _ in $(seq 200); do grep -aq '^TEST info blk-patch capacity=' "$out" && break; sleep 0.1; done
	echo "block_resize d0 2M" >&4
	for _ in $(seq 200); do grep -aq '^SQUIBTEST END' "$out" && break; sleep 0.1; done
	echo quit >&4
	for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	qpid=
	exec 3<&- 4>&-
	[ "$VERBOSE" = 1 ] && sed "s/^/    | /" "$out"
	expect_line "TEST info blk-patch capacity=2048"
	expect_line "TEST info blk-patch config_irq=1 generation=0->1"
	expect_line "TEST info blk-patch read sector=4095 sum=$(fnv1a64 "$work/p.img" 1 4095)"
	expect_line "TEST ok blk-patch old=2048 new=4096"
	expect_line "SQUIBTEST END blk-patch"
	verdict "blk-patch sees HMP block_resize: capacity 2048 -> 4096, config interrupt (microvm, tcg)"
else
	echo "SKIP virtio-blk cases (python3 not found: it computes the host-side FNV-1a hashes)"
	skip=$((skip + 1))
fi

# ---- KVM (on kvm_pvm hosts guest code runs through KVM's emulator: slow but works) ----
if [ "$kvm_ok" = 1 ]; then
	# (No -cpu host: on kvm_pvm QEMU then fails to set MSR 0x10a and aborts.)
	kvm="-accel kvm -m 256"
	run_qemu kvm-hello 120 '' -- $kvm -machine q35 -append "squibtest=hello"
	expect_clean hello
	expect_line "TEST ok hello"
	verdict "hello (q35, kvm)"

	run_qemu kvm-smp 120 '' -- $kvm -machine q35 -smp 4,sockets=4,cores=1,threads=1 -append "squibtest=smp"
	expect_clean smp
	expect_line "TEST ok smp cpus=4"
	verdict "smp -smp 4 (q35, kvm)"

	run_qemu kvm-fault 120 '' -- $kvm -machine q35 -append "squibtest=fault"
	expect_how exited
	expect_line "TEST info fault=triple-fault-next"
	expect_no_re '^SQUIBTEST END'
	verdict "fault (q35, kvm)"

	run_qemu kvm-counter 120 '^TICK 2$' -- $kvm -machine q35 -append "squibtest=counter squibtest.tick_shift=14"
	expect_how matched
	verdict "counter ticks (q35, kvm, tick_shift=14)"

	if command -v python3 >/dev/null 2>&1; then
		# microvm (qboot) boots in well under a second even where KVM emulates the guest.
		cp "$disk" "$work/kw.img"
		run_qemu kvm-blk-write 120 '^SQUIBTEST END' -- $kvm $uvm $(blkdev d0 "$work/kw.img") \
			-append "squibtest=blk-write squibtest.start=64 squibtest.sectors=200"
		expect_how matched
		expect_line "TEST ok blk-write sectors=200 start=64"
		msg=$(check_pattern "$work/kw.img" 64 200 "$disk" 2>&1) || errs="$errs; file: $msg"
		verdict "blk-write 200 sectors, file checked (microvm, kvm)"

		run_qemu kvm-blk-read 120 '^SQUIBTEST END' -- $kvm $uvm $(blkdev d0 "$work/kw.img") \
			-append "squibtest=blk-read squibtest.sectors=300"
		expect_how matched
		expect_line "TEST ok blk-read sectors=300 capacity=32768 sum=$(fnv1a64 "$work/kw.img" 300)"
		verdict "blk-read 300 sectors (microvm, kvm)"

		run_qemu kvm-rng 120 '^SQUIBTEST END' -- $kvm $uvm -device virtio-rng-device -append "squibtest=rng"
		expect_how matched
		expect_re '^TEST ok rng bytes=4096 distinct=(2[0-4][0-9]|25[0-6]) nonzero=1$'
		verdict "rng (microvm, kvm)"

		# +invtsc,vmware-cpuid-freq=on: KVM's TSC frequency in CPUID 0x40000010, so the guest gives rates.
		run_qemu kvm-blk-throughput 120 '^SQUIBTEST END' -- $kvm -cpu qemu64,+invtsc,vmware-cpuid-freq=on \
			$uvm $(blkdev d0 "$disk") -append "squibtest=blk-throughput squibtest.mib=4 squibtest.iops_ops=256"
		expect_how matched
		expect_re '^TEST info tsc_khz=[1-9][0-9]* source=cpuid-0x40000010$'
		expect_re '^TEST ok blk-throughput bytes=4194304 tsc_cycles=[1-9][0-9]* tsc_khz=[1-9][0-9]* mib_s=[0-9]+\.[0-9][0-9] iops=[1-9][0-9]* ops=256 ops_tsc_cycles=[1-9][0-9]*$'
		verdict "blk-throughput with a known TSC frequency gives MiB/s and IOPS (microvm, kvm)"
	fi
else
	echo "SKIP kvm cases (/dev/kvm not usable or SQUIB_TEST_KVM=0)"
	skip=$((skip + 1))
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
