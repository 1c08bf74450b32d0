/* SPDX-License-Identifier: Apache-2.0 */
/*
 * acpi: find the ACPI tables the way Linux does and check them.
 *
 * RSDP: Linux's acpi_find_root_pointer() scan, on 16-byte boundaries: the first KiB of the
 * EBDA (segment at 0x40E, if above 0x400), then the BIOS area 0xE0000-0xFFFFF. The boot
 * protocol's pointer (zero page acpi_rsdp_addr) is only reported, not used.
 * Then: RSDP checksums (20 bytes, and the extended one for revision >= 2), XSDT, every table it
 * lists (signature, length, checksum), FADT -> DSDT, MADT entries.
 *
 *   TEST info acpi rsdp=<addr> rev=<r> oem=<id> boot_rsdp=<addr> xsdt=<addr>
 *   TEST info acpi table <sig> addr=<addr> len=<n>        (one per XSDT entry, then the DSDT)
 *   TEST ok acpi lapics=<n> ioapics=<n> overrides=<n> dsdt_len=<n> virtio=<n> hw_reduced=<0|1> tables=<n>
 *
 * `virtio` counts the "LNRO0005" names in the DSDT (virtio-mmio devices).
 */
#include "../guest.h"

#define SIG_RSD_  0x20445352u  /* "RSD " */
#define SIG_PTR_  0x20525450u  /* "PTR " */
#define SIG_XSDT  0x54445358u
#define SIG_FACP  0x50434146u
#define SIG_APIC  0x43495041u
#define SIG_DSDT  0x54445344u
#define MAX_TABLE (1u << 20)   /* nothing we write is larger; bounds every walk */

static uint8_t sum8(uint64_t addr, uint64_t len)
{
	uint8_t s = 0;
	for (uint64_t i = 0; i < len; i++)
		s = (uint8_t)(s + phys_read8(addr + i));
	return s;
}

static bool rsdp_valid(uint64_t a)
{
	if (phys_read32(a) != SIG_RSD_ || phys_read32(a + 4) != SIG_PTR_ || sum8(a, 20) != 0)
		return false;
	if (phys_read8(a + 15) >= 2) {
		uint32_t len = phys_read32(a + 20);
		if (len < 36 || len > 1024 || sum8(a, len) != 0)
			return false;
	}
	return true;
}

static uint64_t scan_rsdp(uint64_t start, uint64_t len)
{
	for (uint64_t a = start; a + 20 <= start + len; a += 16)
		if (rsdp_valid(a))
			return a;
	return 0;
}

/* Linux: EBDA first, then the upper BIOS area. */
static uint64_t find_rsdp(void)
{
	uint64_t ebda = (uint64_t)phys_read16(0x40E) << 4;
	uint64_t found = 0;
	if (ebda > 0x400 && ebda < 0xA0000)
		found = scan_rsdp(ebda, 1024);
	if (!found)
		found = scan_rsdp(0xE0000, 0x20000);
	return found;
}

/* A table header at `a` with signature `sig` (0 = any), sane length and zero checksum. */
static bool table_ok(uint64_t a, uint32_t sig, uint32_t *len_out)
{
	if (a == 0 || a >= (1ULL << 32) - 36)
		return false;
	uint32_t len = phys_read32(a + 4);
	if (len < 36 || len > MAX_TABLE || a + len > (1ULL << 32))
		return false;
	if (sig && phys_read32(a) != sig)
		return false;
	if (sum8(a, len) != 0)
		return false;
	*len_out = len;
	return true;
}

static void print_sig(uint32_t sig)
{
	for (int i = 0; i < 4; i++) {
		char c = (char)(sig >> (8 * i));
		kprintf("%c", c >= 0x20 && c < 0x7f ? c : '?');
	}
}

static uint32_t count_bytes(uint64_t a, uint32_t len, const char *needle)
{
	size_t n = strlen(needle);
	uint32_t hits = 0;
	for (uint64_t i = 0; i + n <= len; i++) {
		size_t k = 0;
		while (k < n && phys_read8(a + i + k) == (uint8_t)needle[k])
			k++;
		if (k == n)
			hits++;
	}
	return hits;
}

int scenario_acpi(void)
{
	uint64_t rsdp = find_rsdp();
	if (!rsdp) {
		kprintf("TEST fail acpi no-rsdp boot_rsdp=%#lx\n", g_boot.rsdp);
		return 1;
	}
	uint8_t rev = phys_read8(rsdp + 15);
	uint64_t xsdt = rev >= 2 ? phys_read64(rsdp + 24) : 0;
	kprintf("TEST info acpi rsdp=%#lx rev=%u oem=", rsdp, rev);
	for (int i = 0; i < 6; i++)
		kprintf("%c", (char)phys_read8(rsdp + 9 + (uint64_t)i));
	kprintf(" boot_rsdp=%#lx xsdt=%#lx\n", g_boot.rsdp, xsdt);

	uint32_t xlen;
	if (!table_ok(xsdt, SIG_XSDT, &xlen)) {
		kprintf("TEST fail acpi bad-xsdt xsdt=%#lx\n", xsdt);
		return 1;
	}
	uint64_t fadt = 0, madt = 0;
	uint32_t fadt_len = 0, madt_len = 0, ntables = (xlen - 36) / 8;
	for (uint32_t i = 0; i < ntables; i++) {
		uint64_t t = phys_read64(xsdt + 36 + (uint64_t)i * 8);
		uint32_t len;
		if (!table_ok(t, 0, &len)) {
			kprintf("TEST fail acpi bad-table index=%u addr=%#lx\n", i, t);
			return 1;
		}
		uint32_t sig = phys_read32(t);
		kprintf("TEST info acpi table ");
		print_sig(sig);
		kprintf(" addr=%#lx len=%u\n", t, len);
		if (sig == SIG_FACP) {
			fadt = t;
			fadt_len = len;
		} else if (sig == SIG_APIC) {
			madt = t;
			madt_len = len;
		}
	}
	if (!fadt || fadt_len < 148) {
		kprintf("TEST fail acpi no-fadt\n");
		return 1;
	}
	uint64_t dsdt = phys_read64(fadt + 140);  /* X_DSDT */
	if (!dsdt)
		dsdt = phys_read32(fadt + 40);
	uint32_t dsdt_len;
	if (!table_ok(dsdt, SIG_DSDT, &dsdt_len)) {
		kprintf("TEST fail acpi bad-dsdt dsdt=%#lx\n", dsdt);
		return 1;
	}
	kprintf("TEST info acpi table DSDT addr=%#lx len=%u\n", dsdt, dsdt_len);
	bool hw_reduced = (phys_read32(fadt + 112) >> 20) & 1;

	if (!madt || madt_len < 44) {
		kprintf("TEST fail acpi no-madt\n");
		return 1;
	}
	uint32_t lapics = 0, ioapics = 0, overrides = 0;
	for (uint64_t p = madt + 44, end = madt + madt_len; p + 2 <= end;) {
		uint8_t type = phys_read8(p), len = phys_read8(p + 1);
		if (len < 2 || p + len > end) {
			kprintf("TEST fail acpi bad-madt-entry offset=%lu\n", p - madt);
			return 1;
		}
		if (type == 0 && len >= 8 && (phys_read32(p + 4) & 1))
			lapics++;
		else if (type == 1)
			ioapics++;
		else if (type == 2)
			overrides++;
		p += len;
	}
	uint32_t virtio = count_bytes(dsdt, dsdt_len, "LNRO0005");
	kprintf("TEST ok acpi lapics=%u ioapics=%u overrides=%u dsdt_len=%u virtio=%u hw_reduced=%u tables=%u\n",
		lapics, ioapics, overrides, dsdt_len, virtio, hw_reduced ? 1 : 0, ntables);
	return 0;
}
