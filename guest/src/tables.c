/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Firmware tables the VMM writes below 1 MiB, used to learn the CPU count:
 *  - Intel MP table (_MP_ floating pointer + PCMP configuration table),
 *  - ACPI MADT (via RSDP -> XSDT/RSDT -> "APIC").
 * Firecracker and squib write both; QEMU's SeaBIOS does too.
 */
#include "guest.h"

static uint8_t checksum(uint64_t addr, uint64_t len)
{
	uint8_t sum = 0;
	for (uint64_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + phys_read8(addr + i));
	return sum;
}

static bool low_range_ok(uint64_t addr, uint64_t len)
{
	return addr != 0 && addr < (1ULL << 32) && len < (1ULL << 20) && addr + len <= (1ULL << 32);
}

#define SIG_MP  0x5f504d5f  /* "_MP_" */
#define SIG_RSD 0x20445352  /* "RSD " */

static void add_cpu(struct cpu_list *out, uint32_t apic_id, bool bsp)
{
	if (out->count < MAX_CPUS) {
		if (bsp && out->bsp_index < 0)
			out->bsp_index = (int32_t)out->count;
		out->apic_id[out->count] = apic_id;
	}
	out->count++;
}

/* Scan [start, start+len) on 16-byte boundaries for a signature whose first
 * four bytes are `sig4`; `match` checks the rest (and the checksum). */
typedef bool (*match_fn)(uint64_t addr);

static uint64_t scan(uint64_t start, uint64_t len, uint32_t sig4, match_fn match)
{
	for (uint64_t a = start & ~15ULL; a + 16 <= start + len; a += 16)
		if (phys_read32(a) == sig4 && match(a))
			return a;
	return 0;
}

/* The usual BIOS search areas: first KiB of the EBDA, last KiB of base memory
 * (Firecracker: 0x9FC00), and the BIOS ROM area. */
static uint64_t scan_bios_areas(uint32_t sig4, match_fn match, uint64_t rom_start)
{
	uint64_t found;
	uint64_t ebda = (uint64_t)phys_read16(0x40E) << 4;
	if (ebda >= 0x80000 && ebda < 0xA0000 && (found = scan(ebda, 1024, sig4, match)))
		return found;
	uint64_t base_kib = phys_read16(0x413);
	if (base_kib >= 512 && base_kib <= 640 &&
	    (found = scan((base_kib - 1) * 1024, 1024, sig4, match)))
		return found;
	if ((found = scan(0x9FC00, 1024, sig4, match)))
		return found;
	return scan(rom_start, 0x100000 - rom_start, sig4, match);
}

/* ---- MP table ---- */

static bool match_mpfp(uint64_t a)
{
	uint8_t len16 = phys_read8(a + 8);
	return len16 >= 1 && checksum(a, (uint64_t)len16 * 16) == 0;
}

bool mptable_find_cpus(struct cpu_list *out)
{
	memset(out, 0, sizeof(*out));
	out->bsp_index = -1;
	uint64_t fp = scan_bios_areas(SIG_MP, match_mpfp, 0xF0000);
	if (!fp)
		return false;
	uint64_t cfg = phys_read32(fp + 4);
	if (!low_range_ok(cfg, 44) || phys_read32(cfg) != 0x504d4350)  /* "PCMP" */
		return false;
	uint16_t len = phys_read16(cfg + 4);
	if (len < 44 || !low_range_ok(cfg, len) || checksum(cfg, len) != 0)
		return false;
	out->table_addr = fp;
	/* Walk by table length like Linux does: some firmware (qboot) leaves the
	 * entry count at 0. */
	uint64_t p = cfg + 44, end = cfg + len;
	while (p < end) {
		uint8_t type = phys_read8(p);
		if (type == 0) {  /* processor, 20 bytes */
			uint8_t flags = phys_read8(p + 3);
			if (flags & 1)
				add_cpu(out, phys_read8(p + 1), flags & 2);
			p += 20;
		} else if (type <= 4) {
			p += 8;
		} else {
			break;  /* unknown entry type: length unknown */
		}
	}
	return true;
}

/* ---- ACPI MADT ---- */

static bool match_rsdp(uint64_t a)
{
	return phys_read32(a) == SIG_RSD && phys_read32(a + 4) == 0x20525450 &&  /* "RSD PTR " */
	       checksum(a, 20) == 0;
}

static bool sdt_ok(uint64_t a)
{
	if (!low_range_ok(a, 36))
		return false;
	uint32_t len = phys_read32(a + 4);
	return len >= 36 && low_range_ok(a, len) && checksum(a, len) == 0;
}

static uint64_t find_madt(uint64_t rsdp)
{
	uint8_t rev = phys_read8(rsdp + 15);
	uint64_t xsdt = rev >= 2 ? phys_read64(rsdp + 24) : 0;
	uint64_t root = xsdt ? xsdt : phys_read32(rsdp + 16);
	uint32_t esz = xsdt ? 8 : 4;
	if (!sdt_ok(root))
		return 0;
	uint32_t n = (phys_read32(root + 4) - 36) / esz;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t e = root + 36 + (uint64_t)i * esz;
		uint64_t t = esz == 8 ? phys_read64(e) : phys_read32(e);
		if (sdt_ok(t) && phys_read32(t) == 0x43495041)  /* "APIC" */
			return t;
	}
	return 0;
}

bool acpi_find_cpus(struct cpu_list *out)
{
	memset(out, 0, sizeof(*out));
	out->bsp_index = -1;
	uint64_t rsdp = g_boot.rsdp;
	if (!(low_range_ok(rsdp, 36) && match_rsdp(rsdp)))
		rsdp = scan_bios_areas(SIG_RSD, match_rsdp, 0xE0000);
	if (!rsdp)
		return false;
	uint64_t madt = find_madt(rsdp);
	if (!madt)
		return false;
	out->table_addr = madt;
	uint64_t p = madt + 44, end = madt + phys_read32(madt + 4);
	while (p + 2 <= end) {
		uint8_t type = phys_read8(p), len = phys_read8(p + 1);
		if (len < 2 || p + len > end)
			break;
		if (type == 0 && len >= 8 && (phys_read32(p + 4) & 1))          /* local APIC */
			add_cpu(out, phys_read8(p + 3), false);
		else if (type == 9 && len >= 16 && (phys_read32(p + 8) & 1))    /* local x2APIC */
			add_cpu(out, phys_read32(p + 4), false);
		p += len;
	}
	return true;
}
