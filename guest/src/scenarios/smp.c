/* SPDX-License-Identifier: Apache-2.0 */
/* smp: start every AP the MP table (or, failing that, the ACPI MADT) lists. */
#include "../guest.h"

int scenario_smp(void)
{
	struct cpu_list mp, madt;
	bool have_mp = mptable_find_cpus(&mp);
	bool have_madt = acpi_find_cpus(&madt);
	kprintf("TEST info mptable_cpus=%u\n", have_mp ? mp.count : 0);
	if (have_mp)
		kprintf("TEST info mptable_addr=%#lx\n", mp.table_addr);
	kprintf("TEST info acpi_cpus=%u\n", have_madt ? madt.count : 0);
	if (have_madt)
		kprintf("TEST info madt_addr=%#lx\n", madt.table_addr);

	const struct cpu_list *cpus = have_mp && mp.count ? &mp : have_madt && madt.count ? &madt : NULL;
	struct smp_result res;
	smp_boot_aps(cpus, &res);

	kprintf("TEST info bsp_apic_id=%u ap_apic_ids=", lapic_id());
	for (uint32_t i = 0; i < res.apic_ids_count; i++)
		kprintf(i ? ",%u" : "%u", res.apic_ids[i]);
	kprintf("%s\n", res.apic_ids_count ? "" : "none");

	if (!cpus) {
		kprintf("TEST fail smp cpus=%u no-mptable-or-madt\n", res.started);
		return 1;
	}
	if (have_mp && have_madt && mp.count != madt.count) {
		kprintf("TEST fail smp mptable_cpus=%u acpi_cpus=%u mismatch\n", mp.count, madt.count);
		return 1;
	}
	if (res.started != res.expected) {
		kprintf("TEST fail smp cpus=%u expected=%u\n", res.started, res.expected);
		return 1;
	}
	kprintf("TEST ok smp cpus=%u\n", res.started);
	return 0;
}
