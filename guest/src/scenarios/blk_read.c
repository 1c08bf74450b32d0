/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-read: read the first squibtest.sectors (default 64) sectors of the
 * virtio-blk device and print their 64-bit FNV-1a hash, which the host
 * compares with the same hash of the backing file:
 *   TEST ok blk-read sectors=<n> capacity=<sectors> sum=<16 hex digits>
 * More sectors than the device has are clamped to its capacity.
 * With squibtest.wait_ticks=<n> (and squibtest.tick_shift) the device is
 * opened first, then the guest counts `TICK <i>` lines like `counter` up to
 * n before reading: a snapshot taken meanwhile must restore an active device.
 */
#include "../virtio_drv.h"

#define SECTORS_DEFAULT 64

int scenario_blk_read(void)
{
	static const char name[] = "blk-read";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	uint64_t wait = cmdline_get_u64(g_boot.cmdline, "squibtest.wait_ticks", 0);
	if (wait) {
		uint64_t shift = cmdline_get_u64(g_boot.cmdline, "squibtest.tick_shift", 24);
		if (shift < 4 || shift > 40)
			shift = 24;
		static volatile uint64_t counter;
		uint64_t mask = (UINT64_C(1) << shift) - 1;
		while ((counter >> shift) < wait) {
			uint64_t c = counter + 1;
			counter = c;
			if ((c & mask) == 0)
				kprintf("TICK %lu\n", c >> shift);
		}
	}
	uint64_t n = cmdline_get_u64(g_boot.cmdline, "squibtest.sectors", SECTORS_DEFAULT);
	if (n > b.capacity) {
		kprintf("TEST info blk-read sectors=%lu clamped-to capacity=%lu\n", n, b.capacity);
		n = b.capacity;
	}
	uint64_t h = FNV1A64_INIT;
	uint32_t chunk = b.max_request / SECTOR_SIZE;
	for (uint64_t s = 0; s < n; s += chunk) {
		uint32_t k = n - s < chunk ? (uint32_t)(n - s) : chunk;
		int st = blk_request(&b, VIRTIO_BLK_T_IN, s, virtio_io_buf, k * SECTOR_SIZE);
		if (blk_check(name, "read", s, st))
			return 1;
		h = fnv1a64(h, virtio_io_buf, (size_t)k * SECTOR_SIZE);
	}
	if (virtio_report(name, &b.v))
		return 1;
	kprintf("TEST ok blk-read sectors=%lu capacity=%lu sum=%016lx\n", n, b.capacity, h);
	return 0;
}
