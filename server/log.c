/*
 * log.c - the daemon's log: one line per message on stderr.
 *
 * A line is "TIMESTAMP LEVEL [PREFIX] MESSAGE": an ISO-8601 UTC timestamp
 * with milliseconds, the level name, an optional prefix (conn_log puts the
 * session there) and the message.  Lines are bounded (longer ones are cut
 * and end in "..."), and control characters are written as \xHH so that a
 * client's bytes can never forge or split a log line.  Each line is one
 * write(2), so the store's writer thread may log too.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"

/* The longest line written, including the timestamp and the newline. */
#define LOG_LINE_MAX 2048

/* Same declaration as server.h, with the format attribute it lacks so the
 * compiler checks the vsnprintf below (-Wformat-nonliteral). */
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static int log_level = LOGL_INFO; /* read with __atomic: any thread logs */

static const char *const level_names[] = {
	[LOGL_ERR] = "error",
	[LOGL_WARN] = "warn",
	[LOGL_INFO] = "info",
	[LOGL_DEBUG] = "debug",
};

void log_set_level(int level)
{
	if (level < LOGL_ERR)
		level = LOGL_ERR;
	if (level > LOGL_DEBUG)
		level = LOGL_DEBUG;
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int log_level_parse(const char *name)
{
	if (!name)
		return -1;
	for (int i = LOGL_ERR; i <= LOGL_DEBUG; i++)
		if (!strcmp(name, level_names[i]))
			return i;
	if (!strcmp(name, "warning"))
		return LOGL_WARN;
	return -1;
}

/* A bounded line under construction. */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
	bool cut;
};

/* Room kept at the end for "...\n". */
#define LINE_TAIL 4

static void line_raw(struct line *l, const char *s, size_t n)
{
	size_t room = sizeof l->buf - LINE_TAIL - l->len;
	if (n > room) {
		n = room;
		l->cut = true;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

/* Append S with control characters (and DEL) escaped as \xHH.  Bytes of
 * 0x80 and above pass through so UTF-8 user names stay readable. */
static void line_escaped(struct line *l, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n && !l->cut; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch != 0x7f) {
			line_raw(l, &s[i], 1);
			continue;
		}
		char esc[4] = { '\\', 'x', hex[ch >> 4], hex[ch & 15] };
		if (sizeof l->buf - LINE_TAIL - l->len < sizeof esc) {
			l->cut = true;
			break;
		}
		line_raw(l, esc, sizeof esc);
	}
}

static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to complain */
		}
		p += w;
		n -= (size_t)w;
	}
}

void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap)
{
	if (level > __atomic_load_n(&log_level, __ATOMIC_RELAXED))
		return;
	if (level < LOGL_ERR)
		level = LOGL_ERR;
	if (level > LOGL_DEBUG)
		level = LOGL_DEBUG;

	char msg[LOG_LINE_MAX];
	int mlen = vsnprintf(msg, sizeof msg, fmt, ap);
	if (mlen < 0)
		mlen = 0;
	bool msg_cut = (size_t)mlen >= sizeof msg;
	size_t msg_len = msg_cut ? sizeof msg - 1 : (size_t)mlen;

	struct line l;
	l.len = 0;
	l.cut = false;

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[64];
	size_t sl = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	int extra = snprintf(stamp + sl, sizeof stamp - sl, ".%03ldZ %s ",
	                     ts.tv_nsec / 1000000L, level_names[level]);
	if (extra > 0)
		sl += (size_t)extra < sizeof stamp - sl ? (size_t)extra : 0;
	line_raw(&l, stamp, sl);

	if (prefix && *prefix) {
		line_raw(&l, "[", 1);
		line_escaped(&l, prefix, strlen(prefix));
		line_raw(&l, "] ", 2);
	}
	line_escaped(&l, msg, msg_len);
	if (l.cut || msg_cut) {
		memcpy(l.buf + l.len, "...", 3);
		l.len += 3;
	}
	l.buf[l.len++] = '\n';
	write_all(l.buf, l.len);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, NULL, fmt, ap);
	va_end(ap);
}
