/* SPDX-License-Identifier: Apache-2.0 */
/*
 * balloon: drive the first virtio-balloon device like Linux's driver, with
 * polling instead of interrupts.
 *
 *  1. Set up every queue the device has (inflate, deflate, then stats /
 *     hinting / reporting as offered); accept STATS_VQ and DEFLATE_ON_OOM.
 *  2. Touch squibtest.touch_mib MiB (default 128) from squibtest.touch_base_mib
 *     (default 32): one marker word per 4 KiB page, so the host backs them.
 *  3. Put a statistics buffer on the stats queue (free/total/available memory,
 *     and major_faults = how many times the host asked for statistics).
 *  4. `TEST info balloon ready ...`: the host may now change the target.
 *  5. Follow the target in the configuration space until it is 0 again after
 *     having been non-zero: inflate with the PFNs of touched pages (from the
 *     top of the range down, 256 per request), deflate the most recent ones,
 *     write `actual` after each request, and refill the statistics buffer
 *     whenever the device returns it.
 *  6. Check that every page that was in the balloon now reads zero (the host
 *     released it) and every other touched page still holds its marker:
 *       TEST ok balloon inflated=<max pages> zeroed=<n> intact=<m> stats_requests=<k>
 *
 * Lines for the host: `TEST info balloon inflated pages=<n>` and
 * `TEST info balloon deflated pages=<n>` when `actual` reaches the target.
 * squibtest.timeout_ms (default 120000) bounds the whole run.
 */
#include "../virtio_drv.h"

#define F_STATS_VQ          1
#define F_DEFLATE_ON_OOM    2
#define F_FREE_PAGE_HINT    3
#define F_REPORTING         5

#define CFG_NUM_PAGES       0
#define CFG_ACTUAL          4

#define PFNS_PER_REQ        256
#define MARK                UINT64_C(0xa5a5000000000000)
#define PAGE                4096u

#define S_SWAP_IN           0
#define S_MAJFLT            2
#define S_MEMFREE           4
#define S_MEMTOT            5
#define S_AVAIL             6
#define S_OOM_KILL          10
#define N_STATS             6

static uint8_t stats_buf[N_STATS * 10] __attribute__((aligned(16)));

static void put_stat(uint32_t i, uint16_t tag, uint64_t val)
{
	uint8_t *p = stats_buf + i * 10;
	p[0] = (uint8_t)tag;
	p[1] = (uint8_t)(tag >> 8);
	for (int b = 0; b < 8; b++)
		p[2 + b] = (uint8_t)(val >> (8 * b));
}

static void fill_stats(uint64_t free_bytes, uint32_t requests)
{
	put_stat(0, S_SWAP_IN, 0);
	put_stat(1, S_MAJFLT, requests);
	put_stat(2, S_MEMFREE, free_bytes);
	put_stat(3, S_MEMTOT, g_boot.ram_bytes);
	put_stat(4, S_AVAIL, free_bytes);
	put_stat(5, S_OOM_KILL, 0);
}

static volatile uint64_t *page_word(uint64_t pfn)
{
	return (volatile uint64_t *)(uintptr_t)(pfn * PAGE);
}

int scenario_balloon(void)
{
	struct virtio_mmio_dev m;
	struct virtio_dev d;
	if (virtio_find(VIRTIO_ID_BALLOON, 0, &m)) {
		kprintf("TEST fail balloon no-virtio-balloon\n");
		return 1;
	}
	/* Every queue the device has (the count follows the offered features). */
	uint64_t wanted = FEATURE(F_STATS_VQ) | FEATURE(F_DEFLATE_ON_OOM) |
			  FEATURE(F_FREE_PAGE_HINT) | FEATURE(F_REPORTING);
	int err = virtio_init_queues(&d, &m, wanted, 0);
	uint32_t nq = d.num_queues;
	if (err) {
		kprintf("TEST fail balloon init %s status=%#x\n", virtio_strerror(err),
			virtio_status(&d));
		return 1;
	}
	bool stats = d.features & FEATURE(F_STATS_VQ);
	uint32_t target = virtio_config_read32(&d, CFG_NUM_PAGES);
	kprintf("TEST info virtio-balloon base=%#lx irq=%u features=%#lx queues=%u target=%u\n",
		d.base, d.irq, d.features, nq, target);

	uint64_t base_pfn = cmdline_get_u64(g_boot.cmdline, "squibtest.touch_base_mib", 32) << 8;
	uint64_t touch_pages = cmdline_get_u64(g_boot.cmdline, "squibtest.touch_mib", 128) << 8;
	uint64_t ram_pages = g_boot.ram_bytes / PAGE;
	if (base_pfn + touch_pages > ram_pages) {
		kprintf("TEST fail balloon touch range beyond RAM ram_pages=%lu\n", ram_pages);
		return 1;
	}
	for (uint64_t i = 0; i < touch_pages; i++)
		*page_word(base_pfn + i) = MARK | (base_pfn + i);
	uint64_t top = base_pfn + touch_pages;  /* PFN i of the balloon is top - 1 - i */

	uint32_t stats_requests = 0;
	struct virtq_seg sseg = { (uintptr_t)stats_buf, sizeof(stats_buf), false };
	if (stats) {
		fill_stats(g_boot.ram_bytes - touch_pages * PAGE, 0);
		err = virtq_add(&d, 2, &sseg, 1);
		if (err) {
			kprintf("TEST fail balloon stats %s\n", virtio_strerror(err));
			return 1;
		}
	}
	kprintf("TEST info balloon ready touched_mib=%lu target=%u stats=%u\n", touch_pages >> 8,
		target, stats ? 1 : 0);

	uint64_t deadline = rdtsc() +
		cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 120000) * tsc_khz();
	uint32_t held = 0, max_held = 0;
	bool reported = true;
	uint32_t *pfns = (uint32_t *)virtio_io_buf;
	while (!(max_held > 0 && held == 0 && target == 0)) {
		if (rdtsc() > deadline) {
			kprintf("TEST fail balloon timeout held=%u target=%u max=%u\n", held, target,
				max_held);
			return 1;
		}
		if (stats && virtq_poll(&d, 2, NULL) > 0) {
			stats_requests++;
			fill_stats(g_boot.ram_bytes - (touch_pages - held) * PAGE, stats_requests);
			if ((err = virtq_add(&d, 2, &sseg, 1))) {
				kprintf("TEST fail balloon stats %s\n", virtio_strerror(err));
				return 1;
			}
		}
		target = virtio_config_read32(&d, CFG_NUM_PAGES);
		if (target > touch_pages)
			target = (uint32_t)touch_pages;
		if (target == held) {
			if (!reported) {
				kprintf("TEST info balloon %s pages=%u\n", held ? "inflated" : "deflated",
					held);
				reported = true;
			}
			udelay(1000);
			continue;
		}
		uint32_t qi = target > held ? 0 : 1;
		uint32_t n = target > held ? target - held : held - target;
		if (n > PFNS_PER_REQ)
			n = PFNS_PER_REQ;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t idx = qi == 0 ? held + i : held - 1 - i;
			pfns[i] = (uint32_t)(top - 1 - idx);
		}
		struct virtq_seg seg = { (uintptr_t)pfns, n * 4, false };
		err = virtq_submit_wait_q(&d, qi, &seg, 1, NULL, virtio_io_timeout());
		if (err) {
			kprintf("TEST fail balloon %s %s\n", qi ? "deflate" : "inflate",
				virtio_strerror(err));
			return 1;
		}
		held = qi == 0 ? held + n : held - n;
		if (held > max_held)
			max_held = held;
		virtio_config_write32(&d, CFG_ACTUAL, held);
		reported = false;
	}
	kprintf("TEST info balloon deflated pages=0\n");

	uint32_t zeroed = 0, intact = 0;
	for (uint64_t i = 0; i < touch_pages; i++) {
		uint64_t pfn = top - 1 - i;
		uint64_t v = *page_word(pfn);
		if (i < max_held)
			zeroed += v == 0;
		else
			intact += v == (MARK | pfn);
	}
	if (virtio_report("balloon", &d))
		return 1;
	if (zeroed != max_held || intact != touch_pages - max_held) {
		kprintf("TEST fail balloon inflated=%u zeroed=%u intact=%u\n", max_held, zeroed,
			intact);
		return 1;
	}
	kprintf("TEST ok balloon inflated=%u zeroed=%u intact=%u stats_requests=%u\n", max_held,
		zeroed, intact, stats_requests);
	return 0;
}
