/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's own page tables: identity map of 0-4 GiB with 2 MiB pages.
 * The VMM's boot tables (Linux boot protocol) or ours from _start_pvh cover
 * only the first 1 GiB; the MMIO devices live in 3-4 GiB (boot timer and
 * virtio-mmio at 0xC000_0000+, IOAPIC, LAPIC), which is mapped uncached.
 * RAM above 3 GiB (which a VMM puts at 4 GiB and up) is not mapped.
 */
#include "guest.h"

#define PTE_P    (1ULL << 0)
#define PTE_RW   (1ULL << 1)
#define PTE_PWT  (1ULL << 3)
#define PTE_PCD  (1ULL << 4)
#define PTE_PS   (1ULL << 7)

#define GIB (1ULL << 30)
#define MIB2 (1ULL << 21)

static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t pd[4][512] __attribute__((aligned(4096)));

void paging_init(void)
{
	for (uint64_t g = 0; g < 4; g++) {
		for (uint64_t i = 0; i < 512; i++) {
			uint64_t addr = g * GIB + i * MIB2;
			uint64_t flags = PTE_P | PTE_RW | PTE_PS;
			if (addr >= MMIO_GAP_START)
				flags |= PTE_PCD | PTE_PWT;
			pd[g][i] = addr | flags;
		}
		pdpt[g] = (uint64_t)(uintptr_t)pd[g] | PTE_P | PTE_RW;
	}
	pml4[0] = (uint64_t)(uintptr_t)pdpt | PTE_P | PTE_RW;
	write_cr3((uint64_t)(uintptr_t)pml4);
}
