#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Build squib-test-guest: a freestanding x86_64 ELF for squib and Firecracker.
#
#   guest/build.sh [OUTDIR]        (default OUTDIR: <repo>/target/guest)
#
# Produces, and prints the paths of:
#   OUTDIR/squib-test-guest.elf       Linux 64-bit boot protocol (no PVH note)
#   OUTDIR/squib-test-guest-pvh.elf   same code plus a Xen PVH note (QEMU -kernel)
#
# Needs only gcc and binutils (Debian: apt-get install gcc binutils). No network.
# On a non-x86_64 host set CROSS_COMPILE=x86_64-linux-gnu- (gcc-x86-64-linux-gnu).
# The build is deterministic: same sources + same toolchain -> same bytes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
src="$here/src"
out=${1:-"$repo/target/guest"}

# ---- toolchain ----
if [ -z "${CROSS_COMPILE+x}" ]; then
	case "$(uname -m)" in
	x86_64 | amd64) CROSS_COMPILE= ;;
	*) CROSS_COMPILE=x86_64-linux-gnu- ;;
	esac
fi
CC=${CC:-${CROSS_COMPILE}gcc}
LD=${LD:-${CROSS_COMPILE}ld}
missing=
for tool in "$CC" "$LD"; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
	echo "build.sh: missing tools:$missing" >&2
	if [ -n "$CROSS_COMPILE" ]; then
		echo "build.sh: install them with: apt-get install gcc-x86-64-linux-gnu binutils-x86-64-linux-gnu" >&2
	else
		echo "build.sh: install them with: apt-get install gcc binutils" >&2
	fi
	exit 1
fi
case "$("$CC" -dumpmachine)" in
x86_64-*) ;;
*)
	echo "build.sh: $CC does not target x86_64 ($("$CC" -dumpmachine)); set CROSS_COMPILE=x86_64-linux-gnu-" >&2
	exit 1
	;;
esac

# Sources, in link order (explicit, so the output does not depend on readdir order).
C_SRCS="main.c util.c serial.c platform.c paging.c trap.c bootinfo.c cmdline.c tables.c smp.c virtio_mmio.c
	virtio_drv.c virtio_blk.c
	scenarios/hello.c scenarios/smp.c scenarios/counter.c scenarios/fault.c scenarios/exception.c scenarios/cad.c
	scenarios/blk_read.c scenarios/blk_write.c scenarios/blk_ro.c scenarios/blk_flush.c
	scenarios/blk_throughput.c scenarios/blk_patch.c scenarios/rng.c
	scenarios/dirty.c
	scenarios/acpi.c
	scenarios/cpuid.c
	scenarios/balloon.c scenarios/pmem.c scenarios/mem.c
	virtio_vsock.c virtio_vsock_bulk.c scenarios/vsock_listen.c scenarios/vsock_connect.c scenarios/vsock_throughput.c
	virtio_net.c scenarios/net_tx.c scenarios/net_echo.c scenarios/net_throughput.c scenarios/mmds.c"

CFLAGS="-std=gnu11 -O2 -g0 -Wall -Wextra -Werror
	-ffreestanding -fno-pic -fno-pie -mcmodel=small -mno-red-zone -mgeneral-regs-only
	-march=x86-64 -mtune=generic
	-fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
	-fno-tree-loop-distribute-patterns -fno-common -fno-ident
	-ffile-prefix-map=$here/=guest/"
ASFLAGS="-ffreestanding -fno-pic -fno-pie -g0 -ffile-prefix-map=$here/=guest/"
LDFLAGS="-nostdlib -static --no-dynamic-linker --build-id=none -z max-page-size=0x1000
	-z noexecstack -z norelro --no-warn-rwx-segments"

obj="$out/obj"
rm -rf "$obj"
mkdir -p "$obj/scenarios"

objs=
for f in $C_SRCS; do
	o="$obj/${f%.c}.o"
	# shellcheck disable=SC2086
	"$CC" $CFLAGS -I"$src" -c "$src/$f" -o "$o"
	objs="$objs $o"
done
# shellcheck disable=SC2086
"$CC" $ASFLAGS -I"$src" -c "$src/boot.S" -o "$obj/boot.o"
# shellcheck disable=SC2086
"$CC" $ASFLAGS -I"$src" -c "$src/pvh_note.S" -o "$obj/pvh_note.o"

# Linker scripts: cpp on guest.ld.S, once without and once with the PVH note.
# shellcheck disable=SC2086
"$CC" -E -P -x c -I"$src" "$src/guest.ld.S" -o "$obj/guest.ld"
# shellcheck disable=SC2086
"$CC" -E -P -x c -I"$src" -DPVH_NOTE "$src/guest.ld.S" -o "$obj/guest-pvh.ld"

elf="$out/squib-test-guest.elf"
pvh="$out/squib-test-guest-pvh.elf"
# shellcheck disable=SC2086
"$LD" $LDFLAGS -T "$obj/guest.ld" -o "$elf.tmp" "$obj/boot.o" $objs
# shellcheck disable=SC2086
"$LD" $LDFLAGS -T "$obj/guest-pvh.ld" -o "$pvh.tmp" "$obj/boot.o" $objs "$obj/pvh_note.o"
mv "$elf.tmp" "$elf"
mv "$pvh.tmp" "$pvh"

echo "$elf"
echo "$pvh"
