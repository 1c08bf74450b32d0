/* SPDX-License-Identifier: Apache-2.0 */
/* fault: load an empty IDT and execute ud2: #UD cannot be delivered -> #GP ->
 * #DF -> triple fault, which a VMM sees as a shutdown exit. ud2 rather than
 * int3: some KVM configurations (PVM) cannot emulate int3. */
#include "../guest.h"

int scenario_fault(void)
{
	kprintf("TEST info fault=triple-fault-next\n");
	trap_load_empty_idt();
	__asm__ volatile("ud2");
	kprintf("TEST fail fault still-running\n");
	return 1;
}
