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
