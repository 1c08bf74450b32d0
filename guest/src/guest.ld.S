/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linker script for squib-test-guest (preprocessed with cpp; -DPVH_NOTE adds
 * the Xen PVH ELF note and its PT_NOTE segment).
 *
 * Physical == virtual. Two PT_LOAD segments at >= 16 MiB: text (R+X) and
 * data+bss (R+W). The default artifact has no PT_NOTE at all, so a
 * Firecracker-style loader uses the Linux 64-bit boot protocol.
 */
#include "defs.h"

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(_start64)

PHDRS
{
	text PT_LOAD FLAGS(5);		/* R X */
	data PT_LOAD FLAGS(6);		/* R W */
#ifdef PVH_NOTE
	note PT_NOTE FLAGS(4);
#endif
}

SECTIONS
{
	. = KERNEL_PHYS_BASE;
	__image_start = .;

	.text : AT(ADDR(.text)) {
		*(.text.boot)
		*(.text .text.*)
	} :text

	.rodata : AT(ADDR(.rodata)) {
		*(.rodata .rodata.*)
	} :text

#ifdef PVH_NOTE
	.note.Xen : AT(ADDR(.note.Xen)) {
		KEEP(*(.note.Xen))
	} :text :note
#endif

	. = ALIGN(4096);
	.data : AT(ADDR(.data)) {
		*(.data .data.*)
	} :data

	.bss : AT(ADDR(.bss)) {
		__bss_start = .;
		*(.bss .bss.*)
		*(COMMON)
		. = ALIGN(8);
		__bss_end = .;
	} :data

	/* Not zeroed at boot: stacks. */
	.noinit (NOLOAD) : AT(ADDR(.noinit)) {
		*(.noinit .noinit.*)
	} :data

	__image_end = .;

	/DISCARD/ : {
		*(.note .note.*)
		*(.comment)
		*(.eh_frame .eh_frame_hdr)
		*(.note.GNU-stack)
	}
}
