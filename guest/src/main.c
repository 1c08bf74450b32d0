/* SPDX-License-Identifier: Apache-2.0 */
/*
 * squib-test-guest main: page tables, boot-timer signal, serial, then run the
 * scenario named by `squibtest=<name>` on the kernel command line.
 *
 * Output protocol on COM1, one line per result:
 *   SQUIBTEST BEGIN <name>
 *   TEST info <key>=<value> ...
 *   TEST ok <name> [...]        or   TEST fail <what> [...]
 *   SQUIBTEST END <name>        (then i8042 reset = clean VMM exit)
 */
#include "guest.h"

#define DEFAULT_SCENARIO "hello"
#define NAME_MAX_LEN 63

static const struct scenario scenarios[] = {
	{ "hello",   scenario_hello,   "boot info: mode, cmdline length, e820 RAM, virtio-mmio slots" },
	{ "smp",     scenario_smp,     "start every AP (INIT-SIPI-SIPI), count check-ins" },
	{ "counter", scenario_counter, "print TICK <n> forever (pause/resume tests)" },
	{ "dirty",   scenario_dirty,   "rewrite squibtest.dirty_pages pages at 32 MiB every tick (snapshot benches)" },
	{ "fault",   scenario_fault,   "triple fault (empty IDT + ud2)" },
	{ "exception", scenario_exception, "ud2 with the IDT installed: exception report, then reset" },
	{ "cad",     scenario_cad,     "wait for Ctrl-Alt-Del scancodes on the i8042, then reset" },
	{ "blk-read",  scenario_blk_read,  "read squibtest.sectors from virtio-blk, print their FNV-1a" },
	{ "blk-write", scenario_blk_write, "write a pattern, flush, read back and compare" },
	{ "blk-ro",    scenario_blk_ro,    "a write to a read-only drive must fail with IOERR" },
	{ "blk-flush", scenario_blk_flush, "one FLUSH request" },
	{ "blk-throughput", scenario_blk_throughput, "timed sequential and random 4 KiB reads" },
	{ "blk-patch", scenario_blk_patch, "wait for the host to change the disk's capacity" },
	{ "rng",       scenario_rng,       "read 4 KiB from virtio-rng, count distinct bytes" },
	{ "acpi",      scenario_acpi,      "find the RSDP like Linux, check XSDT/FADT/DSDT/MADT, count LAPICs" },
	{ "cpuid",     scenario_cpuid,     "print the CPUID leaves (and squibtest.msr= MSRs) this vCPU sees" },
	{ "balloon",   scenario_balloon,   "follow the balloon target: inflate/deflate, statistics" },
	{ "pmem",      scenario_pmem,      "checksum (and write + flush) a virtio-pmem window" },
	{ "mem",       scenario_mem,       "follow virtio-mem's requested size: plug, check, unplug" },
	{ "vsock-listen", scenario_vsock_listen, "echo host-initiated vsock connections on squibtest.port" },
	{ "vsock-connect", scenario_vsock_connect, "connect to a host vsock port, send a pattern, check the echo" },
	{ "vsock-throughput", scenario_vsock_throughput, "stream squibtest.mib MiB each way over vsock" },
	{ "net-tx",    scenario_net_tx,    "send test frames through virtio-net" },
	{ "net-echo",  scenario_net_echo,  "send received test frames back with the MACs swapped" },
	{ "net-throughput", scenario_net_throughput, "timed virtio-net TX and RX, 1514/64-byte frames" },
	{ "mmds",      scenario_mmds,      "ARP + TCP + HTTP to MMDS: V2 token PUT, then GET" },
};

/* Copied out of the command line: the AP trampoline may overwrite low memory. */
static char name_buf[NAME_MAX_LEN + 1];
const char *g_scenario_name = "?";

NORETURN void kmain(void);

NORETURN void kmain(void)
{
	paging_init();          /* 4 GiB identity map: MMIO above 1 GiB becomes reachable */
	boot_timer_signal();    /* first thing after paging */
	serial_init();
	trap_init();
	bootinfo_parse();

	size_t len = 0;
	const char *v = cmdline_get(g_boot.cmdline, "squibtest", &len);
	if (!v) {
		v = DEFAULT_SCENARIO;
		len = strlen(v);
	}
	if (len > NAME_MAX_LEN)
		len = NAME_MAX_LEN;
	memcpy(name_buf, v, len);
	name_buf[len] = '\0';
	g_scenario_name = name_buf;

	kprintf("SQUIBTEST BEGIN %s\n", name_buf);

	const struct scenario *sc = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++)
		if (strncmp(scenarios[i].name, name_buf, NAME_MAX_LEN + 1) == 0)
			sc = &scenarios[i];

	if (!sc) {
		kprintf("TEST fail unknown-scenario %s (known:", name_buf);
		for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++)
			kprintf(" %s", scenarios[i].name);
		kprintf(")\n");
	} else if (sc->run() != 0) {
		kprintf("TEST info scenario %s reported failure\n", name_buf);
	}

	kprintf("SQUIBTEST END %s\n", name_buf);
	/* squibtest.hold=1: stay alive (halted) so the host can inspect the VMM afterwards. */
	if (cmdline_get_u64(g_boot.cmdline, "squibtest.hold", 0))
		halt_forever();
	machine_reset();
}
