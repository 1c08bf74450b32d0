/* SPDX-License-Identifier: Apache-2.0 */
/* exception: ud2 with the guest's IDT installed. Checks the guest's own
 * exception reporting: the handler prints `TEST fail exception vector=6 ...`,
 * then `SQUIBTEST END exception` and resets (clean exit). */
#include "../guest.h"

int scenario_exception(void)
{
	kprintf("TEST info exception=ud2-next\n");
	__asm__ volatile("ud2");
	kprintf("TEST fail exception not-raised\n");
	return 1;
}
