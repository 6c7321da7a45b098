/*
 * cfg.c - read the libconfig file into one struct cfg, checking every key.
 *
 * Each group is described by a table of keys (name, kind, where the value
 * goes, allowed range).  One walker checks a group against its table, so an
 * unknown key, a wrong type or an out-of-range value is reported the same
 * way everywhere; rules that span keys (tls files readable, listeners
 * unique, imaps needing tls) run after the walk.  An error is counted, not
 * fatal: loading goes on so that one run of `onebox check` shows them all.
 */
#include "server/cfg.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <libconfig.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define TIB ((uint64_t)1 << 40)
#define MINUTE 60u
#define HOUR (60u * MINUTE)
#define DAY (24u * HOUR)

/* TLS 1.2 is the floor (DESIGN.md section 3). */
#define DEFAULT_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Choice keys are written as an int into an enum field: make sure that is
 * the enum's size, and that the uint32_t retention can take an unsigned. */
_Static_assert(sizeof(enum cfg_proto) == sizeof(int), "enum size");
_Static_assert(sizeof(enum pop3_delete_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum pop3_uidl_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_over_quota) == sizeof(int), "enum size");
_Static_assert(sizeof(enum imap_nonsync_literals) == sizeof(int), "enum size");
_Static_assert(_Generic((uint32_t)0, unsigned: 1, default: 0), "uint32_t is unsigned");

/* ------------------------------------------------------------ errors */

struct loader {
	const char *file;     /* as given, for messages */
	char *dir;            /* absolute directory holding the file */
	FILE *errf;
	int errors;
	struct cfg *c;
	const config_setting_t *tls;     /* the tls group, if any */
	const config_setting_t *listen;  /* the listen list, if any */
};

/* libconfig names an @include file as written; it was found relative to
 * the config directory, so that is what a message must prefix. */
static const char *include_dir(const struct loader *ld, const char *file)
{
	return file[0] != '/' && strcmp(file, ld->file) != 0 ? ld->dir : "";
}

/* "FILE:LINE: message".  A setting without a line (the root, some list
 * elements) borrows the nearest ancestor's; the file may be an @include. */
static void __attribute__((format(printf, 3, 4)))
err(struct loader *ld, const config_setting_t *s, const char *fmt, ...)
{
	const char *file = ld->file;
	unsigned line = 0;
	for (const config_setting_t *p = s; p && !line; p = config_setting_parent(p)) {
		line = config_setting_source_line(p);
		if (line && config_setting_source_file(p))
			file = config_setting_source_file(p);
	}
	fprintf(ld->errf, "%s%s%s:%u: ", include_dir(ld, file), *include_dir(ld, file) ? "/" : "",
	        file, line ? line : 1);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(ld->errf, fmt, ap);
	va_end(ap);
	fputc('\n', ld->errf);
	ld->errors++;
}

static char *dup_str(struct loader *ld, const config_setting_t *s, const char *v)
{
	char *d = strdup(v);
	if (!d)
		err(ld, s, "out of memory");
	return d;
}

/* ------------------------------------------------------------- paths */

/*
 * DIR joined with P (P alone when absolute), with "", "." and ".."
 * components resolved by name, like `realpath -s`: the file need not exist.
 * Returns a malloc'd absolute path, or NULL when out of memory.
 */
static char *path_resolve(const char *dir, const char *p)
{
	size_t n = strlen(dir) + strlen(p) + 3;
	char *in = malloc(n), *out = malloc(n);
	if (!in || !out) {
		free(in);
		free(out);
		return NULL;
	}
	snprintf(in, n, "%s/%s", p[0] == '/' ? "" : dir, p);
	size_t o = 0;
	for (const char *q = in; *q;) {
		while (*q == '/')
			q++;
		size_t len = strcspn(q, "/");
		if (len == 0)
			break;
		if (len == 1 && q[0] == '.') {
			/* nothing */
		} else if (len == 2 && q[0] == '.' && q[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			out[o++] = '/';
			memcpy(out + o, q, len);
			o += len;
		}
		q += len;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	free(in);
	return out;
}

/* The directory that will hold PATH (absolute, normalised) must exist. */
static bool parent_is_dir(struct loader *ld, const config_setting_t *s,
                          const char *label, const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash == path ? 1 : (size_t)(slash - path);
	char *parent = strndup(path, len);
	if (!parent) {
		err(ld, s, "out of memory");
		return false;
	}
	struct stat st;
	bool ok = true;
	if (stat(parent, &st) != 0) {
		err(ld, s, "%s %s: directory %s: %s", label, path, parent, strerror(errno));
		ok = false;
	} else if (!S_ISDIR(st.st_mode)) {
		err(ld, s, "%s %s: %s is not a directory", label, path, parent);
		ok = false;
	}
	free(parent);
	return ok;
}

/* --------------------------------------------------- numbers and units */

struct unit {
	char suffix;
	uint64_t mult;
};

/* Largest first, for printing. */
static const struct unit size_units[] = {
	{'T', TIB}, {'G', GIB}, {'M', MIB}, {'K', KIB}, {0, 0},
};
static const struct unit time_units[] = {
	{'d', DAY}, {'h', HOUR}, {'m', MINUTE}, {'s', 1}, {0, 0},
};

/* "50M", "30m", "4096": digits, then at most one suffix from UNITS (sizes
 * take either case).  False on anything else, or on overflow. */
static bool parse_units(const char *s, const struct unit *units, bool anycase, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '\0') {
		*out = v;
		return true;
	}
	if (p[1] != '\0')
		return false;
	for (const struct unit *u = units; u->suffix; u++) {
		bool match = *p == u->suffix ||
		             (anycase && (*p | 0x20) == (u->suffix | 0x20));
		if (!match)
			continue;
		if (v > UINT64_MAX / u->mult)
			return false;
		*out = v * u->mult;
		return true;
	}
	return false;
}

/* V with the largest unit that divides it: 1073741824 -> "1G", 1800 -> "30m". */
static void format_units(char *buf, size_t size, uint64_t v, const struct unit *units)
{
	for (const struct unit *u = units; units && u->suffix && v; u++) {
		if (u->mult > 1 && v % u->mult == 0) {
			snprintf(buf, size, "%llu%c", (unsigned long long)(v / u->mult), u->suffix);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

/* --------------------------------------------------------- key tables */

enum key_kind {
	KEY_STRING,   /* char *; CHOICES, if set, lists the accepted values */
	KEY_PATH,     /* char *, resolved against the config directory */
	KEY_BOOL,     /* bool */
	KEY_COUNT,    /* unsigned; a plain integer */
	KEY_PORT,     /* int; a plain integer */
	KEY_SIZE,     /* size_t; integer bytes or "50M" */
	KEY_SECONDS,  /* unsigned; integer seconds or "30m" */
	KEY_MILLIS,   /* unsigned milliseconds; integer seconds, or "250ms", "2s", "1m" */
	KEY_CHOICE,   /* an enum field, written as the index into CHOICES */
	KEY_GROUP,    /* a { } group, handled by LOAD */
	KEY_LIST,     /* a ( ) list, handled by LOAD */
};

struct key {
	const char *name;
	enum key_kind kind;
	size_t off;                  /* offset of the field in the target */
	uint64_t min, max;           /* numbers: inclusive range */
	const char *const *choices;  /* NULL-terminated */
	bool required;
	const char *why;             /* appended to a range error */
	void (*load)(struct loader *ld, const config_setting_t *s);
};

#define CFG(field) offsetof(struct cfg, field)

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const proto_names[] = {
	[CFG_IMAP] = "imap", [CFG_IMAPS] = "imaps", [CFG_POP3] = "pop3",
	[CFG_POP3S] = "pop3s", [CFG_LMTP] = "lmtp", NULL,
};
static const char *const delete_modes[] = {
	[POP3_DELETE_EXPUNGE] = "expunge", [POP3_DELETE_FLAG] = "flag",
	[POP3_DELETE_TRASH] = "trash", NULL,
};
static const char *const over_quota_answers[] = {
	[CFG_OVER_QUOTA_PERMANENT] = "permanent", [CFG_OVER_QUOTA_TEMPORARY] = "temporary", NULL,
};
static const char *const uidl_formats[] = {
	[POP3_UIDL_DOVECOT] = "dovecot", [POP3_UIDL_CYRUS] = "cyrus",
	[POP3_UIDL_COURIER] = "courier", [POP3_UIDL_UW] = "uw", NULL,
};
static const char *const nonsync_literals[] = {
	[IMAP_NONSYNC_PLUS] = "plus", [IMAP_NONSYNC_MINUS] = "minus",
	[IMAP_NONSYNC_OFF] = "off", NULL,
};

static void choices_text(char *buf, size_t size, const char *const *choices)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; choices[i] && o < size; i++) {
		int n = snprintf(buf + o, size - o, "%s\"%s\"", i ? (choices[i + 1] ? ", " : " or ") : "",
		                 choices[i]);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

static int choice_index(const char *const *choices, const char *v)
{
	for (int i = 0; choices[i]; i++)
		if (strcmp(choices[i], v) == 0)
			return i;
	return -1;
}

static const char *kind_text(enum key_kind kind)
{
	switch (kind) {
	case KEY_STRING: return "a string";
	case KEY_PATH: return "a string (a file name)";
	case KEY_BOOL: return "a boolean (true or false)";
	case KEY_COUNT:
	case KEY_PORT: return "an integer";
	case KEY_SIZE: return "a size: an integer number of bytes, or a string like \"50M\" (K, M, G, T)";
	case KEY_SECONDS: return "a duration: an integer number of seconds, or a string like \"30m\" (s, m, h, d)";
	case KEY_MILLIS: return "a duration: an integer number of seconds, or a string like \"250ms\" or \"2s\" (ms, s, m, h)";
	case KEY_CHOICE: return "a string";
	case KEY_GROUP: return "a group: { ... }";
	case KEY_LIST: return "a list: ( { ... }, ... )";
	}
	return "?";
}

/*
 * libconfig 1.5 reads an integer written without the L suffix with atoi():
 * 5368709120 silently becomes 1073741824.  Look for the literal after the
 * key's name on the setting's line and read it again; true with the value
 * written in *WRITTEN when it differs from what libconfig kept.
 */
static bool int_truncated(struct loader *ld, const config_setting_t *s, long long kept,
                          long long *written)
{
	const char *file = config_setting_source_file(s) ? config_setting_source_file(s) : ld->file;
	const char *name = config_setting_name(s);
	unsigned line = config_setting_source_line(s);
	if (!name || !line)
		return false;
	char path[PATH_MAX];
	const char *dir = include_dir(ld, file);
	snprintf(path, sizeof path, "%s%s%s", dir, *dir ? "/" : "", file);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char *buf = NULL;
	size_t cap = 0;
	ssize_t got = 0;
	for (unsigned i = 0; i < line && got >= 0; i++)
		got = getline(&buf, &cap, f);
	fclose(f);
	/* Several settings of this name may share the line (listen entries):
	 * the literal that is this one's is the one that truncates to KEPT. */
	bool exact = false, truncated = false;
	size_t nlen = strlen(name);
	for (const char *p = got >= 0 ? buf : NULL; p && (p = strstr(p, name)); p += nlen) {
		if (p > buf && (isalnum((unsigned char)p[-1]) || strchr("_-*", p[-1])))
			continue;
		const char *q = p + nlen;
		q += strspn(q, " \t");
		if (*q != '=' && *q != ':')
			continue;
		q++;
		q += strspn(q, " \t");
		const char *digits = q + (*q == '-' || *q == '+');
		int base = digits[0] == '0' && (digits[1] | 0x20) == 'x' ? 16 : 10;
		char *end;
		errno = 0;
		long long v = strtoll(q, &end, base);
		if (end == q || *end == 'L' || *end == 'l' || errno == ERANGE)
			continue;
		if (v == kept) {
			exact = true;
		} else if ((int32_t)(uint32_t)(unsigned long long)v == kept) {
			*written = v;
			truncated = true;
		}
	}
	free(buf);
	return truncated && !exact;
}

/* "250ms": digits then "ms", into *OUT as milliseconds. */
static bool parse_millis(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	char num[24];
	if (n < 3 || n - 2 >= sizeof num || strcmp(s + n - 2, "ms") != 0)
		return false;
	memcpy(num, s, n - 2);
	num[n - 2] = '\0';
	return parse_units(num, NULL, false, out);
}

/* A number-valued key (count, port, size, seconds, milliseconds) into *OUT;
 * false after reporting why not. */
static bool get_number(struct loader *ld, const config_setting_t *s, const char *label,
                       const struct key *k, uint64_t *out)
{
	const struct unit *units = k->kind == KEY_SIZE ? size_units :
	                           k->kind == KEY_SECONDS || k->kind == KEY_MILLIS ? time_units : NULL;
	char shown[64];
	uint64_t v;
	int type = config_setting_type(s);
	if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
		long long n = config_setting_get_int64(s), written;
		if (type == CONFIG_TYPE_INT && int_truncated(ld, s, n, &written)) {
			if (written >= 0 && (uint64_t)written >= k->min && (uint64_t)written <= k->max) {
				char unit[32], alt[40] = "";
				if (units) {
					format_units(unit, sizeof unit, (uint64_t)written, units);
					if (!isdigit((unsigned char)unit[strlen(unit) - 1]))
						snprintf(alt, sizeof alt, " or \"%s\"", unit);
				}
				err(ld, s, "%s %lld is too large for a plain integer: write %lldL%s",
				    label, written, written, alt);
				return false;
			}
			n = written;
		}
		if (n < 0) {
			err(ld, s, "%s must not be negative (%lld)", label, n);
			return false;
		}
		v = (uint64_t)n;
		snprintf(shown, sizeof shown, "%lld", n);
		if (k->kind == KEY_MILLIS)
			v = v > UINT64_MAX / 1000 ? UINT64_MAX : v * 1000;
	} else if (type == CONFIG_TYPE_STRING && units) {
		const char *str = config_setting_get_string(s);
		if (!(k->kind == KEY_MILLIS && parse_millis(str, &v)) &&
		    !parse_units(str, units, k->kind == KEY_SIZE, &v)) {
			err(ld, s, "%s \"%s\" is not %s", label, str, kind_text(k->kind));
			return false;
		}
		snprintf(shown, sizeof shown, "%s", str);
		if (k->kind == KEY_MILLIS && !parse_millis(str, &v))
			v = v > UINT64_MAX / 1000 ? UINT64_MAX : v * 1000;
	} else {
		err(ld, s, "%s must be %s", label, kind_text(k->kind));
		return false;
	}
	if (v < k->min || v > k->max) {
		char lo[32], hi[32];
		if (k->kind == KEY_MILLIS) {
			snprintf(lo, sizeof lo, "%llums", (unsigned long long)k->min);
			snprintf(hi, sizeof hi, "%llums", (unsigned long long)k->max);
		} else {
			format_units(lo, sizeof lo, k->min, units);
			format_units(hi, sizeof hi, k->max, units);
		}
		err(ld, s, "%s %s is out of range %s-%s%s%s", label, shown, lo, hi,
		    k->why ? ": " : "", k->why ? k->why : "");
		return false;
	}
	*out = v;
	return true;
}

/* Check one scalar setting S against key K and store it at BASE + K->off. */
static void load_value(struct loader *ld, const config_setting_t *s, const char *label,
                       const struct key *k, char *base)
{
	void *dst = base + k->off;
	int type = config_setting_type(s);
	uint64_t v;
	char list[128];

	switch (k->kind) {
	case KEY_STRING:
	case KEY_PATH:
	case KEY_CHOICE: {
		if (k->choices)
			choices_text(list, sizeof list, k->choices);
		if (type != CONFIG_TYPE_STRING) {
			if (k->choices)
				err(ld, s, "%s must be one of %s", label, list);
			else
				err(ld, s, "%s must be %s", label, kind_text(k->kind));
			return;
		}
		const char *str = config_setting_get_string(s);
		if (!*str) {
			err(ld, s, "%s must not be empty", label);
			return;
		}
		int idx = k->choices ? choice_index(k->choices, str) : 0;
		if (idx < 0) {
			err(ld, s, "%s \"%s\" is not one of %s", label, str, list);
			return;
		}
		if (k->kind == KEY_CHOICE) {
			*(int *)dst = idx;
			return;
		}
		char **sp = dst;
		free(*sp);
		*sp = k->kind == KEY_PATH ? path_resolve(ld->dir, str) : dup_str(ld, s, str);
		if (!*sp && k->kind == KEY_PATH)
			err(ld, s, "out of memory");
		return;
	}
	case KEY_BOOL:
		if (type != CONFIG_TYPE_BOOL) {
			err(ld, s, "%s must be %s", label, kind_text(k->kind));
			return;
		}
		*(bool *)dst = config_setting_get_bool(s) != 0;
		return;
	case KEY_COUNT:
	case KEY_SECONDS:
	case KEY_MILLIS:
		if (get_number(ld, s, label, k, &v))
			*(unsigned *)dst = (unsigned)v;
		return;
	case KEY_PORT:
		if (get_number(ld, s, label, k, &v))
			*(int *)dst = (int)v;
		return;
	case KEY_SIZE:
		if (get_number(ld, s, label, k, &v))
			*(size_t *)dst = (size_t)v;
		return;
	case KEY_GROUP:
	case KEY_LIST:
		if (type != (k->kind == KEY_GROUP ? CONFIG_TYPE_GROUP : CONFIG_TYPE_LIST)) {
			err(ld, s, "%s must be %s", label, kind_text(k->kind));
			return;
		}
		k->load(ld, s);
		return;
	}
}

/*
 * Walk group GRP: every member must be in KEYS, and is checked and stored
 * into BASE.  PREFIX names members in messages ("pop3." gives
 * "pop3.lock_session"); WHERE names the group ("group 'pop3'").
 */
static void load_group(struct loader *ld, const config_setting_t *grp, const char *prefix,
                       const char *where, const struct key *keys, void *base)
{
	int n = config_setting_length(grp);
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *name = config_setting_name(s);
		const struct key *k = keys;
		while (k->name && strcmp(k->name, name) != 0)
			k++;
		if (!k->name) {
			err(ld, s, "unknown key '%s' %s", name, where);
			continue;
		}
		char label[96];
		snprintf(label, sizeof label, "%s%s", prefix, name);
		load_value(ld, s, label, k, base);
	}
	for (const struct key *k = keys; k->name; k++)
		if (k->required && !config_setting_get_member(grp, k->name))
			err(ld, grp, "missing required %s '%s' %s", k->kind == KEY_GROUP ? "group" :
			    k->kind == KEY_LIST ? "list" : "key", k->name, where);
}

/* ------------------------------------------------------------- groups */

static const struct key storage_keys[] = {
	{.name = "path", .kind = KEY_PATH, .off = CFG(storage_path), .required = true},
	{.name = "map_size", .kind = KEY_SIZE, .off = CFG(storage_map_size),
	 .min = MIB, .max = 64 * TIB},
	{.name = "max_size", .kind = KEY_SIZE, .off = CFG(storage_max_size),
	 .min = 0, .max = 64 * TIB},
	{.name = "expunge_retention", .kind = KEY_SECONDS,
	 .off = CFG(storage_expunge_retention), .min = 0, .max = 365 * DAY},
	{0},
};

static void load_storage(struct loader *ld, const config_setting_t *s)
{
	struct cfg *c = ld->c;
	load_group(ld, s, "storage.", "in group 'storage'", storage_keys, c);

	const config_setting_t *ps = config_setting_get_member(s, "path");
	struct stat st;
	if (ps && c->storage_path) {
		/* The store creates the folder; only its parent must be there. */
		if (stat(c->storage_path, &st) == 0) {
			if (!S_ISDIR(st.st_mode))
				err(ld, ps, "storage.path %s is not a directory", c->storage_path);
		} else if (errno == ENOENT) {
			parent_is_dir(ld, ps, "storage.path", c->storage_path);
		} else {
			err(ld, ps, "storage.path %s: %s", c->storage_path, strerror(errno));
		}
	}
	const config_setting_t *ms = config_setting_get_member(s, "max_size");
	if (ms && c->storage_max_size && c->storage_max_size < c->storage_map_size) {
		char a[32], b[32];
		format_units(a, sizeof a, c->storage_max_size, size_units);
		format_units(b, sizeof b, c->storage_map_size, size_units);
		err(ld, ms, "storage.max_size %s is smaller than storage.map_size %s "
		    "(0 means no limit)", a, b);
	}
}

static const struct key tls_keys[] = {
	{.name = "certificate", .kind = KEY_PATH, .off = CFG(tls_certificate), .required = true},
	{.name = "key", .kind = KEY_PATH, .off = CFG(tls_key), .required = true},
	{.name = "priorities", .kind = KEY_STRING, .off = CFG(tls_priorities)},
	{0},
};

/* The daemon reads these at start and on SIGHUP, before and after dropping
 * privileges; say now if they are missing or unreadable. */
static void check_readable(struct loader *ld, const config_setting_t *grp, const char *key,
                           const char *path)
{
	const config_setting_t *s = config_setting_get_member(grp, key);
	if (!s || !path)
		return;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		err(ld, s, "tls.%s %s: %s", key, path, strerror(errno));
		return;
	}
	struct stat st;
	if (fstat(fd, &st) != 0)
		err(ld, s, "tls.%s %s: %s", key, path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		err(ld, s, "tls.%s %s is not a regular file", key, path);
	close(fd);
}

static void load_tls(struct loader *ld, const config_setting_t *s)
{
	struct cfg *c = ld->c;
	ld->tls = s;
	load_group(ld, s, "tls.", "in group 'tls'", tls_keys, c);
	check_readable(ld, s, "certificate", c->tls_certificate);
	check_readable(ld, s, "key", c->tls_key);

	const config_setting_t *ps = config_setting_get_member(s, "priorities");
	if (ps && c->tls_priorities) {
		gnutls_priority_t prio;
		const char *errpos = NULL;
		int rc = gnutls_priority_init(&prio, c->tls_priorities, &errpos);
		if (rc == GNUTLS_E_SUCCESS)
			gnutls_priority_deinit(prio);
		else
			err(ld, ps, "tls.priorities is not a valid GnuTLS priority string "
			    "(%s, at \"%s\")", gnutls_strerror(rc), errpos ? errpos : "");
	}
}

static const struct key auth_keys[] = {
	{.name = "allow_plaintext", .kind = KEY_BOOL, .off = CFG(proto.allow_plaintext)},
	{.name = "cache_ttl", .kind = KEY_SECONDS, .off = CFG(auth.cache_ttl), .min = 0, .max = DAY},
	{.name = "cache_size", .kind = KEY_COUNT, .off = CFG(auth.cache_size),
	 .min = 1, .max = 10000000},
	{.name = "scram_iterations", .kind = KEY_COUNT, .off = CFG(auth.scram_iterations),
	 .min = 4096, .max = 10000000,
	 .why = "RFC 7677 section 4 asks for at least 4096 iterations"},
	{.name = "fail_delay", .kind = KEY_MILLIS, .off = CFG(auth.fail_delay), .min = 0,
	 .max = 60 * 1000},
	{.name = "fail_delay_max", .kind = KEY_MILLIS, .off = CFG(auth.fail_delay_max), .min = 0,
	 .max = 10 * 60 * 1000},
	{.name = "fail_threshold", .kind = KEY_COUNT, .off = CFG(auth.fail_threshold),
	 .min = 0, .max = 1000000},
	{.name = "fail_window", .kind = KEY_SECONDS, .off = CFG(auth.fail_window),
	 .min = 1, .max = DAY},
	{.name = "fail_table_size", .kind = KEY_COUNT, .off = CFG(auth.fail_table_size),
	 .min = 16, .max = 10000000},
	{0},
};

static void load_auth(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "auth.", "in group 'auth'", auth_keys, ld->c);
	if (ld->c->auth.fail_delay_max < ld->c->auth.fail_delay)
		err(ld, s, "auth.fail_delay_max (%ums) must not be less than auth.fail_delay (%ums)",
		    ld->c->auth.fail_delay_max, ld->c->auth.fail_delay);
}

static const struct key pop3_keys[] = {
	{.name = "delete_mode", .kind = KEY_CHOICE, .off = CFG(proto.pop3_delete_mode),
	 .choices = delete_modes},
	{.name = "lock_session", .kind = KEY_BOOL, .off = CFG(proto.pop3_lock_session)},
	{.name = "uidl_format", .kind = KEY_CHOICE, .off = CFG(proto.pop3_uidl_format),
	 .choices = uidl_formats},
	{.name = "mark_seen", .kind = KEY_BOOL, .off = CFG(proto.pop3_mark_seen)},
	{0},
};

static void load_pop3(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "pop3.", "in group 'pop3'", pop3_keys, ld->c);
}

static const struct key imap_keys[] = {
	{.name = "nonsync_literals", .kind = KEY_CHOICE, .off = CFG(proto.imap_nonsync_literals),
	 .choices = nonsync_literals},
	{0},
};

static void load_imap(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "imap.", "in group 'imap'", imap_keys, ld->c);
}

static const struct key lmtp_keys[] = {
	{.name = "max_message_size", .kind = KEY_SIZE, .off = CFG(proto.max_message_size),
	 .min = KIB, .max = GIB},
	{.name = "max_recipients", .kind = KEY_COUNT, .off = CFG(proto.lmtp_max_recipients),
	 .min = 1, .max = 10000},
	{0},
};

static void load_lmtp(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "lmtp.", "in group 'lmtp'", lmtp_keys, ld->c);
}

/* The default quota (docs/configuration.md): a user's own setting, made
 * with `onebox user quota`, wins over it. */
static const struct key quota_keys[] = {
	{.name = "storage", .kind = KEY_SIZE, .off = CFG(quota_storage), .min = 0, .max = 64 * TIB},
	{.name = "messages", .kind = KEY_COUNT, .off = CFG(quota_messages),
	 .min = 0, .max = 1000000000},
	{.name = "lmtp_over_quota", .kind = KEY_CHOICE, .off = CFG(quota_over),
	 .choices = over_quota_answers},
	{0},
};

static void load_quota(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "quota.", "in group 'quota'", quota_keys, ld->c);
}

static const struct key limits_keys[] = {
	{.name = "max_connections", .kind = KEY_COUNT, .off = CFG(limits.max_connections),
	 .min = 1, .max = 1000000},
	{.name = "max_per_address", .kind = KEY_COUNT, .off = CFG(limits.max_per_address),
	 .min = 1, .max = 1000000},
	{.name = "max_line", .kind = KEY_SIZE, .off = CFG(limits.max_line),
	 .min = KIB, .max = 16 * MIB},
	{.name = "max_output", .kind = KEY_SIZE, .off = CFG(limits.max_output),
	 .min = 4 * KIB, .max = GIB},
	{.name = "preauth_timeout", .kind = KEY_SECONDS, .off = CFG(limits.preauth_timeout),
	 .min = 1, .max = HOUR},
	{.name = "imap_idle_timeout", .kind = KEY_SECONDS, .off = CFG(limits.imap_idle_timeout),
	 .min = 30 * MINUTE, .max = 7 * DAY,
	 .why = "RFC 3501 section 5.4 requires an inactivity autologout timer of at least 30 minutes"},
	{.name = "pop3_idle_timeout", .kind = KEY_SECONDS, .off = CFG(limits.pop3_idle_timeout),
	 .min = 10 * MINUTE, .max = 7 * DAY,
	 .why = "RFC 1939 section 3 requires an inactivity autologout timer of at least 10 minutes"},
	{.name = "lmtp_timeout", .kind = KEY_SECONDS, .off = CFG(limits.lmtp_timeout),
	 .min = 1, .max = DAY},
	{.name = "preauth_command_rate", .kind = KEY_COUNT,
	 .off = CFG(limits.preauth_command_rate), .min = 0, .max = 1000000},
	{.name = "preauth_command_burst", .kind = KEY_COUNT,
	 .off = CFG(limits.preauth_command_burst), .min = 1, .max = 1000000},
	{0},
};

static void load_limits(struct loader *ld, const config_setting_t *s)
{
	load_group(ld, s, "limits.", "in group 'limits'", limits_keys, ld->c);
}

/* ---------------------------------------------------------- listeners */

#define LISTEN(field) offsetof(struct cfg_listen, field)

static const struct key listen_keys[] = {
	{.name = "protocol", .kind = KEY_CHOICE, .off = LISTEN(protocol),
	 .choices = proto_names, .required = true},
	{.name = "address", .kind = KEY_STRING, .off = LISTEN(address)},
	{.name = "port", .kind = KEY_PORT, .off = LISTEN(port), .min = 1, .max = 65535},
	{.name = "path", .kind = KEY_PATH, .off = LISTEN(path)},
	{0},
};

/* A TCP address in binary form, to compare "::" with "::0". */
struct bind_addr {
	int family;
	unsigned char bytes[16];
};

static bool addr_parse(const char *s, struct bind_addr *a)
{
	memset(a, 0, sizeof *a);
	if (inet_pton(AF_INET, s, a->bytes) == 1)
		a->family = AF_INET;
	else if (inet_pton(AF_INET6, s, a->bytes) == 1)
		a->family = AF_INET6;
	return a->family != 0;
}

static bool addr_is_any(const struct bind_addr *a)
{
	static const unsigned char zero[16];
	return memcmp(a->bytes, zero, a->family == AF_INET ? 4 : 16) == 0;
}

/* Check listener I (setting S, already loaded) on its own. */
static void check_listener(struct loader *ld, const config_setting_t *s, size_t i)
{
	struct cfg_listen *l = &ld->c->listen[i];
	const config_setting_t *as = config_setting_get_member(s, "address");
	const config_setting_t *ps = config_setting_get_member(s, "port");
	const config_setting_t *us = config_setting_get_member(s, "path");
	const config_setting_t *prs = config_setting_get_member(s, "protocol");
	struct bind_addr a;

	if (us) {
		if (prs && l->protocol != CFG_LMTP)
			err(ld, us, "listen[%zu].path: only lmtp listens on a unix socket; "
			    "%s needs address and port", i, cfg_proto_name(l->protocol));
		if (as || ps)
			err(ld, s, "listen[%zu]: give either path, or address and port, not both", i);
		if (l->path) {
			struct sockaddr_un sun;
			struct stat st;
			if (strlen(l->path) >= sizeof sun.sun_path)
				err(ld, us, "listen[%zu].path %s is too long for a unix socket "
				    "(at most %zu bytes)", i, l->path, sizeof sun.sun_path - 1);
			else if (lstat(l->path, &st) == 0 && !S_ISSOCK(st.st_mode))
				err(ld, us, "listen[%zu].path %s exists and is not a socket", i, l->path);
			else {
				char label[48];
				snprintf(label, sizeof label, "listen[%zu].path", i);
				parent_is_dir(ld, us, label, l->path);
			}
		}
		return;
	}
	if (!as)
		err(ld, s, "listen[%zu]: missing required key 'address'%s", i,
		    prs && l->protocol == CFG_LMTP ? " (or 'path' for a unix socket)" : "");
	else if (l->address && !addr_parse(l->address, &a))
		err(ld, as, "listen[%zu].address \"%s\" is not an IPv4 or IPv6 address "
		    "(host names are not resolved; use 0.0.0.0 or :: for all addresses)",
		    i, l->address);
	if (!ps)
		err(ld, s, "listen[%zu]: missing required key 'port'", i);
	if (prs && (l->protocol == CFG_IMAPS || l->protocol == CFG_POP3S) && !ld->tls)
		err(ld, prs, "listen[%zu]: protocol \"%s\" needs the tls group (certificate and key)",
		    i, cfg_proto_name(l->protocol));
}

/*
 * Two listeners collide when the second bind would fail: the same socket
 * path, or the same port on the same address, or on a wildcard address and
 * another of its family (Linux refuses 127.0.0.1:110 after 0.0.0.0:110).
 */
static bool listeners_collide(const struct cfg_listen *x, const struct cfg_listen *y)
{
	if (x->path || y->path)
		return x->path && y->path && strcmp(x->path, y->path) == 0;
	struct bind_addr a, b;
	if (!x->address || !y->address || x->port != y->port || x->port == 0 ||
	    !addr_parse(x->address, &a) || !addr_parse(y->address, &b) || a.family != b.family)
		return false;
	return addr_is_any(&a) || addr_is_any(&b) ||
	       memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0;
}

static void load_listen(struct loader *ld, const config_setting_t *list)
{
	struct cfg *c = ld->c;
	ld->listen = list;
	int n = config_setting_length(list);
	if (n == 0) {
		err(ld, list, "listen: at least one listener is needed");
		return;
	}
	c->listen = calloc((size_t)n, sizeof *c->listen);
	if (!c->listen) {
		err(ld, list, "out of memory");
		return;
	}
	c->nlisten = (size_t)n;
	for (size_t i = 0; i < c->nlisten; i++) {
		const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
		c->listen[i].line = config_setting_source_line(s);
		if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
			err(ld, s, "listen[%zu] must be a group: { protocol = \"...\"; ... }", i);
			continue;
		}
		char prefix[32], where[32];
		snprintf(prefix, sizeof prefix, "listen[%zu].", i);
		snprintf(where, sizeof where, "in listen[%zu]", i);
		load_group(ld, s, prefix, where, listen_keys, &c->listen[i]);
	}
}

/* After the whole file: rules that need other groups, and uniqueness. */
static void check_listeners(struct loader *ld)
{
	struct cfg *c = ld->c;
	for (size_t i = 0; i < c->nlisten; i++) {
		const config_setting_t *s = config_setting_get_elem(ld->listen, (unsigned)i);
		if (config_setting_type(s) != CONFIG_TYPE_GROUP)
			continue;
		check_listener(ld, s, i);
		for (size_t j = 0; j < i; j++) {
			if (!listeners_collide(&c->listen[j], &c->listen[i]))
				continue;
			const struct cfg_listen *l = &c->listen[i], *o = &c->listen[j];
			if (l->path)
				err(ld, s, "listen[%zu]: socket %s is already used by listen[%zu] (line %d)",
				    i, l->path, j, o->line);
			else
				err(ld, s, "listen[%zu]: %s port %d collides with listen[%zu] "
				    "(%s port %d, line %d)", i, l->address, l->port, j, o->address,
				    o->port, o->line);
			break;
		}
	}
}

/* ----------------------------------------------------------- top level */

static const struct key top_keys[] = {
	{.name = "user", .kind = KEY_STRING, .off = CFG(user)},
	{.name = "hostname", .kind = KEY_STRING, .off = CFG(hostname)},
	{.name = "log_level", .kind = KEY_STRING, .off = CFG(log_level), .choices = log_levels},
	{.name = "storage", .kind = KEY_GROUP, .load = load_storage, .required = true},
	{.name = "tls", .kind = KEY_GROUP, .load = load_tls},
	{.name = "listen", .kind = KEY_LIST, .load = load_listen, .required = true},
	{.name = "auth", .kind = KEY_GROUP, .load = load_auth},
	{.name = "pop3", .kind = KEY_GROUP, .load = load_pop3},
	{.name = "imap", .kind = KEY_GROUP, .load = load_imap},
	{.name = "lmtp", .kind = KEY_GROUP, .load = load_lmtp},
	{.name = "quota", .kind = KEY_GROUP, .load = load_quota},
	{.name = "limits", .kind = KEY_GROUP, .load = load_limits},
	{0},
};

static void set_defaults(struct cfg *c)
{
	c->storage_map_size = GIB;
	c->storage_max_size = 0;
	c->storage_expunge_retention = 0;
	c->limits = (struct cfg_limits){
		.max_connections = 10000,
		.max_per_address = 100,
		.max_line = 64 * KIB,
		.max_output = MIB,
		.preauth_timeout = 60,
		.imap_idle_timeout = 30 * MINUTE,
		.pop3_idle_timeout = 10 * MINUTE,
		.lmtp_timeout = 5 * MINUTE,
		/* Far above what a client types or pipelines before login
		 * (a CAPABILITY, a STARTTLS, a LOGIN): only floods wait. */
		.preauth_command_rate = 10,
		.preauth_command_burst = 20,
	};
	c->auth = (struct cfg_auth){
		.cache_ttl = 5 * MINUTE,
		.cache_size = 10000,
		.scram_iterations = 4096,
		.fail_delay = 1000,
		.fail_delay_max = 15000,
		.fail_threshold = 5,
		.fail_window = 15 * MINUTE,
		.fail_table_size = 10000,
	};
	c->proto = (struct proto_settings){
		.allow_plaintext = false,
		.pop3_delete_mode = POP3_DELETE_EXPUNGE,
		.pop3_uidl_format = POP3_UIDL_DOVECOT,
		.pop3_lock_session = false,
		.pop3_mark_seen = true,
		.imap_nonsync_literals = IMAP_NONSYNC_PLUS,
		.max_message_size = 50 * MIB,
		.lmtp_max_recipients = 100,
	};
}

/* The name goes into every greeting: keep it to host-name characters so
 * that no configuration can put a space or a line end into a response. */
static void check_hostname(struct loader *ld, const config_setting_t *s, const char *h)
{
	size_t len = strlen(h);
	if (len > 253 || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                           "0123456789-._") != len)
		err(ld, s, "hostname must be a host name: letters, digits, '-', '.' and '_', "
		    "at most 253 of them");
}

/* String defaults go in after the walk, so a value is never replaced. */
static void finish(struct loader *ld, const config_setting_t *root)
{
	struct cfg *c = ld->c;
	const config_setting_t *s;

	if ((s = config_setting_get_member(root, "hostname")) && c->hostname)
		check_hostname(ld, s, c->hostname);
	if (!c->hostname) {
		char name[256] = "";
		if (gethostname(name, sizeof name - 1) != 0 || !name[0])
			snprintf(name, sizeof name, "localhost");
		c->hostname = dup_str(ld, root, name);
	}
	if (!c->log_level)
		c->log_level = dup_str(ld, root, "info");
	if (ld->tls && !c->tls_priorities)
		c->tls_priorities = dup_str(ld, ld->tls, DEFAULT_TLS_PRIORITIES);

	/* Only root can switch user: check the name where it will matter. */
	if ((s = config_setting_get_member(root, "user")) && c->user && geteuid() == 0 &&
	    !getpwnam(c->user))
		err(ld, s, "user \"%s\" does not exist", c->user);

	if (ld->listen)
		check_listeners(ld);
	c->proto.hostname = c->hostname;
	c->proto.over_quota_temporary = c->quota_over == CFG_OVER_QUOTA_TEMPORARY;
}

/* The absolute directory holding FILE: dirname as given, symlinks in the
 * directory resolved (the file itself may be a symlink elsewhere). */
static char *config_dir(const char *file)
{
	char *copy = strdup(file);
	if (!copy)
		return NULL;
	char *dir = realpath(dirname(copy), NULL);
	free(copy);
	return dir;
}

struct cfg *cfg_load(const char *file, FILE *errf)
{
	struct cfg *c = calloc(1, sizeof *c);
	if (!c || !(c->file = strdup(file))) {
		fprintf(errf, "%s: out of memory\n", file);
		free(c);
		return NULL;
	}
	set_defaults(c);

	/* libconfig says only "file I/O error"; give the reason. */
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	const char *why = NULL;
	if (fd < 0 || fstat(fd, &st) != 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	if (fd >= 0)
		close(fd);
	if (why) {
		fprintf(errf, "%s: cannot read the configuration: %s\n", file, why);
		cfg_free(c);
		return NULL;
	}

	struct loader ld = {.file = file, .errf = errf, .c = c, .dir = config_dir(file)};
	if (!ld.dir) {
		fprintf(errf, "%s: cannot find its directory: %s\n", file, strerror(errno));
		cfg_free(c);
		return NULL;
	}

	config_t lc;
	config_init(&lc);
	config_set_include_dir(&lc, ld.dir);
	if (config_read_file(&lc, file) != CONFIG_TRUE) {
		const char *efile = config_error_file(&lc) ? config_error_file(&lc) : file;
		const char *dir = include_dir(&ld, efile);
		fprintf(errf, "%s%s%s:%d: %s\n", dir, *dir ? "/" : "", efile,
		        config_error_line(&lc), config_error_text(&lc));
		ld.errors++;
	} else {
		const config_setting_t *root = config_root_setting(&lc);
		load_group(&ld, root, "", "at the top level", top_keys, c);
		finish(&ld, root);
	}
	config_destroy(&lc);
	free(ld.dir);
	if (ld.errors) {
		cfg_free(c);
		return NULL;
	}
	return c;
}

void cfg_free(struct cfg *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nlisten; i++) {
		free(c->listen[i].address);
		free(c->listen[i].path);
	}
	free(c->listen);
	free(c->file);
	free(c->user);
	free(c->hostname);
	free(c->log_level);
	free(c->storage_path);
	free(c->tls_certificate);
	free(c->tls_key);
	free(c->tls_priorities);
	free(c);
}

const char *cfg_proto_name(enum cfg_proto p)
{
	return (unsigned)p < sizeof proto_names / sizeof *proto_names - 1 ? proto_names[p] : "?";
}
