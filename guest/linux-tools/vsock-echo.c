/*
 * vsock-echo: a tiny AF_VSOCK helper for squib's Linux-guest tests (static, no libc extras).
 *
 *   vsock-echo listen PORT [COUNT]      accept COUNT connections (0 = forever) one after the
 *                                       other, echo each until EOF
 *   vsock-echo sink PORT BYTES          accept one connection, read BYTES bytes (or to EOF),
 *                                       answer "GOT <n>\n"
 *   vsock-echo connect CID PORT [COUNT] COUNT times (default 1): connect, send
 *                                       "hello <i> from guest\n", read one line back; prints the
 *                                       first reply and the connect() latency (guest clock)
 *   vsock-echo source CID PORT BYTES    connect, send BYTES pattern bytes, print the one-line
 *                                       answer (the peer knows BYTES: Firecracker's hybrid vsock
 *                                       turns a host half-close into a full one and never passes
 *                                       a guest half-close on, so no protocol here relies on it)
 *   vsock-echo touch MIB [SECONDS]      map MIB MiB, write every page 1 MiB at a time
 *                                       (MADV_POPULATE_WRITE, else one store per page; stop after
 *                                       SECONDS), unmap: the memory is resident on the host and
 *                                       free in the guest (for balloon tests); prints how much
 *
 * Every result line starts with "VSOCK-ECHO " so that a test can find it on a busy console.
 * Built by guest/linux-tools/build.sh with `gcc -static`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static void die(const char *what)
{
	printf("VSOCK-ECHO ERROR %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static unsigned long parse(const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || end == s) {
		printf("VSOCK-ECHO ERROR bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads one '\n'-terminated line (at most cap-1 bytes) into buf; returns its length or -1. */
static ssize_t read_line(int fd, char *buf, size_t cap)
{
	size_t len = 0;

	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (buf[len++] == '\n')
			break;
	}
	buf[len] = 0;
	return len ? (ssize_t)len : -1;
}

static int listener(unsigned long port)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				 .svm_port = (unsigned int)port };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(fd, 16) < 0)
		die("listen");
	printf("VSOCK-ECHO LISTENING %lu\n", port);
	fflush(stdout);
	return fd;
}

static int connect_to(unsigned long cid, unsigned long port)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = (unsigned int)cid,
				 .svm_port = (unsigned int)port };
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return fd;
}

static char buf[64 * 1024];

static int do_listen(unsigned long port, unsigned long count)
{
	int lfd = listener(port);
	unsigned long served = 0;

	while (count == 0 || served < count) {
		unsigned long long total = 0;
		int c = accept(lfd, NULL, NULL);
		ssize_t n;

		if (c < 0) {
			if (errno == EINTR)
				continue;
			die("accept");
		}
		while ((n = read(c, buf, sizeof(buf))) != 0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (write_all(c, buf, (size_t)n) < 0)
				break;
			total += (unsigned long long)n;
		}
		close(c);
		served++;
		if (count)
			printf("VSOCK-ECHO ECHOED %llu\n", total);
	}
	printf("VSOCK-ECHO SERVED %lu\n", served);
	return 0;
}

static int do_sink(unsigned long port, unsigned long long want)
{
	int lfd = listener(port);
	int c;
	unsigned long long total = 0;
	ssize_t n;
	char line[64];

	while ((c = accept(lfd, NULL, NULL)) < 0)
		if (errno != EINTR)
			die("accept");
	while (total < want && (n = read(c, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		total += (unsigned long long)n;
	}
	snprintf(line, sizeof(line), "GOT %llu\n", total);
	if (write_all(c, line, strlen(line)) < 0)
		die("write");
	close(c);
	printf("VSOCK-ECHO SANK %llu\n", total);
	return 0;
}

static int do_connect(unsigned long cid, unsigned long port, unsigned long count)
{
	double min = 1e18, max = 0, sum = 0;
	char line[256], reply[256] = "";
	unsigned long i;

	for (i = 0; i < count; i++) {
		double t0 = now_us(), dt;
		int fd = connect_to(cid, port);

		dt = now_us() - t0;
		sum += dt;
		if (dt < min)
			min = dt;
		if (dt > max)
			max = dt;
		snprintf(line, sizeof(line), "hello %lu from guest\n", i);
		if (write_all(fd, line, strlen(line)) < 0)
			die("write");
		if (read_line(fd, i ? line : reply, sizeof(line)) < 0)
			die("read reply");
		close(fd);
	}
	reply[strcspn(reply, "\n")] = 0;
	printf("VSOCK-ECHO REPLY %s\n", reply);
	printf("VSOCK-ECHO CONNECT-US n=%lu min=%.0f avg=%.0f max=%.0f\n", count, min,
	       sum / (double)count, max);
	return 0;
}

static int do_source(unsigned long cid, unsigned long port, unsigned long bytes)
{
	int fd = connect_to(cid, port);
	unsigned long left = bytes, i;
	double t0 = now_us(), dt;
	char line[128];

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i % 251);
	while (left) {
		size_t n = left < sizeof(buf) ? left : sizeof(buf);

		if (write_all(fd, buf, n) < 0)
			die("write");
		left -= n;
	}
	if (read_line(fd, line, sizeof(line)) < 0)
		die("read answer");
	dt = now_us() - t0;
	line[strcspn(line, "\n")] = 0;
	printf("VSOCK-ECHO SOURCE sent=%lu answer=%s guest_us=%.0f\n", bytes, line, dt);
	close(fd);
	return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int do_touch(unsigned long mib, unsigned long seconds)
{
	size_t len = (size_t)mib << 20, off, done = 0;
	double t0 = now_us();
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	const char *how = "populate";

	if (p == MAP_FAILED)
		die("mmap");
	/* 1 MiB at a time, so that a time limit can stop it (first touches are slow under PVM). */
	for (off = 0; off < len; off += 1 << 20) {
		if (seconds && now_us() - t0 > seconds * 1e6)
			break;
		if (madvise(p + off, 1 << 20, MADV_POPULATE_WRITE) < 0) {
			size_t pg;

			if (errno != EINVAL)
				die("madvise");
			how = "stores";
			for (pg = 0; pg < (1 << 20); pg += 4096)
				p[off + pg] = 1;
		}
		done += 1 << 20;
	}
	munmap(p, len);
	printf("VSOCK-ECHO TOUCHED mib=%zu of=%lu how=%s guest_us=%.0f\n", done >> 20, mib, how,
	       now_us() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "listen"))
		return do_listen(parse(argv[2]), argc > 3 ? parse(argv[3]) : 0);
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return do_sink(parse(argv[2]), parse(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return do_connect(parse(argv[2]), parse(argv[3]), argc > 4 ? parse(argv[4]) : 1);
	if (argc == 5 && !strcmp(argv[1], "source"))
		return do_source(parse(argv[2]), parse(argv[3]), parse(argv[4]));
	if (argc >= 3 && !strcmp(argv[1], "touch"))
		return do_touch(parse(argv[2]), argc > 3 ? parse(argv[3]) : 0);
	fprintf(stderr, "usage: vsock-echo listen PORT [COUNT] | sink PORT BYTES | "
			"connect CID PORT [COUNT] | source CID PORT BYTES | touch MIB [SECONDS]\n");
	return 2;
}
