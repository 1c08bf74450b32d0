/* SPDX-License-Identifier: Apache-2.0 */
/* counter: count forever, print TICK <n> every 2^24 iterations. Never exits.
 * The host uses it for pause/resume: n stops advancing while paused. */
#include "../guest.h"

#define TICK_SHIFT 24

int scenario_counter(void)
{
	static volatile uint64_t counter;
	for (;;) {
		uint64_t c = counter + 1;
		counter = c;
		if ((c & ((1ULL << TICK_SHIFT) - 1)) == 0)
			kprintf("TICK %lu\n", c >> TICK_SHIFT);
	}
}
