#!/bin/sh
# Fetches Debian bookworm's stock cloud kernel and busybox-static with apt-get download and builds
#   OUT/vmlinuz            the stock bzImage (linux-image-*-cloud-amd64)
#   OUT/vmlinux            the same kernel uncompressed (ELF with a PVH note; LZ4 payload of the
#                          bzImage, extracted with lz4): skips the decompressor, which takes
#                          minutes on nested-PVM hosts
#   OUT/initramfs.cpio     busybox + /init (loads virtio, virtio_ring, virtio_mmio, virtio_blk from
#                          the kernel package, prints STOCK-USERSPACE-OK, lists virtio devices, reboots)
# Usage: scripts/stock-kernel.sh OUT   (idempotent: reuses OUT/debs). Needs apt-get, dpkg-deb, cpio.
set -eu
OUT=${1:?usage: stock-kernel.sh OUT}
mkdir -p "$OUT/debs"
OUT=$(cd "$OUT" && pwd)
cd "$OUT/debs"
if ! ls linux-image-*-cloud-amd64_*.deb 2>/dev/null | grep -qv 'linux-image-cloud-amd64_'; then
    apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 || true
    dep=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | sed 's/[ ,(].*//')
    apt-get download "$dep" >/dev/null 2>&1 || true
fi
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static >/dev/null 2>&1 || true
kdeb=$(ls linux-image-*-cloud-amd64_*.deb | grep -v '^linux-image-cloud-amd64_' | head -n1)
bdeb=$(ls busybox-static_*.deb | head -n1)
rm -rf "$OUT/x" "$OUT/root" && mkdir -p "$OUT/x/k" "$OUT/x/b" "$OUT/root"
dpkg-deb -x "$kdeb" "$OUT/x/k"
dpkg-deb -x "$bdeb" "$OUT/x/b"
cp "$OUT"/x/k/boot/vmlinuz-* "$OUT/vmlinuz"
command -v lz4 >/dev/null || apt-get install -y lz4 >/dev/null
# The bzImage payload is an LZ4 legacy frame (magic 02 21 4c 18) after the setup + decompressor.
off=$(grep -abo "$(printf '\002!L\030')" "$OUT/vmlinuz" | head -n1 | cut -d: -f1)
tail -c +$((off + 1)) "$OUT/vmlinuz" | lz4 -dc > "$OUT/vmlinux" 2>/dev/null || true
head -c 4 "$OUT/vmlinux" | grep -q ELF || { echo "vmlinux extraction failed" >&2; exit 1; }
R="$OUT/root"
mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/lib/modules"
cp "$OUT/x/b/bin/busybox" "$R/bin/busybox"
for m in virtio virtio_ring virtio_mmio virtio_blk; do
    f=$(find "$OUT/x/k/lib/modules" -name "$m.ko*" | head -n1)
    cp "$f" "$R/lib/modules/"
done
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "STOCK-USERSPACE-OK $(uname -r)"
for m in virtio virtio_ring virtio_mmio virtio_blk; do
    for f in /lib/modules/$m.ko*; do insmod "$f" && echo "STOCK-MODULE $m" || echo "STOCK-MODULE-FAIL $m"; done
done
sleep 1
for d in /sys/bus/virtio/devices/*; do [ -e "$d" ] && echo "STOCK-VIRTIO $(basename $d) device=$(cat $d/device)"; done
for b in /sys/block/vd*; do [ -e "$b" ] && echo "STOCK-DISK $(basename $b) sectors=$(cat $b/size)"; done
echo "STOCK-CMDLINE $(cat /proc/cmdline)"
echo "STOCK-FLAGS $(grep -m1 '^flags' /proc/cpuinfo | sed 's/^flags[^:]*: //')"
echo "STOCK-DONE"
reboot -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet > "$OUT/initramfs.cpio")
rm -rf "$OUT/x"
echo "$OUT/vmlinuz $OUT/vmlinux $OUT/initramfs.cpio"
