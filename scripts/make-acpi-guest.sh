#!/usr/bin/env bash
# Builds the ACPI variant of the shared minimal Linux guest (issue 10 §1): the same kernel as
# ../shared/guest (make-guest.sh, Debian's linux-source-6.1 + its small kvm_pvm patch) but with
#   ACPI=y                          the kernel finds CPUs (MADT) and devices (DSDT) through ACPI
#   PCI=y                           Linux 6.1 cannot load ACPI tables without it (ACPICA lists
#                                   PCI_Config as a default address space but only builds its
#                                   handler with CONFIG_PCI: "AE_BAD_PARAMETER, During Region
#                                   initialization"); squib passes `pci=off` as Firecracker does
#   VIRTIO_MMIO_CMDLINE_DEVICES=n   `virtio_mmio.device=` on the command line is ignored, so every
#                                   virtio device the guest binds was found as an `LNRO0005` node
# Used by apps/squib-cli/tests/boot_linux_acpi.rs (scripts/test.sh runs this first).
#
#   scripts/make-acpi-guest.sh [OUTDIR]   default OUTDIR: ~/.cache/squib-guest-acpi/out
#
# The build is cached: a re-run whose recipe (the shared script + this derivation) has not changed
# prints the directory and exits at once. A first build downloads linux-source-6.1 (~140 MB) and
# compiles about 1100 objects (5–10 minutes on 2 cores). Needs root for apt-get (or SKIP_APT=1
# with the packages make-guest.sh lists installed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SQUIB_SHARED_GUEST:-$here/../shared/guest}
base=${XDG_CACHE_HOME:-$HOME/.cache}/squib-guest-acpi
out=${1:-$base/out}
recipe=$shared/make-guest.sh
[ -f "$recipe" ] || { echo "make-acpi-guest: $recipe not found" >&2; exit 2; }

mkdir -p "$base" "$out"
derived=$base/make-guest-acpi.sh
# The derivation: three lines of the recipe's kernel config fragment change. Each must match
# exactly once, or the recipe changed shape and this script must be revisited.
for pat in '^ACPI=n$' '^PCI=n$' '^VIRTIO_MMIO_CMDLINE_DEVICES=y$'; do
  n=$(grep -c "$pat" "$recipe" || true)
  [ "$n" = 1 ] || { echo "make-acpi-guest: '$pat' found $n times in $recipe" >&2; exit 2; }
done
sed -e 's/^ACPI=n$/ACPI=y/' -e 's/^PCI=n$/PCI=y/' -e 's/^VIRTIO_MMIO_CMDLINE_DEVICES=y$/VIRTIO_MMIO_CMDLINE_DEVICES=n/' \
  "$recipe" > "$derived.tmp"
mv "$derived.tmp" "$derived"
stamp=$( (cat "$derived" "$0") | sha256sum | cut -c1-16)
if [ -f "$out/.recipe-$stamp" ] && [ -f "$out/vmlinux" ]; then
  echo "$out"
  exit 0
fi
rm -f "$out"/.recipe-*
WORKDIR=$base/work bash "$derived" "$out" >&2
grep -q '^CONFIG_ACPI=y' "$out/kernel.config" || { echo "make-acpi-guest: ACPI did not take" >&2; exit 1; }
if grep -q '^CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y' "$out/kernel.config"; then
  echo "make-acpi-guest: VIRTIO_MMIO_CMDLINE_DEVICES still set" >&2
  exit 1
fi
touch "$out/.recipe-$stamp"
echo "$out"
