/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Xen PVH ELF note, linked only into squib-test-guest-pvh.elf.
 * XEN_ELFNOTE_PHYS32_ENTRY (18): 32-bit physical address of _start_pvh.
 * A Firecracker-style VMM that sees this note uses the PVH boot protocol.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long	2f - 1f				/* namesz */
	.long	4f - 3f				/* descsz */
	.long	XEN_ELFNOTE_PHYS32_ENTRY	/* type */
1:	.asciz	"Xen"
2:	.balign 4
3:	.long	_start_pvh
4:	.balign 4
