/* SPDX-License-Identifier: Apache-2.0 */
/* squib-test-guest: declarations shared by all C files. */
#ifndef SQUIB_GUEST_H
#define SQUIB_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "defs.h"
#include "io.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NORETURN __attribute__((noreturn))

/* ---- platform addresses (Firecracker x86_64 layout) ---- */
#define BOOT_TIMER_ADDR     0xC0000000ULL   /* write 123 at offset 0 */
#define BOOT_TIMER_MAGIC    123
#define MMIO_GAP_START      0xC0000000ULL   /* 32-bit MMIO gap, mapped uncached */
#define VIRTIO_MMIO_BASE    0xC0001000ULL   /* first virtio-mmio slot */
#define VIRTIO_MMIO_SLOT    0x1000ULL
#define IOAPIC_ADDR         0xFEC00000ULL
#define LAPIC_DEFAULT_ADDR  0xFEE00000ULL
#define COM1_PORT           0x3F8
#define I8042_CMD_PORT      0x64

/* ---- boot.S ---- */
extern uint32_t boot_mode;          /* BOOT_MODE_* */
extern uint64_t boot_info_ptr;      /* rsi (zero page) or ebx (hvm_start_info) at entry */
extern char trampoline_start[], trampoline_end[], tr_cr3[];
extern char isr_stubs[];            /* 32 exception stubs, 16 bytes apart */
extern char __image_start[], __image_end[];

/* ---- util.c ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strncmp(const char *a, const char *b, size_t n);
uint64_t strtou64(const char *s, const char **end, int base);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kvprintf(const char *fmt, va_list ap);
void spin_delay(uint64_t iterations);
uint64_t tsc_khz_cpuid(const char **source);  /* 0 if the CPU/hypervisor does not say */
uint64_t tsc_khz(void);                        /* tsc_khz_cpuid(), else a 3 GHz guess */
void udelay(uint64_t us);

/* ---- serial.c ---- */
void serial_init(void);
void serial_putc(char c);
void serial_write(const char *s, size_t n);

/* ---- platform.c ---- */
void boot_timer_signal(void);
NORETURN void machine_reset(void);  /* i8042 reset; falls back to cli;hlt */
NORETURN void halt_forever(void);

/* ---- paging.c ---- */
void paging_init(void);
/* Identity-map [phys, phys + len) (2 MiB pages) beyond the boot map; 0 on success. */
int map_high(uint64_t phys, uint64_t len);

/* ---- trap.c ---- */
void trap_init(void);
void trap_load_empty_idt(void);

/* ---- bootinfo.c ---- */
#define MAX_E820 128
struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};
struct boot_info {
	uint32_t mode;              /* BOOT_MODE_* */
	bool valid;                 /* zero page / start info looked sane */
	const char *cmdline;        /* NUL-terminated, or "" */
	uint32_t cmdline_len;
	uint32_t e820_count;
	struct e820_entry e820[MAX_E820];
	uint64_t ram_bytes;         /* sum of e820 type-1 (RAM) entries */
	uint64_t rsdp;              /* ACPI RSDP from the boot protocol, 0 if not given */
};
extern struct boot_info g_boot;
void bootinfo_parse(void);
const char *boot_mode_name(uint32_t mode);

/* ---- cmdline.c ---- */
/* Find `key=` as a whole token; returns the value and its length, or NULL. */
const char *cmdline_get(const char *cmdline, const char *key, size_t *len);
/* Iterate over every `key=` token: pass *pos = 0 first. */
const char *cmdline_next(const char *cmdline, const char *key, size_t *pos, size_t *len);
/* Numeric `key=<n>` (decimal, 0x hex, 0 octal); `def` if absent or malformed. */
uint64_t cmdline_get_u64(const char *cmdline, const char *key, uint64_t def);

/* ---- tables.c (firmware tables written by the VMM) ---- */
struct cpu_list {
	uint32_t count;             /* enabled processors found */
	uint32_t apic_id[MAX_CPUS]; /* first MAX_CPUS of them */
	int32_t bsp_index;          /* entry flagged as BSP, -1 if none */
	uint64_t table_addr;        /* where the table was found */
};
bool mptable_find_cpus(struct cpu_list *out);
bool acpi_find_cpus(struct cpu_list *out);

/* ---- smp.c ---- */
struct smp_result {
	uint32_t expected;          /* CPUs the firmware tables announce (0 = unknown) */
	uint32_t started;           /* BSP + APs that checked in */
	uint32_t apic_ids[MAX_CPUS];/* APIC IDs of the APs that checked in, ascending */
	uint32_t apic_ids_count;
	uint64_t fingerprints[MAX_CPUS]; /* cpuid_fingerprint() of each AP, same order as apic_ids */
};
uint32_t lapic_id(void);
void smp_boot_aps(const struct cpu_list *cpus, struct smp_result *res);

/* ---- virtio_mmio.c (driver layer for later device scenarios) ---- */
#define MAX_VIRTIO_MMIO 16
struct virtio_mmio_dev {
	uint64_t base;
	uint64_t size;
	uint32_t irq;
	uint32_t magic;
	uint32_t version;
	uint32_t device_id;
	uint32_t vendor_id;
};
uint32_t virtio_mmio_discover(struct virtio_mmio_dev *out, uint32_t max);

/* ---- scenarios ---- */
struct scenario {
	const char *name;
	/* Returns 0 on success. Prints its own TEST lines. May not return. */
	int (*run)(void);
	const char *help;
};
int scenario_hello(void);
int scenario_smp(void);
int scenario_counter(void);
int scenario_dirty(void);
int scenario_fault(void);
int scenario_exception(void);
int scenario_cad(void);
int scenario_blk_read(void);
int scenario_blk_write(void);
int scenario_blk_ro(void);
int scenario_blk_flush(void);
int scenario_blk_throughput(void);
int scenario_blk_patch(void);
int scenario_rng(void);
int scenario_acpi(void);
int scenario_cpuid(void);
/* scenarios/cpuid.c: FNV-1a over the fixed CPUID leaves, APIC-id fields masked (same on every vCPU). */
uint64_t cpuid_fingerprint(void);
int scenario_balloon(void);
int scenario_pmem(void);
int scenario_mem(void);
int scenario_vsock_listen(void);
int scenario_vsock_connect(void);
int scenario_vsock_throughput(void);
int scenario_net_tx(void);
int scenario_net_echo(void);
int scenario_net_throughput(void);
int scenario_mmds(void);

extern const char *g_scenario_name;

#endif
