// SPDX-License-Identifier: Apache-2.0
/*
 * fc-boot: a tiny /dev/kvm loader that boots squib-test-guest the way
 * Firecracker does on x86_64, so the guest's Linux 64-bit boot path (the
 * default artifact) can be tested without Firecracker or squib.
 *
 *   fc-boot [-m MiB] [-c vcpus] [-t timeout_s] [--pvh] ELF "cmdline"
 *
 * Layout (Firecracker arch/x86_64): GDT 0x500, IDT 0x520, PVH start_info 0x6000,
 * zero page 0x7000 (PVH: memmap there), stack 0x8FF0, page tables 0x9000-0xBFFF
 * (1 GiB identity, 2 MiB pages), command line 0x20000, MP table 0x9FC00,
 * ACPI RSDP 0xE0000 (-> XSDT -> MADT only), RAM from 1 MiB, boot timer 0xC0000000. In-kernel irqchip + PIT; APs wait for
 * INIT/SIPI. COM1 output goes to stdout; "Guest-boot-time" and exit reasons to
 * stderr.
 *
 * Exit status: 0 i8042 reset, 3 shutdown (triple fault), 4 KVM internal error,
 * 5 other unexpected exit, 124 timeout, 1 setup error.
 *
 * A test tool only: no virtio, no DSDT/FADT, serial is write-only (LSR always ready).
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GDT_ADDR 0x500
#define IDT_ADDR 0x520
#define PVH_INFO_ADDR 0x6000
#define ZERO_PAGE_ADDR 0x7000
#define BOOT_STACK 0x8FF0
#define PML4_ADDR 0x9000
#define PDPT_ADDR 0xA000
#define PD_ADDR 0xB000
#define CMDLINE_ADDR 0x20000
#define CMDLINE_MAX 2048
#define EBDA_START 0x9FC00
#define XSDT_ADDR 0xA0000
#define MADT_ADDR 0xA0100
#define RSDP_ADDR 0xE0000
#define HIMEM_START 0x100000
#define MMIO_GAP 0xC0000000ULL
#define BOOT_TIMER 0xC0000000ULL
#define TSS_ADDR 0xFFFBD000ULL
#define MAX_VCPUS 32

static uint8_t *mem;
static uint64_t mem_size;
static int vm_fd, kvm_fd;
static int nr_vcpus = 1;
static struct timespec t_start;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fc-boot: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "%s%s\n", errno ? ": " : "", errno ? strerror(errno) : "");
	va_end(ap);
	exit(1);
}

static uint64_t elapsed_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	int64_t ns = (int64_t)(t.tv_sec - t_start.tv_sec) * 1000000000 + (t.tv_nsec - t_start.tv_nsec);
	return (uint64_t)ns / 1000;
}

static void finish(int status, const char *why)
{
	pthread_mutex_lock(&out_lock);
	fflush(stdout);
	fprintf(stderr, "fc-boot: exit %d: %s (after %llu us)\n", status, why, (unsigned long long)elapsed_us());
	_exit(status);
}

static void *gpa(uint64_t a) { return mem + a; }
static void w8(uint64_t a, uint8_t v) { mem[a] = v; }
static void w16(uint64_t a, uint16_t v) { memcpy(mem + a, &v, 2); }
static void w32(uint64_t a, uint32_t v) { memcpy(mem + a, &v, 4); }
static void w64(uint64_t a, uint64_t v) { memcpy(mem + a, &v, 8); }

static uint8_t csum(uint64_t a, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += mem[a + i];
	return (uint8_t)-s;
}

/* ---- ELF ---- */
static uint64_t load_elf(const char *path, uint64_t *pvh_entry)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open %s", path);
	struct stat st;
	fstat(fd, &st);
	uint8_t *f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f == MAP_FAILED)
		die("mmap %s", path);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_phentsize != sizeof(Elf64_Phdr) ||
	    eh->e_phoff < sizeof(Elf64_Ehdr))
		die("%s: not a loadable ELF64", path);
	if (eh->e_entry < HIMEM_START)
		die("entry %#lx below 1 MiB", eh->e_entry);
	*pvh_entry = 0;
	for (int i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(f + eh->e_phoff + i * sizeof(Elf64_Phdr));
		if (ph->p_type == PT_NOTE) {
			uint64_t off = ph->p_offset, end = ph->p_offset + ph->p_filesz;
			while (off + sizeof(Elf64_Nhdr) <= end) {
				Elf64_Nhdr *nh = (Elf64_Nhdr *)(f + off);
				const char *name = (const char *)(nh + 1);
				uint64_t desc = off + sizeof(*nh) + ((nh->n_namesz + 3) & ~3u);
				if (nh->n_type == 18 && nh->n_namesz == 4 && !memcmp(name, "Xen", 4) && nh->n_descsz >= 4)
					*pvh_entry = *(uint32_t *)(f + desc);
				off = desc + ((nh->n_descsz + 3) & ~3u);
			}
		}
		if (ph->p_type != PT_LOAD || ph->p_filesz == 0)
			continue;
		if (ph->p_paddr < HIMEM_START || ph->p_paddr + ph->p_memsz > mem_size)
			die("PT_LOAD at %#lx+%#lx outside RAM above 1 MiB", ph->p_paddr, ph->p_memsz);
		memcpy(gpa(ph->p_paddr), f + ph->p_offset, ph->p_filesz);
	}
	uint64_t entry = eh->e_entry;
	munmap(f, st.st_size);
	close(fd);
	return entry;
}

/* ---- boot structures ---- */
static void e820_add(uint64_t table, uint32_t *n, uint32_t stride, uint64_t addr, uint64_t size, uint32_t type)
{
	uint64_t e = table + (uint64_t)*n * stride;
	w64(e, addr);
	w64(e + 8, size);
	w32(e + 16, type);
	(*n)++;
}

static void write_memmap(uint64_t table, uint32_t stride, uint32_t *n)
{
	*n = 0;
	e820_add(table, n, stride, 0, EBDA_START, 1);
	uint64_t top = mem_size < MMIO_GAP ? mem_size : MMIO_GAP;
	e820_add(table, n, stride, HIMEM_START, top - HIMEM_START, 1);
	if (mem_size > MMIO_GAP)
		e820_add(table, n, stride, 1ULL << 32, mem_size - MMIO_GAP, 1);
}

static void write_zero_page(uint32_t cmdline_size)
{
	uint64_t bp = ZERO_PAGE_ADDR;
	memset(gpa(bp), 0, 4096);
	w16(bp + 0x1FE, 0xAA55);
	w32(bp + 0x202, 0x53726448); /* "HdrS" */
	w8(bp + 0x210, 0xFF);         /* type_of_loader */
	w32(bp + 0x228, CMDLINE_ADDR);
	w32(bp + 0x230, 0x1000000);   /* kernel_alignment */
	w32(bp + 0x238, cmdline_size);
	w64(bp + 0x070, RSDP_ADDR);   /* acpi_rsdp_addr */
	uint32_t n;
	write_memmap(bp + 0x2D0, 20, &n);
	w8(bp + 0x1E8, (uint8_t)n);
}

static void write_pvh_info(void)
{
	uint64_t si = PVH_INFO_ADDR, map = ZERO_PAGE_ADDR;
	memset(gpa(si), 0, 0x40);
	uint32_t n;
	write_memmap(map, 24, &n);
	w32(si + 0x00, 0x336ec578);
	w32(si + 0x04, 1);
	w64(si + 0x18, CMDLINE_ADDR);
	w64(si + 0x20, RSDP_ADDR);
	w64(si + 0x28, map);
	w32(si + 0x30, n);
}

/* Intel MP table like Firecracker's: floating pointer + config table with one
 * processor entry per vCPU, an ISA bus and the IOAPIC. */
static void write_mptable(void)
{
	uint64_t fp = EBDA_START, cfg = fp + 16, p = cfg + 44;
	memset(gpa(fp), 0, 1024);
	for (int i = 0; i < nr_vcpus; i++, p += 20) {
		w8(p, 0);                    /* processor */
		w8(p + 1, (uint8_t)i);       /* APIC ID */
		w8(p + 2, 0x14);             /* APIC version */
		w8(p + 3, 1 | (i == 0 ? 2 : 0)); /* enabled, BSP */
		w32(p + 4, 0x600);           /* signature */
		w32(p + 8, 0x201);           /* features: FPU, APIC */
	}
	w8(p, 1); w8(p + 1, 0); memcpy(gpa(p + 2), "ISA   ", 6); p += 8;   /* bus */
	w8(p, 2); w8(p + 1, (uint8_t)nr_vcpus); w8(p + 2, 0x11); w8(p + 3, 1);
	w32(p + 4, 0xFEC00000); p += 8;                                    /* IOAPIC */
	uint16_t len = (uint16_t)(p - cfg);
	memcpy(gpa(cfg), "PCMP", 4);
	w16(cfg + 4, len);
	w8(cfg + 6, 4);
	memcpy(gpa(cfg + 8), "FC      ", 8);
	memcpy(gpa(cfg + 16), "000000000000", 12);
	w16(cfg + 34, (uint16_t)(nr_vcpus + 2));
	w32(cfg + 36, 0xFEE00000);
	w8(cfg + 7, csum(cfg, len));
	memcpy(gpa(fp), "_MP_", 4);
	w32(fp + 4, (uint32_t)cfg);
	w8(fp + 8, 1);
	w8(fp + 9, 4);
	w8(fp + 10, csum(fp, 16));
}

/* Minimal ACPI like Firecracker's: RSDP at 0xE0000 -> XSDT -> MADT with one
 * enabled local APIC per vCPU and the IOAPIC. (No DSDT/FADT: the guest only
 * reads the MADT.) */

static void sdt_header(uint64_t a, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(gpa(a), sig, 4);
	w32(a + 4, len);
	w8(a + 8, rev);
	memcpy(gpa(a + 10), "FCBOOT", 6);
	memcpy(gpa(a + 16), "FCBOOTTB", 8);
	w32(a + 24, 1);
	memcpy(gpa(a + 28), "FCBT", 4);
	w32(a + 32, 1);
	w8(a + 9, 0);
	w8(a + 9, csum(a, len));
}

static void write_acpi(void)
{
	uint64_t p = MADT_ADDR + 44;
	memset(gpa(MADT_ADDR), 0, 44 + 8 * MAX_VCPUS + 12);
	w32(MADT_ADDR + 36, 0xFEE00000);
	for (int i = 0; i < nr_vcpus; i++, p += 8) {
		w8(p, 0);
		w8(p + 1, 8);
		w8(p + 2, (uint8_t)i);
		w8(p + 3, (uint8_t)i);
		w32(p + 4, 1);
	}
	w8(p, 1); w8(p + 1, 12); w8(p + 2, (uint8_t)nr_vcpus); w32(p + 4, 0xFEC00000); w32(p + 8, 0);
	p += 12;
	sdt_header(MADT_ADDR, "APIC", (uint32_t)(p - MADT_ADDR), 6);
	memset(gpa(XSDT_ADDR), 0, 44);
	w64(XSDT_ADDR + 36, MADT_ADDR);
	sdt_header(XSDT_ADDR, "XSDT", 44, 1);
	memset(gpa(RSDP_ADDR), 0, 36);
	memcpy(gpa(RSDP_ADDR), "RSD PTR ", 8);
	memcpy(gpa(RSDP_ADDR + 9), "FCBOOT", 6);
	w8(RSDP_ADDR + 15, 2);
	w32(RSDP_ADDR + 20, 36);
	w64(RSDP_ADDR + 24, XSDT_ADDR);
	w8(RSDP_ADDR + 8, csum(RSDP_ADDR, 20));
	w8(RSDP_ADDR + 32, csum(RSDP_ADDR, 36));
}

static void write_gdt_and_page_tables(void)
{
	uint64_t gdt[4] = {
		0,
		0x00AF9B000000FFFFULL, /* 0x08 code, L=1 (Firecracker: gdt_entry(0xa09b, 0, 0xfffff)) */
		0x00CF93000000FFFFULL, /* 0x10 data */
		0x008F8B000000FFFFULL, /* 0x18 TSS */
	};
	memcpy(gpa(GDT_ADDR), gdt, sizeof(gdt));
	w64(IDT_ADDR, 0);
	memset(gpa(PML4_ADDR), 0, 0x3000);
	w64(PML4_ADDR, PDPT_ADDR | 3);
	w64(PDPT_ADDR, PD_ADDR | 3);
	for (uint64_t i = 0; i < 512; i++)
		w64(PD_ADDR + i * 8, (i << 21) | 0x83);
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xFFFFFFFF;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->l = code64;
	s->db = !code64;
}

/* ---- vCPUs ---- */
struct vcpu {
	int id, fd;
	struct kvm_run *run;
	pthread_t thread;
};
static struct vcpu vcpus[MAX_VCPUS];
static bool use_pvh;
static uint64_t entry_addr;

static void setup_cpuid(struct vcpu *v)
{
	int n = 256;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
	c->nent = n;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == 1) {
			e->ebx = (e->ebx & 0x0000FFFF) | ((uint32_t)nr_vcpus << 16) | ((uint32_t)v->id << 24);
			e->edx |= 1u << 28; /* HTT: logical processor count valid */
		}
		if (e->function == 0xB)
			e->edx = (uint32_t)v->id;
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		die("KVM_SET_CPUID2");
	free(c);
}

static void setup_lapic(struct vcpu *v)
{
	struct kvm_lapic_state l;
	if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
		die("KVM_GET_LAPIC");
	uint32_t *lint0 = (uint32_t *)(l.regs + 0x350), *lint1 = (uint32_t *)(l.regs + 0x360);
	*lint0 = (*lint0 & ~0x700u) | 0x700; /* ExtINT */
	*lint1 = (*lint1 & ~0x700u) | 0x400; /* NMI */
	if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0)
		die("KVM_SET_LAPIC");
}

static void setup_regs(struct vcpu *v)
{
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		die("KVM_GET_SREGS");
	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rflags = 2;
	r.rip = entry_addr;
	if (use_pvh) {
		seg(&s.cs, 0x08, 0xB, false);
		seg(&s.ds, 0x10, 0x3, false);
		s.es = s.fs = s.gs = s.ss = s.ds;
		s.cr0 = 0x11; /* PE | ET */
		s.cr4 = 0;
		s.efer = 0;
		r.rbx = PVH_INFO_ADDR;
	} else {
		seg(&s.cs, 0x08, 0xB, true);
		seg(&s.ds, 0x10, 0x3, false);
		s.es = s.fs = s.gs = s.ss = s.ds;
		s.cr3 = PML4_ADDR;
		s.cr4 |= 0x20;             /* PAE */
		s.cr0 |= 0x80000001;       /* PG | PE */
		s.efer |= 0x500;           /* LME | LMA */
		r.rsp = r.rbp = BOOT_STACK;
		r.rsi = ZERO_PAGE_ADDR;
	}
	s.gdt.base = GDT_ADDR;
	s.gdt.limit = 4 * 8 - 1;
	s.idt.base = IDT_ADDR;
	s.idt.limit = 7;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		die("KVM_SET_SREGS");
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		die("KVM_SET_REGS");
}

static void serial_out(uint8_t c)
{
	pthread_mutex_lock(&out_lock);
	fputc(c, stdout);
	if (c == '\n')
		fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static uint8_t serial_lcr;

static void handle_io(struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint16_t port = run->io.port;
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (run->io.direction == KVM_EXIT_IO_OUT) {
			if (port == 0x3FB)
				serial_lcr = data[0];
			else if (port == 0x3F8 && !(serial_lcr & 0x80)) /* THR unless DLAB */
				serial_out(data[0]);
			else if (port == 0x64 && data[0] == 0xFE)
				finish(0, "i8042 reset");
		} else {
			uint8_t v = 0xFF;
			if (port == 0x3FD)
				v = 0x60; /* THR empty, transmitter empty */
			else if (port == 0x3FB)
				v = serial_lcr;
			else if (port >= 0x3F8 && port < 0x400)
				v = 0;
			else if (port == 0x64 || port == 0x60)
				v = 0;
			memset(data, v, run->io.size);
		}
	}
}

static void handle_mmio(struct kvm_run *run)
{
	uint64_t a = run->mmio.phys_addr;
	if (run->mmio.is_write) {
		if (a == BOOT_TIMER && run->mmio.len == 1 && run->mmio.data[0] == 123) {
			uint64_t us = elapsed_us();
			pthread_mutex_lock(&out_lock);
			fprintf(stderr, "fc-boot: Guest-boot-time = %llu us %llu ms\n", (unsigned long long)us,
				(unsigned long long)us / 1000);
			pthread_mutex_unlock(&out_lock);
		}
	} else {
		memset(run->mmio.data, 0xFF, run->mmio.len);
	}
}

static void *vcpu_loop(void *arg)
{
	struct vcpu *v = arg;
	char why[160];
	for (;;) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(why, sizeof(why), "vcpu%d KVM_RUN: %s", v->id, strerror(errno));
			finish(5, why);
		}
		struct kvm_run *run = v->run;
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(run);
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(run);
			break;
		case KVM_EXIT_SHUTDOWN:
			snprintf(why, sizeof(why), "vcpu%d shutdown (triple fault)", v->id);
			finish(3, why);
			break;
		case KVM_EXIT_INTERNAL_ERROR: {
			int n = snprintf(why, sizeof(why), "vcpu%d internal error suberror=%u data:", v->id,
					 run->internal.suberror);
			for (uint32_t i = 0; i < run->internal.ndata && i < 6 && n < 140; i++)
				n += snprintf(why + n, sizeof(why) - n, " %#llx",
					      (unsigned long long)run->internal.data[i]);
			finish(4, why);
			break;
		}
		case KVM_EXIT_SYSTEM_EVENT:
			snprintf(why, sizeof(why), "vcpu%d system event %u", v->id, run->system_event.type);
			finish(run->system_event.type == KVM_SYSTEM_EVENT_CRASH ? 5 : 0, why);
			break;
		default:
			snprintf(why, sizeof(why), "vcpu%d unexpected exit %u", v->id, run->exit_reason);
			finish(5, why);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t mib = 128;
	int timeout = 30;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-m") && i + 1 < argc)
			mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-c") && i + 1 < argc)
			nr_vcpus = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-t") && i + 1 < argc)
			timeout = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--pvh"))
			use_pvh = true;
		else
			break;
	}
	if (argc - i != 2 || nr_vcpus < 1 || nr_vcpus > MAX_VCPUS || mib < 32 || mib > 3072) {
		fprintf(stderr, "usage: fc-boot [-m MiB(32..3072)] [-c vcpus(1..%d)] [-t timeout_s] [--pvh] ELF CMDLINE\n",
			MAX_VCPUS);
		return 1;
	}
	const char *elf = argv[i], *cmdline = argv[i + 1];
	if (strlen(cmdline) + 1 > CMDLINE_MAX)
		die("command line longer than %d bytes", CMDLINE_MAX - 1);
	clock_gettime(CLOCK_MONOTONIC, &t_start);

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		die("open /dev/kvm");
	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm_fd, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR) < 0)
		die("KVM_SET_TSS_ADDR");
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		die("KVM_CREATE_PIT2");

	mem_size = mib << 20;
	mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap guest memory");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");

	uint64_t pvh_entry;
	entry_addr = load_elf(elf, &pvh_entry);
	if (use_pvh) {
		if (!pvh_entry)
			die("--pvh: %s has no XEN_ELFNOTE_PHYS32_ENTRY note", elf);
		entry_addr = pvh_entry;
	} else if (pvh_entry) {
		fprintf(stderr, "fc-boot: note: %s has a PVH note; Firecracker would boot it with PVH (use --pvh)\n", elf);
	}
	memcpy(gpa(CMDLINE_ADDR), cmdline, strlen(cmdline) + 1);
	write_gdt_and_page_tables();
	if (use_pvh)
		write_pvh_info();
	else
		write_zero_page((uint32_t)strlen(cmdline) + 1);
	write_mptable();
	write_acpi();
	fprintf(stderr, "fc-boot: %s protocol, entry %#llx, %d vCPU(s), %llu MiB\n",
		use_pvh ? "PVH" : "Linux 64-bit", (unsigned long long)entry_addr, nr_vcpus,
		(unsigned long long)mib);

	int run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	for (int c = 0; c < nr_vcpus; c++) {
		struct vcpu *v = &vcpus[c];
		v->id = c;
		v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, c);
		if (v->fd < 0)
			die("KVM_CREATE_VCPU %d", c);
		v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (v->run == MAP_FAILED)
			die("mmap kvm_run");
		setup_cpuid(v);
		setup_lapic(v);
		setup_regs(v); /* APs: overwritten by INIT/SIPI, as in Firecracker */
	}
	for (int c = 0; c < nr_vcpus; c++)
		pthread_create(&vcpus[c].thread, NULL, vcpu_loop, &vcpus[c]);

	sleep((unsigned)timeout);
	finish(124, "timeout");
	return 124;
}
