/* SPDX-License-Identifier: Apache-2.0 */
/* Boot-timer signal, exit via the i8042 reset line, halting. */
#include "guest.h"

/* Firecracker (with --boot-timer) and squib log "Guest-boot-time = ..." on a
 * one-byte write of 123 at offset 0 of the boot-timer device. */
void boot_timer_signal(void)
{
	mmio_write8(BOOT_TIMER_ADDR, BOOT_TIMER_MAGIC);
}

NORETURN void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" ::: "memory");
}

/* Pulse the reset line through the keyboard controller (command 0xFE).
 * Firecracker and squib treat this as a clean exit (status 0). */
NORETURN void machine_reset(void)
{
	for (int i = 0; i < 100000; i++) {      /* wait for input buffer empty */
		if (!(inb(I8042_CMD_PORT) & 0x02))
			break;
		cpu_relax();
	}
	outb(I8042_CMD_PORT, 0xFE);
	spin_delay(1000000);                    /* give the reset time to land */
	halt_forever();
}
