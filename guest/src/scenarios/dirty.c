/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dirty: rewrite squibtest.dirty_pages (default 256) pages starting at 32 MiB
 * on every tick, forever, printing `TICK <n>` like `counter`. Used by the
 * snapshot benchmarks: after a Full snapshot and a resume, a Diff snapshot
 * holds these pages (plus the few the loop itself touches).
 *   TEST info dirty pages=<n> base=0x2000000
 * Pages beyond the guest's RAM are clamped away.
 */
#include "../guest.h"

#define DIRTY_BASE UINT64_C(0x2000000)

int scenario_dirty(void)
{
	uint64_t n = cmdline_get_u64(g_boot.cmdline, "squibtest.dirty_pages", 256);
	uint64_t shift = cmdline_get_u64(g_boot.cmdline, "squibtest.tick_shift", 24);
	if (shift < 4 || shift > 40)
		shift = 24;
	uint64_t room = g_boot.ram_bytes > DIRTY_BASE + 0x100000
		? (g_boot.ram_bytes - DIRTY_BASE - 0x100000) / 4096 : 0;
	if (n > room)
		n = room;
	kprintf("TEST info dirty pages=%lu base=0x%lx\n", n, DIRTY_BASE);
	static volatile uint64_t counter;
	uint64_t mask = (UINT64_C(1) << shift) - 1;
	for (;;) {
		uint64_t c = counter + 1;
		counter = c;
		if ((c & mask) == 0) {
			uint64_t t = c >> shift;
			for (uint64_t i = 0; i < n; i++)
				*(volatile uint64_t *)(DIRTY_BASE + i * 4096) = t;
			kprintf("TICK %lu\n", t);
		}
	}
}
