/* SPDX-License-Identifier: Apache-2.0 */
/* COM1 8250 UART at 0x3F8, polled. */
#include "guest.h"

#define UART_THR 0  /* transmit holding (DLAB = 0) */
#define UART_IER 1
#define UART_DLL 0  /* divisor latch (DLAB = 1) */
#define UART_DLM 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_THRE 0x20

/* Upper bound on LSR polls per byte; if THR never empties we send anyway. */
#define THRE_SPIN_LIMIT 100000

void serial_init(void)
{
	outb(COM1_PORT + UART_IER, 0x00);   /* no interrupts */
	outb(COM1_PORT + UART_LCR, 0x80);   /* DLAB */
	outb(COM1_PORT + UART_DLL, 0x01);   /* 115200 baud */
	outb(COM1_PORT + UART_DLM, 0x00);
	outb(COM1_PORT + UART_LCR, 0x03);   /* 8N1 */
	outb(COM1_PORT + UART_FCR, 0x07);   /* enable + clear FIFOs */
	outb(COM1_PORT + UART_MCR, 0x03);   /* DTR | RTS, OUT2 off (no IRQ) */
}

void serial_putc(char c)
{
	for (int i = 0; i < THRE_SPIN_LIMIT; i++) {
		if (inb(COM1_PORT + UART_LSR) & LSR_THRE)
			break;
		cpu_relax();
	}
	outb(COM1_PORT + UART_THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		serial_putc(s[i]);
}
