/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AP bring-up with the local APIC: INIT, SIPI, SIPI. The APs run the real-mode
 * trampoline copied to TRAMPOLINE_ADDR (boot.S), switch to long mode with the
 * BSP's page tables, check in here and halt.
 */
#include "guest.h"

#define MSR_APIC_BASE        0x1B
#define APIC_BASE_ENABLE     (1ULL << 11)
#define APIC_BASE_X2APIC     (1ULL << 10)
#define APIC_BASE_ADDR_MASK  0x000FFFFFFFFFF000ULL

#define LAPIC_SVR            0xF0
#define LAPIC_ICR_LO         0x300
#define LAPIC_ICR_HI         0x310
#define X2APIC_MSR(reg)      (0x800 + ((reg) >> 4))

#define ICR_INIT             0x00000500
#define ICR_STARTUP          0x00000600
#define ICR_LEVEL_ASSERT     0x00004000
#define ICR_BUSY             0x00001000
#define ICR_ALL_BUT_SELF     0x000C0000

/* The architectural INIT/SIPI delays (KVM and QEMU do not need them). */
#define INIT_DELAY_US        10000
#define SIPI_DELAY_US        200
/* Bound on the wait for check-ins (TSC time), and on loop rounds as a backstop. */
#define WAIT_MS              3000
#define WAIT_MS_UNKNOWN      1000
#define WAIT_ROUNDS          (1ULL << 24)

static uint64_t lapic_base;
static bool x2apic;

/* Written by APs. */
static volatile uint32_t ap_checked_in;
static volatile uint32_t ap_apic_id_plus1[MAX_CPUS];
static volatile uint64_t ap_fingerprint[MAX_CPUS];

void ap_main(uint32_t index);

uint32_t lapic_id(void)
{
	uint32_t a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	return b >> 24;  /* initial APIC ID */
}

/* Full barrier that KVM's instruction emulator handles (unlike mfence). */
static inline void full_barrier(void)
{
	__asm__ volatile("lock orq $0, (%%rsp)" ::: "memory", "cc");
}

static void lapic_setup(void)
{
	uint64_t v = rdmsr(MSR_APIC_BASE);
	if (!(v & APIC_BASE_ENABLE)) {
		v |= APIC_BASE_ENABLE;
		wrmsr(MSR_APIC_BASE, v);
	}
	x2apic = v & APIC_BASE_X2APIC;
	lapic_base = v & APIC_BASE_ADDR_MASK;
	if (!lapic_base)
		lapic_base = LAPIC_DEFAULT_ADDR;
	/* Software-enable the APIC, spurious vector 0xFF. */
	if (x2apic)
		wrmsr(X2APIC_MSR(LAPIC_SVR), 0x1FF);
	else
		mmio_write32(lapic_base + LAPIC_SVR, 0x1FF);
}

static void icr_wait_idle(void)
{
	if (x2apic)
		return;  /* no delivery-status bit in x2APIC mode */
	for (int i = 0; i < 100000; i++) {
		if (!(mmio_read32(lapic_base + LAPIC_ICR_LO) & ICR_BUSY))
			return;
		cpu_relax();
	}
}

static void send_ipi(uint32_t dest, uint32_t cmd)
{
	full_barrier();
	if (x2apic) {
		wrmsr(X2APIC_MSR(LAPIC_ICR_LO), ((uint64_t)dest << 32) | cmd);
	} else {
		icr_wait_idle();
		mmio_write32(lapic_base + LAPIC_ICR_HI, dest << 24);
		mmio_write32(lapic_base + LAPIC_ICR_LO, cmd);
		icr_wait_idle();
	}
}

void ap_main(uint32_t index)
{
	if (index < MAX_CPUS) {
		ap_fingerprint[index] = cpuid_fingerprint();
		ap_apic_id_plus1[index] = lapic_id() + 1;
	}
	__atomic_fetch_add(&ap_checked_in, 1, __ATOMIC_SEQ_CST);
	halt_forever();
}

void smp_boot_aps(const struct cpu_list *cpus, struct smp_result *res)
{
	memset(res, 0, sizeof(*res));
	res->expected = cpus ? cpus->count : 0;
	uint32_t self = lapic_id();

	size_t tsz = (size_t)(trampoline_end - trampoline_start);
	if (tsz > TRAMPOLINE_MAX) {
		res->started = 1;
		return;
	}
	memcpy((void *)(uintptr_t)TRAMPOLINE_ADDR, trampoline_start, tsz);
	*(volatile uint32_t *)(uintptr_t)(TRAMPOLINE_ADDR + (uint64_t)(tr_cr3 - trampoline_start)) =
		(uint32_t)read_cr3();

	lapic_setup();

	uint32_t sipi = ICR_STARTUP | (TRAMPOLINE_ADDR >> 12);
	uint32_t n = cpus ? cpus->count : 0;
	if (n > MAX_CPUS)
		n = MAX_CPUS;
	uint32_t targets = 0;
	for (uint32_t i = 0; i < n; i++)
		if (cpus->apic_id[i] != self)
			targets++;
	if (n && !targets) {
		res->started = 1;  /* uniprocessor: nothing to start */
		return;
	}
	if (n) {
		for (uint32_t i = 0; i < n; i++)
			if (cpus->apic_id[i] != self)
				send_ipi(cpus->apic_id[i], ICR_INIT | ICR_LEVEL_ASSERT);
		udelay(INIT_DELAY_US);
		for (int round = 0; round < 2; round++) {
			for (uint32_t i = 0; i < n; i++)
				if (cpus->apic_id[i] != self)
					send_ipi(cpus->apic_id[i], sipi);
			udelay(SIPI_DELAY_US);
		}
	} else {
		/* No table: broadcast and see who shows up. */
		send_ipi(0, ICR_ALL_BUT_SELF | ICR_INIT | ICR_LEVEL_ASSERT);
		udelay(INIT_DELAY_US);
		send_ipi(0, ICR_ALL_BUT_SELF | sipi);
		udelay(SIPI_DELAY_US);
		send_ipi(0, ICR_ALL_BUT_SELF | sipi);
	}

	uint64_t start = rdtsc();
	uint64_t budget = (res->expected ? WAIT_MS : WAIT_MS_UNKNOWN) * tsc_khz();
	for (uint64_t r = 0; r < WAIT_ROUNDS; r++) {
		if (res->expected && ap_checked_in + 1 >= res->expected)
			break;
		if (rdtsc() - start > budget)
			break;
		cpu_relax();
	}
	uint32_t got = ap_checked_in;
	res->started = 1 + got;
	uint32_t k = 0;
	for (uint32_t i = 0; i < MAX_CPUS && k < MAX_CPUS; i++)
		if (ap_apic_id_plus1[i]) {
			res->fingerprints[k] = ap_fingerprint[i];
			res->apic_ids[k++] = ap_apic_id_plus1[i] - 1;
		}
	/* Sort for stable output (APs race to check in). */
	for (uint32_t i = 1; i < k; i++)
		for (uint32_t j = i; j > 0 && res->apic_ids[j - 1] > res->apic_ids[j]; j--) {
			uint32_t t = res->apic_ids[j];
			res->apic_ids[j] = res->apic_ids[j - 1];
			res->apic_ids[j - 1] = t;
			uint64_t f = res->fingerprints[j];
			res->fingerprints[j] = res->fingerprints[j - 1];
			res->fingerprints[j - 1] = f;
		}
	res->apic_ids_count = k;
}
