/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the VMM handed over at entry:
 *  - Linux 64-bit boot protocol: struct boot_params (the "zero page") at rsi.
 *  - PVH: struct hvm_start_info at ebx.
 * Extracts the command line, the e820 memory map and the ACPI RSDP.
 */
#include "guest.h"

/* struct boot_params offsets (Documentation/arch/x86/zero-page.rst). */
#define BP_ACPI_RSDP_ADDR     0x070  /* u64 */
#define BP_EXT_CMD_LINE_PTR   0x0C8  /* u32, high half of cmd_line_ptr */
#define BP_E820_ENTRIES       0x1E8  /* u8 */
#define BP_BOOT_FLAG          0x1FE  /* u16, 0xAA55 */
#define BP_HEADER             0x202  /* u32, "HdrS" */
#define BP_CMD_LINE_PTR       0x228  /* u32 */
#define BP_E820_TABLE         0x2D0  /* 128 x { u64 addr, u64 size, u32 type } */
#define BP_E820_ENTRY_SIZE    20

/* struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC       0x336ec578
#define HVM_MAGIC             0x00  /* u32 */
#define HVM_VERSION           0x04  /* u32 */
#define HVM_CMDLINE_PADDR     0x18  /* u64 */
#define HVM_RSDP_PADDR        0x20  /* u64 */
#define HVM_MEMMAP_PADDR      0x28  /* u64, version >= 1 */
#define HVM_MEMMAP_ENTRIES    0x30  /* u32, version >= 1 */
#define HVM_MEMMAP_ENTRY_SIZE 24    /* { u64 addr, u64 size, u32 type, u32 reserved } */

#define CMDLINE_MAX 4096
#define E820_RAM 1

struct boot_info g_boot;

/* Everything we dereference must be inside our 4 GiB identity map. */
static bool addr_ok(uint64_t a, uint64_t len)
{
	return a != 0 && a < (1ULL << 32) && len <= (1ULL << 32) - a;
}

/* Copied: low memory may be reused later (e.g. the AP trampoline page). */
static char cmdline_buf[CMDLINE_MAX + 1];

static void set_cmdline(uint64_t ptr)
{
	if (!addr_ok(ptr, 1))
		return;
	const char *src = (const char *)phys_ptr(ptr);
	size_t n = strnlen(src, CMDLINE_MAX);
	memcpy(cmdline_buf, src, n);
	cmdline_buf[n] = '\0';
	g_boot.cmdline = cmdline_buf;
	g_boot.cmdline_len = (uint32_t)n;
}

static void add_e820(uint64_t addr, uint64_t size, uint32_t type)
{
	if (g_boot.e820_count >= MAX_E820)
		return;
	struct e820_entry *e = &g_boot.e820[g_boot.e820_count++];
	e->addr = addr;
	e->size = size;
	e->type = type;
	if (type == E820_RAM)
		g_boot.ram_bytes += size;
}

static void parse_zero_page(uint64_t bp)
{
	g_boot.valid = phys_read16(bp + BP_BOOT_FLAG) == 0xAA55 && phys_read32(bp + BP_HEADER) == 0x53726448;
	set_cmdline(((uint64_t)phys_read32(bp + BP_EXT_CMD_LINE_PTR) << 32) | phys_read32(bp + BP_CMD_LINE_PTR));
	uint32_t n = phys_read8(bp + BP_E820_ENTRIES);
	if (n > MAX_E820)
		n = MAX_E820;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t e = bp + BP_E820_TABLE + (uint64_t)i * BP_E820_ENTRY_SIZE;
		add_e820(phys_read64(e), phys_read64(e + 8), phys_read32(e + 16));
	}
	g_boot.rsdp = phys_read64(bp + BP_ACPI_RSDP_ADDR);
}

static void parse_start_info(uint64_t si)
{
	if (phys_read32(si + HVM_MAGIC) != HVM_START_MAGIC)
		return;
	g_boot.valid = true;
	set_cmdline(phys_read64(si + HVM_CMDLINE_PADDR));
	g_boot.rsdp = phys_read64(si + HVM_RSDP_PADDR);
	if (phys_read32(si + HVM_VERSION) < 1)
		return;
	uint64_t map = phys_read64(si + HVM_MEMMAP_PADDR);
	uint32_t n = phys_read32(si + HVM_MEMMAP_ENTRIES);
	if (n > MAX_E820)
		n = MAX_E820;
	if (!addr_ok(map, (uint64_t)n * HVM_MEMMAP_ENTRY_SIZE))
		return;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t e = map + (uint64_t)i * HVM_MEMMAP_ENTRY_SIZE;
		add_e820(phys_read64(e), phys_read64(e + 8), phys_read32(e + 16));
	}
}

void bootinfo_parse(void)
{
	g_boot.mode = boot_mode;
	g_boot.cmdline = "";
	if (!addr_ok(boot_info_ptr, 0x1000))
		return;
	if (boot_mode == BOOT_MODE_LINUX64)
		parse_zero_page(boot_info_ptr);
	else if (boot_mode == BOOT_MODE_PVH)
		parse_start_info(boot_info_ptr);
}

const char *boot_mode_name(uint32_t mode)
{
	switch (mode) {
	case BOOT_MODE_LINUX64:
		return "linux64";
	case BOOT_MODE_PVH:
		return "pvh";
	default:
		return "unknown";
	}
}
