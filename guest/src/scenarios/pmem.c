/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pmem: read (and optionally write and flush) the window of a virtio-pmem device.
 *
 *  1. Find the squibtest.pmem-th (default 0) pmem device, read its window
 *     (start, size) from the configuration space and identity-map it.
 *  2. Checksum the first squibtest.pmem_len bytes (default: the whole window;
 *     rounded down to 8) as 64-bit little-endian words, h = (h ^ w) * FNV prime
 *     from the FNV-1a basis, and time it:
 *       TEST info pmem read bytes=<n> sum=<hex16> us=<t> kib_s=<r> raw_us=<t>
 *                 raw_kib_s=<r> tsc=<source>
 *     (raw: the same bytes read again with `rep lodsq`, no checksum;
 *     squibtest.tsc_khz=<kHz> overrides the TSC frequency for the timings)
 *  3. With squibtest.pmem_wait_off=<off>: print `TEST info pmem waiting off=<off>`
 *     and poll the window until the host writes "sqb-go!!" at that offset of the
 *     file (squibtest.timeout_ms, default 120000), then `TEST info pmem go`.
 *  4. With squibtest.pmem_write=<n> (bytes, default 0), write byte i of the
 *     pattern (i * 131 + 7) & 0xff at squibtest.pmem_write_off (default 0),
 *     count how many bytes read back as written (a read-only device drops the
 *     writes), then send a FLUSH request:
 *       TEST info pmem write bytes=<n> readback=<matching> flush_status=<s>
 *  5. TEST ok pmem bytes=<n> sum=<hex16> root=<root= value or none>
 */
#include "../virtio_drv.h"

#define CFG_START 0
#define CFG_SIZE  8
#define PMEM_GO   UINT64_C(0x21216f672d627173)  /* "sqb-go!!" little endian */

static uint64_t sum_words(const volatile uint64_t *p, uint64_t words)
{
	uint64_t h = FNV1A64_INIT;
	for (uint64_t i = 0; i < words; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* Reads every word with one `rep lodsq` (the fastest read loop where the guest is emulated). */
static void read_raw(const volatile uint64_t *p, uint64_t words)
{
	const volatile uint64_t *src = p;
	uint64_t n = words, last;
	__asm__ volatile("rep lodsq" : "+S"(src), "+c"(n), "=a"(last) : : "memory");
	(void)last;
}

static uint8_t pattern(uint64_t i)
{
	return (uint8_t)((i * 131 + 7) & 0xff);
}

int scenario_pmem(void)
{
	struct virtio_mmio_dev m;
	struct virtio_dev d;
	uint32_t index = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.pmem", 0);
	if (virtio_find(VIRTIO_ID_PMEM, index, &m)) {
		kprintf("TEST fail pmem no-virtio-pmem index=%u\n", index);
		return 1;
	}
	int err = virtio_init(&d, &m, 0);
	if (err) {
		kprintf("TEST fail pmem init %s status=%#x\n", virtio_strerror(err), virtio_status(&d));
		return 1;
	}
	uint64_t start = virtio_config_read64(&d, CFG_START);
	uint64_t size = virtio_config_read64(&d, CFG_SIZE);
	kprintf("TEST info virtio-pmem base=%#lx irq=%u features=%#lx start=%#lx size=%#lx\n",
		d.base, d.irq, d.features, start, size);
	if (size == 0 || (start & 0x1fffff) || (size & 0x1fffff)) {
		kprintf("TEST fail pmem window not 2 MiB aligned\n");
		return 1;
	}
	if (map_high(start, size)) {
		kprintf("TEST fail pmem cannot map the window\n");
		return 1;
	}

	uint64_t len = cmdline_get_u64(g_boot.cmdline, "squibtest.pmem_len", size);
	if (len > size)
		len = size;
	len &= ~UINT64_C(7);
	const char *tsc_source = "guess";
	uint64_t khz = tsc_khz_cpuid(&tsc_source);
	if (!khz)
		khz = tsc_khz();
	if (cmdline_get(g_boot.cmdline, "squibtest.tsc_khz", NULL)) {
		khz = cmdline_get_u64(g_boot.cmdline, "squibtest.tsc_khz", khz);
		tsc_source = "cmdline";
	}
	uint64_t t0 = rdtsc();
	uint64_t sum = sum_words((const volatile uint64_t *)(uintptr_t)start, len / 8);
	uint64_t cycles = rdtsc() - t0;
	uint64_t us = cycles * 1000 / (khz ? khz : 1);
	t0 = rdtsc();
	read_raw((const volatile uint64_t *)(uintptr_t)start, len / 8);
	uint64_t raw_us = (rdtsc() - t0) * 1000 / (khz ? khz : 1);
	kprintf("TEST info pmem read bytes=%lu sum=%016lx us=%lu kib_s=%lu raw_us=%lu raw_kib_s=%lu tsc=%s\n",
		len, sum, us, us ? (len >> 10) * 1000000 / us : 0, raw_us,
		raw_us ? (len >> 10) * 1000000 / raw_us : 0, tsc_source);

	if (cmdline_get(g_boot.cmdline, "squibtest.pmem_wait_off", NULL)) {
		uint64_t off = cmdline_get_u64(g_boot.cmdline, "squibtest.pmem_wait_off", 0) & ~UINT64_C(7);
		if (off + 8 > size) {
			kprintf("TEST fail pmem wait offset beyond the window\n");
			return 1;
		}
		volatile uint64_t *go = (volatile uint64_t *)(uintptr_t)(start + off);
		kprintf("TEST info pmem waiting off=%#lx\n", off);
		uint64_t deadline = rdtsc() +
			cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 120000) * tsc_khz();
		while (*go != PMEM_GO) {
			if (rdtsc() > deadline) {
				kprintf("TEST fail pmem timeout waiting for the host\n");
				return 1;
			}
			udelay(1000);
		}
		kprintf("TEST info pmem go\n");
	}

	uint64_t wlen = cmdline_get_u64(g_boot.cmdline, "squibtest.pmem_write", 0);
	if (wlen) {
		uint64_t off = cmdline_get_u64(g_boot.cmdline, "squibtest.pmem_write_off", 0);
		if (off > size || wlen > size - off) {
			kprintf("TEST fail pmem write range beyond the window\n");
			return 1;
		}
		volatile uint8_t *w = (volatile uint8_t *)(uintptr_t)(start + off);
		for (uint64_t i = 0; i < wlen; i++)
			w[i] = pattern(i);
		uint64_t same = 0;
		for (uint64_t i = 0; i < wlen; i++)
			same += w[i] == pattern(i);
		/* FLUSH: 4-byte request type 0, then the device writes a 4-byte status. */
		uint32_t *req = (uint32_t *)d.vq.scratch;
		int32_t *status = (int32_t *)(d.vq.scratch + 64);
		*req = 0;
		*status = 0x55555555;
		struct virtq_seg segs[2] = {
			{ (uintptr_t)req, 4, false },
			{ (uintptr_t)status, 4, true },
		};
		uint32_t used = 0;
		err = virtq_submit_wait(&d, segs, 2, &used, virtio_io_timeout());
		if (err) {
			kprintf("TEST fail pmem flush %s\n", virtio_strerror(err));
			return 1;
		}
		kprintf("TEST info pmem write bytes=%lu readback=%lu flush_status=%d used=%u\n", wlen,
			same, *status, used);
		if (*status != 0 || used != 4) {
			kprintf("TEST fail pmem flush status=%d used=%u\n", *status, used);
			return 1;
		}
	}
	if (virtio_report("pmem", &d))
		return 1;
	size_t rlen = 0;
	const char *root = cmdline_get(g_boot.cmdline, "root", &rlen);
	char rbuf[32] = "none";
	if (root) {
		if (rlen >= sizeof(rbuf))
			rlen = sizeof(rbuf) - 1;
		memcpy(rbuf, root, rlen);
		rbuf[rlen] = '\0';
	}
	kprintf("TEST ok pmem bytes=%lu sum=%016lx root=%s\n", len, sum, rbuf);
	return 0;
}
