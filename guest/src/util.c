/* SPDX-License-Identifier: Apache-2.0 */
/* Freestanding helpers: mem*, str*, number parsing, a small printf to COM1. */
#include "guest.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	if (d < s) {
		while (n--)
			*d++ = *s++;
	} else {
		while (n--)
			d[n] = s[n];
	}
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	uint8_t *d = dst;
	while (n--)
		*d++ = (uint8_t)c;
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

size_t strnlen(const char *s, size_t max)
{
	size_t n = 0;
	while (n < max && s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return (uint8_t)a[i] < (uint8_t)b[i] ? -1 : 1;
		if (!a[i])
			return 0;
	}
	return 0;
}

static int digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	return 99;
}

/* Like strtoul: base 0 accepts 0x (hex), 0 (octal) and decimal. No sign. */
uint64_t strtou64(const char *s, const char **end, int base)
{
	uint64_t v = 0;
	if (base == 0) {
		if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digit_value(s[2]) < 16) {
			base = 16;
			s += 2;
		} else if (s[0] == '0') {
			base = 8;
		} else {
			base = 10;
		}
	} else if (base == 16 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && digit_value(s[2]) < 16) {
		s += 2;
	}
	for (;;) {
		int d = digit_value(*s);
		if (d >= base)
			break;
		v = v * (uint64_t)base + (uint64_t)d;
		s++;
	}
	if (end)
		*end = s;
	return v;
}

/* Busy-wait for a number of pause instructions (no clock involved). */
void spin_delay(uint64_t iterations)
{
	for (uint64_t i = 0; i < iterations; i++)
		cpu_relax();
}

/*
 * TSC frequency in kHz as the CPU or hypervisor announces it, 0 if unknown:
 * CPUID 0x15 (crystal clock x ratio, exact, if the crystal frequency is given),
 * else the hypervisor timing leaf 0x40000010 (EAX = TSC kHz, KVM/VMware
 * convention), else CPUID 0x16 (processor base MHz, nominal).
 */
uint64_t tsc_khz_cpuid(const char **source)
{
	static uint64_t khz;
	static const char *src = "none";
	static bool done;
	if (!done) {
		uint32_t max, a, b, c, d;
		cpuid(0, 0, &max, &b, &c, &d);
		if (max >= 0x15) {
			cpuid(0x15, 0, &a, &b, &c, &d);
			if (a && b && c) {
				khz = (uint64_t)c * b / a / 1000;
				src = "cpuid-0x15";
			}
		}
		if (!khz) {
			cpuid(0x40000000, 0, &a, &b, &c, &d);
			if (a >= 0x40000010 && a < 0x40000100) {
				cpuid(0x40000010, 0, &a, &b, &c, &d);
				khz = a;
				src = "cpuid-0x40000010";
			}
		}
		if (!khz && max >= 0x16) {
			cpuid(0x16, 0, &a, &b, &c, &d);
			khz = (uint64_t)(a & 0xFFFF) * 1000;
			src = "cpuid-0x16";
		}
		if (!khz)
			src = "none";
		done = true;
	}
	if (source)
		*source = src;
	return khz;
}

/* The TSC frequency for bounded waits: as announced, else assume 3 GHz. */
uint64_t tsc_khz(void)
{
	uint64_t khz = tsc_khz_cpuid(NULL);
	return khz ? khz : 3000000;
}

/* Wait about `us` microseconds of TSC time, however slowly we are executed. */
void udelay(uint64_t us)
{
	uint64_t end = rdtsc() + us * tsc_khz() / 1000;
	while ((int64_t)(rdtsc() - end) < 0)
		cpu_relax();
}

/* ---- printing ---- */

static void put_str(const char *s, int width, bool left)
{
	size_t n = strlen(s);
	if (!left)
		for (int i = (int)n; i < width; i++)
			serial_putc(' ');
	serial_write(s, n);
	if (left)
		for (int i = (int)n; i < width; i++)
			serial_putc(' ');
}

static void put_uint(uint64_t v, unsigned base, int width, char pad, const char *prefix)
{
	char buf[24];
	int i = 0;
	do {
		unsigned d = (unsigned)(v % base);
		buf[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	int plen = prefix ? (int)strlen(prefix) : 0;
	if (pad == '0') {
		if (prefix)
			serial_write(prefix, (size_t)plen);
		for (int k = i + plen; k < width; k++)
			serial_putc('0');
	} else {
		for (int k = i + plen; k < width; k++)
			serial_putc(' ');
		if (prefix)
			serial_write(prefix, (size_t)plen);
	}
	while (i)
		serial_putc(buf[--i]);
}

/*
 * Supported: %% %c %s %d %i %u %x %p, flags '-', '0', '#', a decimal width,
 * length modifiers l, ll, z (all integers are handled as 64-bit internally).
 */
void kvprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		fmt++;
		bool left = false, alt = false;
		char pad = ' ';
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				pad = '0';
			else if (*fmt == '#')
				alt = true;
			else
				break;
		}
		int width = 0;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		int lng = 0;
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case '%':
			serial_putc('%');
			break;
		case 'c':
			serial_putc((char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			put_str(s ? s : "(null)", width, left);
			break;
		}
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			if (v < 0) {
				put_uint((uint64_t)0 - (uint64_t)v, 10, width, pad, "-");
			} else {
				put_uint((uint64_t)v, 10, width, pad, NULL);
			}
			break;
		}
		case 'u':
			put_uint(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad, NULL);
			break;
		case 'x':
			put_uint(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad,
				 alt ? "0x" : NULL);
			break;
		case 'p':
			put_uint((uint64_t)(uintptr_t)va_arg(ap, void *), 16, width, pad, "0x");
			break;
		case '\0':
			return;
		default:
			serial_putc('%');
			serial_putc(*fmt);
			break;
		}
	}
}

void kprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
}
