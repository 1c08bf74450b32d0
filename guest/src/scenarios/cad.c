/* SPDX-License-Identifier: Apache-2.0 */
/* cad: wait for the VMM's Ctrl-Alt-Del (PUT /actions SendCtrlAltDel), which arrives as the AT
 * set-2 make codes Ctrl 0x14, Alt 0x11, Del 0xE0 0x71 in the i8042 output buffer (IRQ 1; this
 * guest polls the status register instead). On the full sequence it reports and returns, and
 * main() resets through the i8042 like a rebooting Linux guest (reboot=k). */
#include "../guest.h"
#include "../io.h"

#define I8042_DATA   0x60
#define I8042_STATUS 0x64
#define I8042_OBF    0x01

int scenario_cad(void)
{
	static const uint8_t want[] = { 0x14, 0x11, 0xe0, 0x71 };
	uint32_t matched = 0, seen = 0;

	/* Drain anything left over from the VMM's controller setup. */
	while (inb(I8042_STATUS) & I8042_OBF)
		(void)inb(I8042_DATA);
	kprintf("TEST info cad waiting\n");
	for (;;) {
		if (!(inb(I8042_STATUS) & I8042_OBF)) {
			__asm__ volatile("pause");
			continue;
		}
		uint8_t b = inb(I8042_DATA);
		seen++;
		if (b == want[matched]) {
			matched++;
		} else {
			matched = (b == want[0]) ? 1 : 0;
		}
		if (matched == sizeof(want)) {
			kprintf("TEST ok cad scancodes=%u\n", seen);
			return 0;
		}
	}
}
