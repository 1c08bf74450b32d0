/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's own page tables: identity map of 0-4 GiB with 2 MiB pages.
 *
 * A Linux-boot VMM's tables (and the 1 GiB that PVH loaders assume) do not
 * reach the MMIO devices at 3-4 GiB (boot timer and virtio-mmio at
 * 0xC000_0000+, IOAPIC, LAPIC), so we switch to these first. The 3-4 GiB
 * gigabyte is mapped uncached (PCD | PWT). RAM above 3 GiB (which a VMM puts
 * at 4 GiB and up) is not mapped.
 *
 * The tables are initialised at build time (they are 24 KiB of .data): where
 * KVM emulates guest kernel code instruction by instruction (kvm_pvm), a
 * 2048-iteration loop costs milliseconds of boot time; a CR3 load does not.
 * _start_pvh loads them directly; paging_init() switches to them.
 *
 * map_high() identity-maps more of the physical address space on demand (a
 * virtio-pmem window or virtio-mem region at 512 GiB and up) with 2 MiB pages,
 * from a small static pool of page-table pages.
 */
#include "guest.h"

#define PTE_P    0x001ULL
#define PTE_RW   0x002ULL
#define PTE_PWT  0x008ULL
#define PTE_PCD  0x010ULL
#define PTE_PS   0x080ULL

/* 2 MiB page i (0..2047) covers [i * 2 MiB, (i + 1) * 2 MiB). Pages 1536.. are 3-4 GiB. */
#define PDE(i) (((uint64_t)(i) << 21) | PTE_P | PTE_RW | PTE_PS | \
		((i) >= 1536 ? PTE_PCD | PTE_PWT : 0))
#define PD2(b)    PDE(b), PDE((b) + 1)
#define PD4(b)    PD2(b), PD2((b) + 2)
#define PD8(b)    PD4(b), PD4((b) + 4)
#define PD16(b)   PD8(b), PD8((b) + 8)
#define PD32(b)   PD16(b), PD16((b) + 16)
#define PD64(b)   PD32(b), PD32((b) + 32)
#define PD128(b)  PD64(b), PD64((b) + 64)
#define PD256(b)  PD128(b), PD128((b) + 128)
#define PD512(b)  PD256(b), PD256((b) + 256)

static uint64_t boot_pd[4 * 512] __attribute__((aligned(4096))) = {
	PD512(0), PD512(512), PD512(1024), PD512(1536),
};

static uint64_t boot_pdpt[512] __attribute__((aligned(4096))) = {
	(uint64_t)(uintptr_t)&boot_pd[0 * 512] + (PTE_P | PTE_RW),
	(uint64_t)(uintptr_t)&boot_pd[1 * 512] + (PTE_P | PTE_RW),
	(uint64_t)(uintptr_t)&boot_pd[2 * 512] + (PTE_P | PTE_RW),
	(uint64_t)(uintptr_t)&boot_pd[3 * 512] + (PTE_P | PTE_RW),
};

uint64_t boot_pml4[512] __attribute__((aligned(4096))) = {
	(uint64_t)(uintptr_t)&boot_pdpt[0] + (PTE_P | PTE_RW),
};

void paging_init(void)
{
	write_cr3((uint64_t)(uintptr_t)boot_pml4);
}

#define HI_TABLES 16            /* PDPT/PD pages map_high can add (each PD maps 1 GiB) */
static uint64_t hi_tables[HI_TABLES][512] __attribute__((noinit, aligned(4096)));
static uint32_t hi_tables_used;

static uint64_t *table_at(uint64_t entry)
{
	return (uint64_t *)(uintptr_t)(entry & UINT64_C(0x000ffffffffff000));
}

/* The next-level table of `*entry`, allocated (zeroed) if not present; NULL if the pool is
 * exhausted or the entry maps a large page. */
static uint64_t *next_table(uint64_t *entry)
{
	if (*entry & PTE_P)
		return (*entry & PTE_PS) ? NULL : table_at(*entry);
	if (hi_tables_used >= HI_TABLES)
		return NULL;
	uint64_t *t = hi_tables[hi_tables_used++];
	for (int i = 0; i < 512; i++)
		t[i] = 0;
	*entry = (uint64_t)(uintptr_t)t | PTE_P | PTE_RW;
	return t;
}

int map_high(uint64_t phys, uint64_t len)
{
	uint64_t start = phys & ~(UINT64_C(0x1fffff));
	uint64_t end = (phys + len + 0x1fffff) & ~(UINT64_C(0x1fffff));
	if (end > (UINT64_C(1) << 47) || end < start)
		return -1;
	for (uint64_t a = start; a < end; a += UINT64_C(0x200000)) {
		uint64_t *pdpt = next_table(&boot_pml4[(a >> 39) & 511]);
		uint64_t *pd = pdpt ? next_table(&pdpt[(a >> 30) & 511]) : NULL;
		if (!pd)
			return -1;
		uint64_t *pde = &pd[(a >> 21) & 511];
		if (!(*pde & PTE_P))
			*pde = a | PTE_P | PTE_RW | PTE_PS;
	}
	write_cr3(read_cr3());  /* flush the TLB */
	return 0;
}
