#!/usr/bin/env bash
# squib demo: build squib and its test guest, then boot a 2-vCPU microVM through the
# Firecracker API with curl, exactly as a Firecracker user would, and show it working.
#
#   scripts/demo.sh            # the bundled test guest (fast): a 2-vCPU boot, then a second
#                              # microVM with virtio-net on a tap (in a private network
#                              # namespace) whose guest reads MMDS V2 (token PUT, then GET)
#   scripts/demo.sh --linux    # the Linux guest from ../shared/guest (or $SQUIB_GUEST_DIR); slow on nested PVM hosts
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need cc || missing+=(build-essential)
need curl || missing+=(curl)
need ip || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! need cargo; then
  echo "cargo not found: squib needs a Rust toolchain >= 1.88 (rustup)." >&2
  exit 1
fi
[ -e /dev/kvm ] || { echo "squib needs /dev/kvm (KVM) to boot a microVM." >&2; exit 1; }

echo "== building squib (release) and the test guest"
cargo build -q --release -p squib-cli
guest=$(sh guest/build.sh target/guest | grep -v pvh | head -n 1)
squib=target/release/squib

sock=/tmp/squib-demo-$$.sock
serial=/tmp/squib-demo-$$.serial
log=/tmp/squib-demo-$$.log
rm -f "$sock" "$serial"
"$squib" --api-sock "$sock" --boot-timer --id squib-demo >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$sock"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

api() { # METHOD PATH [BODY]
  local out body
  out=$(curl -sS -i --unix-socket "$sock" -X "$1" "http://localhost$2" \
    -H 'Content-Type: application/json' ${3:+--data-binary "$3"}) || true
  printf '%s %s -> %s\n' "$1" "$2" "$(printf '%s' "$out" | head -n 1 | tr -d '\r')"
  body=$(printf '%s' "$out" | sed -n '/^\r$/,$p' | tail -n +2)
  if [ -n "$body" ]; then printf '    %s\n' "$body"; fi
}

if [ "${1:-}" = "--linux" ]; then
  dir=${SQUIB_GUEST_DIR:-../shared/guest}
  [ -f "$dir/vmlinux" ] || { echo "no Linux guest at $dir (set SQUIB_GUEST_DIR)" >&2; exit 1; }
  pvm=""; [ -d /sys/module/kvm_pvm ] && pvm=" noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid percpu_alloc=page"
  kernel=$(realpath "$dir/vmlinux"); initrd=$(realpath "$dir/initramfs.cpio")
  boot="{\"kernel_image_path\":\"$kernel\",\"initrd_path\":\"$initrd\",\"boot_args\":\"console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd$pvm\"}"
  wait_s=240
else
  kernel=$(realpath "$guest")
  boot="{\"kernel_image_path\":\"$kernel\",\"boot_args\":\"console=ttyS0 reboot=k panic=1 squibtest=smp\"}"
  wait_s=30
fi

echo "== driving the Firecracker API on $sock"
api GET /
api GET /version
api PUT /serial "{\"serial_out_path\":\"$serial\"}"
api PUT /machine-config '{"vcpu_count":2,"mem_size_mib":256}'
api PUT /boot-source "$boot"
api PUT /actions '{"action_type":"InstanceStart"}'
api GET /
api GET /vm/config

echo "== waiting for the guest (up to ${wait_s}s)"
for _ in $(seq $((wait_s * 10))); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
wait $pid 2>/dev/null && code=0 || code=$?
echo "== guest serial console ($serial)"
sed 's/^/    /' "$serial" 2>/dev/null || true
echo "== squib log"
grep -E "Guest-boot-time|exiting|API server|PVH" "$log" | sed 's/^/    /' || true
echo "== squib exit code: $code"
[ "$code" = 0 ] || exit "$code"
[ "${1:-}" = "--linux" ] && exit 0

# Second microVM: networking. A private network namespace holds the tap squib opens, so
# nothing reaches the host's network; the guest's ARP + TCP to 169.254.169.254 are answered
# by squib's MMDS (V2: token PUT, then GET with the token).
ns=squib-demo-$$
if ! ip netns add "$ns" 2>/dev/null; then
  echo "SKIPPED: network demo (cannot create a network namespace: needs root and iproute2)"
  exit 0
fi
trap 'kill $pid 2>/dev/null || true; rm -f "$sock"; ip netns del "$ns" 2>/dev/null || true' EXIT
rm -f "$sock" "$serial"
ip netns exec "$ns" "$squib" --api-sock "$sock" --id squib-demo-net >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
echo "== second microVM: virtio-net on tap0 (namespace $ns) + MMDS V2"
api PUT /serial "{\"serial_out_path\":\"$serial\"}"
api PUT /machine-config '{"vcpu_count":1,"mem_size_mib":128}'
api PUT /boot-source "{\"kernel_image_path\":\"$kernel\",\"boot_args\":\"console=ttyS0 reboot=k panic=1 squibtest=mmds squibtest.mmds_version=2 squibtest.mmds_path=/latest/meta-data/ami-id\"}"
api PUT /network-interfaces/eth0 '{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:01:23:45:67:01"}'
api PUT /mmds/config '{"version":"V2","network_interfaces":["eth0"]}'
api PUT /mmds '{"latest":{"meta-data":{"ami-id":"ami-12345678","instance-type":"squib.demo"}}}'
api PUT /actions '{"action_type":"InstanceStart"}'
api GET /vm/config
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
wait $pid 2>/dev/null && code=0 || code=$?
echo "== guest serial console ($serial)"
sed 's/^/    /' "$serial" 2>/dev/null || true
echo "== squib exit code: $code"
exit "$code"
