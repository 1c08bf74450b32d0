/* SPDX-License-Identifier: Apache-2.0 */
/*
 * counter: count forever, print `TICK <n>` every 2^shift iterations
 * (n = count >> shift). Never exits. The host uses it for pause/resume:
 * n stops advancing while the VM is paused.
 *
 * shift defaults to 24 (tens of ms per tick natively under KVM). Set
 * `squibtest.tick_shift=<4..40>` on the command line where the CPU is much
 * slower, e.g. 17 under kvm_pvm or QEMU TCG.
 */
#include "../guest.h"

#define TICK_SHIFT_DEFAULT 24

int scenario_counter(void)
{
	static volatile uint64_t counter;
	uint64_t shift = cmdline_get_u64(g_boot.cmdline, "squibtest.tick_shift", TICK_SHIFT_DEFAULT);
	if (shift < 4 || shift > 40)
		shift = TICK_SHIFT_DEFAULT;
	kprintf("TEST info tick_shift=%lu\n", shift);
	uint64_t mask = (UINT64_C(1) << shift) - 1;
	for (;;) {
		uint64_t c = counter + 1;
		counter = c;
		if ((c & mask) == 0)
			kprintf("TICK %lu\n", c >> shift);
	}
}
