#!/usr/bin/env python3
"""virtio-vsock as the *Linux* guest sees it, under squib and under the reference Firecracker in
the same run, side by side (the test-guest bench is `cargo bench -p squib-cli --bench vsock`).

Each VMM boots ../shared/guest/vmlinux (1 vCPU, 256 MiB, `squib.mode=shell`) with the guest's
initramfs followed by guest/linux-tools' archive (the static `vsock-echo` helper), through
`--no-api --config-file`; the console is driven on stdin. Measured from the host:
  - host->guest setup: connect(uds_path) + `CONNECT 5000` until `OK`, N sequential connections
    (each then echoes a line);
  - a 256 KiB echo round trip through the guest (`vsock-echo listen`);
  - host->guest one-way 2 MiB into `vsock-echo sink` (until its `GOT` answer);
  - guest->host one-way 2 MiB from `vsock-echo source` (host: first byte .. last byte);
  - guest->host setup as the guest's clock sees it (`vsock-echo connect`, connect(2)).
No half-close anywhere: Firecracker's hybrid vsock turns a host half-close into a full close.

Usage: scripts/linux-vsock-compare.py [SQUIB [FIRECRACKER]]
  SQUIB defaults to target/release/squib, else target/debug/squib; FIRECRACKER to
  $SQUIB_REFERENCE_FIRECRACKER, else ../shared/peers/firecracker (run with --no-seccomp), else
  squib's figures only (one loud SKIPPED line). Needs /dev/kvm, gcc and cpio (else SKIPPED).
Slow: one Linux boot per VMM (1-6 min each on nested-PVM hosts).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GUEST = os.environ.get("SQUIB_GUEST_DIR", os.path.join(REPO, "../shared/guest"))
N = 10
ECHO = 256 * 1024
STREAM = 2 * 1024 * 1024
PVM = (" noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid"
       " percpu_alloc=page") if os.path.exists("/sys/module/kvm_pvm") else ""


class Vm:
    def __init__(self, binary, extra, initrd, work):
        self.uds = os.path.join(work, "v.sock")
        self.log = os.path.join(work, "out.log")
        cfg = {
            "boot-source": {
                "kernel_image_path": os.path.join(GUEST, "vmlinux"),
                "initrd_path": initrd,
                "boot_args": "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux "
                             "i8042.dumbkbd squib.mode=shell" + PVM,
            },
            "drives": [],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 256},
            "vsock": {"guest_cid": 3, "uds_path": self.uds},
        }
        path = os.path.join(work, "vm.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.out = open(self.log, "wb")
        self.t0 = time.time()
        self.p = subprocess.Popen([binary, "--no-api", "--config-file", path] + extra,
                                  stdin=subprocess.PIPE, stdout=self.out,
                                  stderr=subprocess.STDOUT)

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def wait(self, needle, after=0, limit=900):
        end = time.time() + limit
        while time.time() < end:
            t = self.text()[after:]
            if needle in t:
                return t[t.index(needle):].split("\n", 1)[0]
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {needle!r}; log {self.log}")

    def type(self, cmd):
        self.p.stdin.write((cmd + "\n").encode())
        self.p.stdin.flush()

    def run(self, cmd, needle, limit=900):
        mark = len(self.text())
        self.type(cmd)
        return self.wait(needle, mark, limit)

    def shell(self):
        self.wait("SQUIB-SHELL")
        for _ in range(30):
            try:
                self.run("echo SH-$((6*7))", "SH-42", 10)
                return time.time() - self.t0
            except RuntimeError:
                pass
        raise RuntimeError("no shell")

    def connect(self, port):
        t = time.time()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(300)
        s.connect(self.uds)
        s.sendall(f"CONNECT {port}\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c:
                raise RuntimeError(f"CONNECT {port} refused")
            line += c
        assert line.startswith(b"OK "), line
        return s, time.time() - t

    def stop(self):
        try:
            self.type("reboot -f")
            self.p.wait(120)
        except Exception:
            self.p.kill()
            self.p.wait()
        self.out.close()


def recv_exact(s, n):
    got = bytearray()
    while len(got) < n:
        c = s.recv(min(65536, n - len(got)))
        if not c:
            break
        got.extend(c)
    return bytes(got)


def measure(binary, extra, initrd):
    r = {}
    with tempfile.TemporaryDirectory(prefix="squib-lvc-") as work:
        vm = Vm(binary, extra, initrd, work)
        try:
            r["boot to shell, s"] = vm.shell()
            vm.run(f"vsock-echo listen 5000 {N + 1} &", "VSOCK-ECHO LISTENING 5000")
            lat = []
            for _ in range(N):
                s, t = vm.connect(5000)
                lat.append(t * 1e6)
                s.sendall(b"ping\n")
                assert recv_exact(s, 5) == b"ping\n"
                s.close()
            lat.sort()
            r["host->guest setup, median us"] = lat[N // 2]
            s, _ = vm.connect(5000)
            data = bytes((i * 7 + i // 256) % 256 for i in range(ECHO))
            got = []
            th = threading.Thread(target=lambda: got.append(recv_exact(s, ECHO)))
            t = time.time()
            th.start()
            s.sendall(data)
            th.join()
            dt = time.time() - t
            assert got[0] == data, "echo differs"
            s.close()
            r["echo 256 KiB round trip, MiB/s each way"] = ECHO / 2**20 / dt
            vm.run(f"vsock-echo sink 5001 {STREAM} &", "VSOCK-ECHO LISTENING 5001")
            s, _ = vm.connect(5001)
            t = time.time()
            s.sendall(bytes(STREAM))
            ans = s.recv(64)
            dt = time.time() - t
            assert ans == f"GOT {STREAM}\n".encode(), ans
            s.close()
            r["host->guest one-way 2 MiB, MiB/s"] = STREAM / 2**20 / dt
            ls = socket.socket(socket.AF_UNIX)
            ls.bind(f"{vm.uds}_6001")
            ls.listen(1)
            ls.settimeout(300)
            mark = len(vm.text())
            vm.type(f"vsock-echo source 2 6001 {STREAM}")
            c, _ = ls.accept()
            c.settimeout(300)
            first = c.recv(65536)
            t = time.time()
            rest = recv_exact(c, STREAM - len(first))
            dt = time.time() - t
            assert len(first) + len(rest) == STREAM
            c.sendall(f"GOT {STREAM}\n".encode())
            r["guest->host one-way 2 MiB, MiB/s"] = (STREAM - len(first)) / 2**20 / dt
            vm.wait("VSOCK-ECHO SOURCE", mark)
            ls2 = socket.socket(socket.AF_UNIX)
            ls2.bind(f"{vm.uds}_6000")
            ls2.listen(16)
            stop = threading.Event()

            def serve():
                ls2.settimeout(1)
                while not stop.is_set():
                    try:
                        c2, _ = ls2.accept()
                    except OSError:
                        continue
                    c2.settimeout(60)
                    line = b""
                    while not line.endswith(b"\n"):
                        b = c2.recv(1)
                        if not b:
                            break
                        line += b
                    c2.sendall(b"echo: " + line)
                    c2.close()
            th = threading.Thread(target=serve)
            th.start()
            line = vm.run(f"vsock-echo connect 2 6000 {N}", "VSOCK-ECHO CONNECT-US")
            stop.set()
            th.join()
            avg = [w for w in line.split() if w.startswith("avg=")][0][4:]
            r["guest->host setup (guest clock), avg us"] = float(avg)
        finally:
            vm.stop()
    return r


def main():
    if not os.path.exists("/dev/kvm"):
        print("SKIPPED: no /dev/kvm")
        return
    out = os.path.join(REPO, "target/linux-tools")
    b = subprocess.run(["sh", os.path.join(REPO, "guest/linux-tools/build.sh"), out,
                        os.path.join(GUEST, "initramfs.cpio")], capture_output=True, text=True)
    if b.returncode == 77:
        print(b.stdout.strip())
        return
    if b.returncode != 0:
        sys.exit(b.stdout + b.stderr)
    initrd = os.path.join(out, "initramfs-tools.cpio")
    squib = sys.argv[1] if len(sys.argv) > 1 else next(
        (p for p in (os.path.join(REPO, "target/release/squib"),
                     os.path.join(REPO, "target/debug/squib")) if os.path.exists(p)), None)
    fc = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
        "SQUIB_REFERENCE_FIRECRACKER", os.path.join(REPO, "../shared/peers/firecracker"))
    if not squib:
        sys.exit("no squib binary (cargo build --release -p squib-cli)")
    rows = {"squib": measure(squib, [], initrd)}
    if os.path.exists(fc):
        rows["firecracker"] = measure(fc, ["--no-seccomp"], initrd)
    else:
        print("SKIPPED: no reference firecracker (squib figures only)")
    load = open("/proc/loadavg").read().strip()
    print(f"virtio-vsock, Linux guest (1 vCPU, 256 MiB), squib={squib}; loadavg {load}")
    print(f"{'metric':<44} {'squib':>10} {'firecracker':>12} {'squib/fc':>9}")
    for k in rows["squib"]:
        s = rows["squib"][k]
        f = rows.get("firecracker", {}).get(k)
        fs = f"{f:12.2f}" if f is not None else f"{'-':>12}"
        ratio = f"{s / f:9.2f}" if f else f"{'-':>9}"
        print(f"{k:<44} {s:10.2f} {fs} {ratio}")


if __name__ == "__main__":
    main()
