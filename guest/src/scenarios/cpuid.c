/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cpuid: print the CPUID leaves (and optionally MSRs) this vCPU sees, one line each:
 *
 *   CPUID 0x1.0 eax=0x000806f8 ebx=0x00010800 ecx=0xf6fa3203 edx=0x0f8bfbff
 *   MSR 0x10a value=0x000000000000000c
 *
 * Fixed leaves: 0, 1, 6, 7.0, 7.1, 0xd.0, 0xd.1, 0x80000000, 0x80000001, 0x80000007,
 * 0x80000008 (leaves above the reported maximum are skipped). More with
 * `squibtest.cpuid=<leaf>.<subleaf>` tokens (repeatable, hex with 0x or decimal), MSRs with
 * `squibtest.msr=<index>` tokens. An MSR the vCPU cannot read raises #GP, which the trap
 * handler reports as a failure. Tests compare these lines with what a CPU template asked for.
 *
 * The BSP then reports a fingerprint of the fixed leaves (APIC-id fields masked); with more
 * than one vCPU it starts the APs and each reports its own, so a test can check that every
 * vCPU sees the same CPUID:  FINGERPRINT apic=1 0x0123456789abcdef
 *
 * `squibtest.cpuid_watch=1` then keeps running (for snapshot tests): every 2^tick_shift
 * iterations (`squibtest.tick_shift`, default 24) it prints the BSP's fingerprint and MSRs
 * again:  WATCH 3 fp=0x0123456789abcdef msr0x277=0x0007040600070406
 */
#include "../guest.h"

struct leaf {
	uint32_t leaf;
	uint32_t subleaf;
};

static const struct leaf fixed[] = {
	{ 0x0, 0 }, { 0x1, 0 }, { 0x6, 0 }, { 0x7, 0 }, { 0x7, 1 }, { 0xd, 0 }, { 0xd, 1 },
	{ 0x80000000, 0 }, { 0x80000001, 0 }, { 0x80000007, 0 }, { 0x80000008, 0 },
};

static uint32_t max_basic, max_ext;

static void print_leaf(uint32_t leaf, uint32_t subleaf)
{
	uint32_t max = leaf >= 0x80000000u ? max_ext : max_basic;
	if (leaf > max && leaf != 0x80000000u) {
		kprintf("TEST info cpuid-skipped %#x.%u above max %#x\n", leaf, subleaf, max);
		return;
	}
	uint32_t a, b, c, d;
	cpuid(leaf, subleaf, &a, &b, &c, &d);
	kprintf("CPUID %#x.%x eax=0x%08x ebx=0x%08x ecx=0x%08x edx=0x%08x\n", leaf, subleaf, a, b,
		c, d);
}

static uint64_t fnv(uint64_t h, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		h ^= (v >> (8 * i)) & 0xff;
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t cpuid_fingerprint(void)
{
	uint32_t a, b, c, d, maxb, maxe;
	cpuid(0, 0, &maxb, &b, &c, &d);
	cpuid(0x80000000u, 0, &maxe, &b, &c, &d);
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) {
		uint32_t leaf = fixed[i].leaf;
		if (leaf > (leaf >= 0x80000000u ? maxe : maxb))
			continue;
		cpuid(leaf, fixed[i].subleaf, &a, &b, &c, &d);
		if (leaf == 1)
			b &= 0x00ffffffu;   /* initial APIC id */
		h = fnv(fnv(fnv(fnv(h, a), b), c), d);
	}
	return h;
}

/* Prints our fingerprint; starts the APs (if the MP table lists any) and compares theirs. */
static int check_all_vcpus(void)
{
	uint64_t mine = cpuid_fingerprint();
	kprintf("FINGERPRINT apic=%u %#lx\n", lapic_id(), mine);
	struct cpu_list mp;
	if (!mptable_find_cpus(&mp) || mp.count < 2)
		return 0;
	struct smp_result res;
	smp_boot_aps(&mp, &res);
	int rc = 0;
	for (uint32_t i = 0; i < res.apic_ids_count; i++) {
		kprintf("FINGERPRINT apic=%u %#lx\n", res.apic_ids[i], res.fingerprints[i]);
		if (res.fingerprints[i] != mine)
			rc = 1;
	}
	if (res.started != mp.count) {
		kprintf("TEST fail cpuid aps-started=%u expected=%u\n", res.started, mp.count);
		return 1;
	}
	if (rc)
		kprintf("TEST fail cpuid fingerprint-mismatch\n");
	return rc;
}

/* Parses `<leaf>[.<subleaf>]`; returns false on garbage. */
static bool parse_leaf(const char *v, size_t len, struct leaf *out)
{
	const char *end;
	uint64_t leaf = strtou64(v, &end, 0);
	if (end == v || leaf > 0xffffffffu)
		return false;
	uint64_t sub = 0;
	if (end < v + len && *end == '.') {
		const char *s = end + 1;
		sub = strtou64(s, &end, 0);
		if (end == s || sub > 0xffffffffu)
			return false;
	}
	if (end != v + len)
		return false;
	out->leaf = (uint32_t)leaf;
	out->subleaf = (uint32_t)sub;
	return true;
}

static bool parse_leaf(const char *v, size_t len, struct leaf *out);

/* Never returns: re-reads the fingerprint and the requested MSRs forever. */
NORETURN static void watch(void)
{
	static volatile uint64_t counter;
	uint64_t shift = cmdline_get_u64(g_boot.cmdline, "squibtest.tick_shift", 24);
	if (shift < 4 || shift > 40)
		shift = 24;
	uint64_t mask = (UINT64_C(1) << shift) - 1;
	for (;;) {
		uint64_t c = counter + 1;
		counter = c;
		if ((c & mask) != 0)
			continue;
		kprintf("WATCH %lu fp=%#lx", c >> shift, cpuid_fingerprint());
		size_t pos = 0, len = 0;
		const char *v;
		while ((v = cmdline_next(g_boot.cmdline, "squibtest.msr", &pos, &len)) != NULL) {
			struct leaf l;
			if (parse_leaf(v, len, &l))
				kprintf(" msr%#x=0x%016lx", l.leaf, rdmsr(l.leaf));
		}
		kprintf("\n");
	}
}

int scenario_cpuid(void)
{
	uint32_t b, c, d;
	cpuid(0, 0, &max_basic, &b, &c, &d);
	cpuid(0x80000000u, 0, &max_ext, &b, &c, &d);
	int rc = 0;

	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
		print_leaf(fixed[i].leaf, fixed[i].subleaf);

	size_t pos = 0, len = 0;
	const char *v;
	while ((v = cmdline_next(g_boot.cmdline, "squibtest.cpuid", &pos, &len)) != NULL) {
		struct leaf l;
		if (!parse_leaf(v, len, &l)) {
			kprintf("TEST fail cpuid bad-leaf-token\n");
			rc = 1;
			continue;
		}
		print_leaf(l.leaf, l.subleaf);
	}

	pos = 0;
	while ((v = cmdline_next(g_boot.cmdline, "squibtest.msr", &pos, &len)) != NULL) {
		struct leaf l;
		if (!parse_leaf(v, len, &l)) {
			kprintf("TEST fail cpuid bad-msr-token\n");
			rc = 1;
			continue;
		}
		kprintf("MSR %#x value=0x%016lx\n", l.leaf, rdmsr(l.leaf));
	}

	if (check_all_vcpus() != 0)
		rc = 1;
	if (rc == 0)
		kprintf("TEST ok cpuid\n");
	if (cmdline_get_u64(g_boot.cmdline, "squibtest.cpuid_watch", 0) == 1)
		watch();
	return rc;
}
