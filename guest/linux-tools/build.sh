#!/bin/sh
# Builds the Linux-guest test tools and packs them as an extra initramfs.
#
#   guest/linux-tools/build.sh OUTDIR [BASE_CPIO]
#
# OUTDIR/vsock-echo           the static vsock helper (gcc -static)
# OUTDIR/linux-tools.cpio     newc archive holding bin/vsock-echo
# OUTDIR/initramfs-tools.cpio BASE_CPIO (e.g. ../shared/guest/initramfs.cpio) followed by
#                             linux-tools.cpio: Linux unpacks concatenated newc archives in
#                             order, so the guest's /init is untouched and /bin/vsock-echo appears.
#
# Exits 77 after one `SKIPPED: ...` line when gcc, a static libc or cpio is missing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR [BASE_CPIO]}
base=${2:-}
skip() { echo "SKIPPED: $*"; exit 77; }
command -v gcc >/dev/null 2>&1 || skip "gcc not installed (needed for the static vsock helper)"
command -v cpio >/dev/null 2>&1 || skip "cpio not installed (needed to pack the helper)"
mkdir -p "$out"
stage=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
gcc -static -O2 -Wall -Wextra -Werror -o "$stage/bin/vsock-echo" "$here/vsock-echo.c" \
  2>"$stage/gcc.log" || { cat "$stage/gcc.log" >&2; grep -q 'cannot find -lc' "$stage/gcc.log" \
  && skip "no static libc (libc6-dev)"; exit 1; }
strip "$stage/bin/vsock-echo" 2>/dev/null || true
install -m 0755 "$stage/bin/vsock-echo" "$out/vsock-echo"
touch -h -d @0 "$stage/bin" "$stage/bin/vsock-echo"
# Only the file entry: bin/ already exists in the base archive (a repeated directory entry would
# be harmless too).
(cd "$stage" && echo bin/vsock-echo | cpio -o -H newc -R 0:0 --reproducible --quiet) \
  > "$out/linux-tools.cpio.tmp"
mv "$out/linux-tools.cpio.tmp" "$out/linux-tools.cpio"
if [ -n "$base" ]; then
  cat "$base" "$out/linux-tools.cpio" > "$out/initramfs-tools.cpio.tmp"
  mv "$out/initramfs-tools.cpio.tmp" "$out/initramfs-tools.cpio"
fi
echo "$out"
