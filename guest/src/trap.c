/* SPDX-License-Identifier: Apache-2.0 */
/* IDT for the 32 CPU exceptions: report and exit instead of triple-faulting. */
#include "guest.h"

struct idt_gate {
	uint16_t off_lo;
	uint16_t sel;
	uint8_t ist;
	uint8_t type_attr;
	uint16_t off_mid;
	uint32_t off_hi;
	uint32_t zero;
} __attribute__((packed));

struct idt_ptr {
	uint16_t limit;
	uint64_t base;
} __attribute__((packed));

struct trap_frame {
	uint64_t vector;
	uint64_t error;
	uint64_t rip;
	uint64_t cs;
	uint64_t rflags;
	uint64_t rsp;
	uint64_t ss;
};

static struct idt_gate idt[32] __attribute__((aligned(16)));
static volatile uint32_t in_trap;

void trap_init(void)
{
	for (unsigned v = 0; v < ARRAY_SIZE(idt); v++) {
		uint64_t h = (uint64_t)(uintptr_t)(isr_stubs + 16 * v);
		idt[v].off_lo = (uint16_t)h;
		idt[v].sel = KERNEL_CS;
		idt[v].ist = 0;
		idt[v].type_attr = 0x8E;  /* present, DPL 0, 64-bit interrupt gate */
		idt[v].off_mid = (uint16_t)(h >> 16);
		idt[v].off_hi = (uint32_t)(h >> 32);
		idt[v].zero = 0;
	}
	struct idt_ptr p = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(p) : "memory");
}

/* Limit 0: the next exception cannot be delivered -> #DF -> triple fault. */
void trap_load_empty_idt(void)
{
	struct idt_ptr p = { 0, 0 };
	__asm__ volatile("lidt %0" : : "m"(p) : "memory");
}

NORETURN void trap_entry(struct trap_frame *f);

NORETURN void trap_entry(struct trap_frame *f)
{
	if (__atomic_exchange_n(&in_trap, 1, __ATOMIC_SEQ_CST))
		halt_forever();  /* nested or concurrent: stay quiet */
	kprintf("TEST fail exception vector=%lu error=%#lx rip=%#lx cr2=%#lx apic=%u\n",
		f->vector, f->error, f->rip, read_cr2(), lapic_id());
	kprintf("SQUIBTEST END %s\n", g_scenario_name);
	machine_reset();
}
