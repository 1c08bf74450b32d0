/* SPDX-License-Identifier: Apache-2.0 */
/*
 * squib-test-guest entry points.
 *
 *  _start64    Linux 64-bit boot protocol (the ELF e_entry). The VMM enters in
 *              long mode with its own identity map of the first 1 GiB, interrupts
 *              off, rsi = physical address of struct boot_params (zero page).
 *  _start_pvh  Xen PVH entry (only advertised by the -pvh artifact's ELF note).
 *              32-bit protected mode, paging off, ebx = struct hvm_start_info.
 *              Loads the guest's 4 GiB identity map, enters long mode, then
 *              joins _start64.
 *
 * Both zero .bss (not .noinit, which holds the stacks), load the guest's own
 * GDT, switch to the BSP stack and call kmain(), which switches to the
 * guest's 4 GiB page tables first thing.
 *
 * Also here: the real-mode AP trampoline (copied to TRAMPOLINE_ADDR), the AP
 * long-mode entry, and the 32 exception stubs.
 */
#include "defs.h"

	.section .text.boot, "ax"

/* ------------------------------------------------------------------ */
	.code64
	.globl _start64
	.type _start64, @function
_start64:
	cli
	cld
	movq	%rsi, %r12			/* boot_params, survives the memset */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$3, %ecx
	xorl	%eax, %eax
	rep stosq
	movq	%r12, boot_info_ptr(%rip)
	movl	$BOOT_MODE_LINUX64, boot_mode(%rip)
	lgdt	gdt_desc(%rip)
	jmp	long_common
	.size _start64, . - _start64

/* ------------------------------------------------------------------ */
	.code32
	.globl _start_pvh
	.type _start_pvh, @function
_start_pvh:
	cli
	cld
	movl	%ebx, %esi			/* hvm_start_info */
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx
	xorl	%eax, %eax
	rep stosl
	movl	%esi, boot_info_ptr
	movl	$BOOT_MODE_PVH, boot_mode

	/* The guest's 4 GiB identity map (paging.c, initialised at build time). */
	movl	$boot_pml4, %eax
	movl	%eax, %cr3
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	lgdt	gdt_desc			/* 32-bit form: limit + low 32 bits of base */
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$KERNEL_CS, $long_common
	.size _start_pvh, . - _start_pvh

/* ------------------------------------------------------------------ */
	.code64
long_common:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs
	leaq	bsp_stack_top(%rip), %rsp
	pushq	$KERNEL_CS			/* reload CS from our GDT */
	leaq	1f(%rip), %rax
	pushq	%rax
	lretq
1:	xorl	%ebp, %ebp
	call	kmain
2:	cli
	hlt
	jmp	2b

/* ------------------------------------------------------------------ */
/* APs arrive here from the trampoline: long mode, CS = KERNEL_CS, the BSP's CR3. */
	.globl ap_entry64
	.type ap_entry64, @function
ap_entry64:
	lgdt	gdt_desc(%rip)
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	xorl	%eax, %eax
	movl	%eax, %fs
	movl	%eax, %gs
	movl	$1, %eax
	lock xaddl %eax, ap_next_index(%rip)	/* eax = this AP's 0-based index */
	cmpl	$(MAX_CPUS - 1), %eax
	jae	ap_park
	movl	%eax, %edi			/* ap_main(index) */
	leal	1(%rax), %ecx
	shlq	$12, %rcx			/* (index + 1) * AP_STACK_SIZE */
	leaq	ap_stacks(%rip), %rsp
	addq	%rcx, %rsp
	pushq	$KERNEL_CS
	leaq	1f(%rip), %rax
	pushq	%rax
	lretq
1:	xorl	%ebp, %ebp
	call	ap_main
ap_park:
	cli
	hlt
	jmp	ap_park
	.size ap_entry64, . - ap_entry64

#if AP_STACK_SIZE != 4096
#error "ap_entry64 assumes AP_STACK_SIZE == 4096"
#endif

/* ------------------------------------------------------------------ */
/* Exception stubs: vector n at isr_stubs + 16 * n. Frame handed to trap_entry:
 * vector, error code (0 if the CPU pushes none), rip, cs, rflags, rsp, ss. */
	.balign 16
	.globl isr_stubs
isr_stubs:
	.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.balign 16
	.if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	.else
	pushq	$0
	.endif
	pushq	$\n
	jmp	isr_common
	.endr

isr_common:
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	trap_entry			/* does not return */
3:	cli
	hlt
	jmp	3b

/* ------------------------------------------------------------------ */
/* AP trampoline: copied to TRAMPOLINE_ADDR, entered by SIPI vector
 * TRAMPOLINE_ADDR >> 12 in real mode with CS = TRAMPOLINE_ADDR >> 4, IP = 0.
 * Everything is addressed relative to trampoline_start. */
	.balign 16
	.globl trampoline_start, trampoline_end, tr_cr3
	.code16
trampoline_start:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	tr_gdt_desc - trampoline_start
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	ljmpl	$KERNEL_CS32, $(TRAMPOLINE_ADDR + tr32 - trampoline_start)

	.code32
tr32:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	(TRAMPOLINE_ADDR + tr_cr3 - trampoline_start), %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$KERNEL_CS, $ap_entry64

	.balign 8
tr_gdt:
	.quad	0
	.quad	0x00AF9A000000FFFF		/* 0x08: 64-bit code */
	.quad	0x00CF92000000FFFF		/* 0x10: flat data */
	.quad	0x00CF9A000000FFFF		/* 0x18: 32-bit code */
tr_gdt_end:
tr_gdt_desc:
	.word	tr_gdt_end - tr_gdt - 1
	.long	TRAMPOLINE_ADDR + tr_gdt - trampoline_start
	.balign 4
tr_cr3:
	.long	0				/* patched by the BSP */
trampoline_end:

/* ------------------------------------------------------------------ */
	.section .data
	.balign 16
gdt:
	.quad	0
	.quad	0x00AF9A000000FFFF		/* 0x08: 64-bit code */
	.quad	0x00CF92000000FFFF		/* 0x10: flat data */
	.quad	0x00CF9A000000FFFF		/* 0x18: 32-bit code */
gdt_end:
	.balign 8
gdt_desc:
	.word	gdt_end - gdt - 1
	.quad	gdt

	.section .bss
	.balign 8
	.globl boot_info_ptr, boot_mode, ap_next_index
boot_info_ptr:	.skip 8
boot_mode:	.skip 4
ap_next_index:	.skip 4

/* Stacks: not zeroed at boot (zeroing is slow where KVM emulates guest code). */
	.section .noinit, "aw", @nobits
	.balign 4096
	.globl ap_stacks
ap_stacks:	.skip (MAX_CPUS - 1) * AP_STACK_SIZE
bsp_stack:	.skip BSP_STACK_SIZE
bsp_stack_top:
