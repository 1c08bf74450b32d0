/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Constants shared by C and assembly (boot.S includes this through cpp).
 * Keep this file free of C-only syntax outside the !__ASSEMBLER__ block.
 */
#ifndef SQUIB_GUEST_DEFS_H
#define SQUIB_GUEST_DEFS_H

/* Where the ELF is linked and loaded (physical == virtual; Linux uses 16 MiB too). */
#define KERNEL_PHYS_BASE    0x1000000

/* Selectors of the guest's own GDT (same layout in the AP trampoline). */
#define KERNEL_CS           0x08    /* 64-bit code */
#define KERNEL_DS           0x10    /* flat data, usable in 32- and 64-bit mode */
#define KERNEL_CS32         0x18    /* 32-bit code (AP trampoline) */

/* How we were entered; stored in `boot_mode` by boot.S. */
#define BOOT_MODE_LINUX64   1       /* Linux 64-bit boot protocol, rsi = boot_params */
#define BOOT_MODE_PVH       2       /* Xen PVH 32-bit entry, ebx = hvm_start_info */

/*
 * AP real-mode trampoline. Must be page aligned, below 1 MiB, and clear of
 * what a Firecracker-style VMM uses: 0x500-0xBFFF (GDT/IDT, PVH start info,
 * zero page, boot stack, boot page tables), 0x20000 (command line) and
 * 0x9FC00 upwards (MP table, ACPI, RSDP, BIOS area).
 */
#define TRAMPOLINE_ADDR     0x10000
#define TRAMPOLINE_MAX      0x1000

#define MAX_CPUS            32
#define AP_STACK_SIZE       4096
#define BSP_STACK_SIZE      16384

#define MSR_EFER            0xC0000080
#define EFER_LME            0x100
#define CR0_PE              0x1
#define CR0_PG              0x80000000
#define CR4_PAE             0x20

#endif
