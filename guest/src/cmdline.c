/* SPDX-License-Identifier: Apache-2.0 */
/* Kernel command line: whitespace-separated tokens, `key=value`. No quoting. */
#include "guest.h"

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

const char *cmdline_next(const char *cmdline, const char *key, size_t *pos, size_t *len)
{
	size_t klen = strlen(key);
	size_t i = *pos;
	while (cmdline[i]) {
		while (is_space(cmdline[i]))
			i++;
		size_t start = i;
		while (cmdline[i] && !is_space(cmdline[i]))
			i++;
		size_t tlen = i - start;
		if (tlen > klen && cmdline[start + klen] == '=' &&
		    strncmp(cmdline + start, key, klen) == 0) {
			*pos = i;
			*len = tlen - klen - 1;
			return cmdline + start + klen + 1;
		}
	}
	*pos = i;
	return NULL;
}

const char *cmdline_get(const char *cmdline, const char *key, size_t *len)
{
	size_t pos = 0;
	return cmdline_next(cmdline, key, &pos, len);
}

uint64_t cmdline_get_u64(const char *cmdline, const char *key, uint64_t def)
{
	size_t len;
	const char *v = cmdline_get(cmdline, key, &len);
	if (!v || !len)
		return def;
	const char *end;
	uint64_t x = strtou64(v, &end, 0);
	return end == v + len ? x : def;
}
