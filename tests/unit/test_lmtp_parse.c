/*
 * test_lmtp_parse.c - unit tests for the LMTP DATA decoder
 * (protocols/lmtp/lmtp_parse.c): dot-stuffing and the terminating line
 * (RFC 5321 section 4.5.2), checked against a one-octet-at-a-time
 * reference on random input cut into random chunks.
 *
 * Plain C, no framework: CHECK() reports file:line of each failure and the
 * program prints "N passed, M failed" and exits non-zero on any failure.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "protocols/lmtp/lmtp_parse.h"

struct sink {
	char buf[8192];
	size_t len;
	int calls;
	bool overflow;
};

static void sink_emit(void *arg, const char *p, size_t len)
{
	struct sink *k = arg;
	k->calls++;
	if (len > sizeof k->buf - k->len) {
		k->overflow = true;
		return;
	}
	memcpy(k->buf + k->len, p, len);
	k->len += len;
}

/*
 * The rule, one octet at a time.  A line that is "." (CRLF or bare LF
 * after it) ends the data and is not content; a line that starts with "."
 * and has more loses that dot; ".\r" followed by anything but LF keeps the
 * CR as content.  Returns the octets consumed up to and including the
 * terminator, or LEN if there is none; *DONE tells which.
 */
static size_t reference(const char *in, size_t len, char *out, size_t *olen, bool *done)
{
	enum { BOL, DOT, DOT_CR, MID } st = BOL;
	size_t o = 0;

	*done = false;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (st == BOL) {
			if (c == '.') {
				st = DOT;
				continue;
			}
			st = MID;
		} else if (st == DOT) {
			if (c == '\n') {
				*done = true;
				*olen = o;
				return i + 1;
			}
			if (c == '\r') {
				st = DOT_CR;
				continue;
			}
			st = MID;
		} else if (st == DOT_CR) {
			if (c == '\n') {
				*done = true;
				*olen = o;
				return i + 1;
			}
			out[o++] = '\r';
			st = MID;
		}
		out[o++] = c;
		if (c == '\n')
			st = BOL;
	}
	*olen = o;
	return len;
}

/* Feed IN in random chunks, as reads would bring it; the decoder is not
 * called again after the terminator (the session goes back to commands). */
static size_t decode_chunked(const char *in, size_t len, unsigned *seed, struct sink *k,
                             bool *done)
{
	struct lmtp_dot_decoder d;
	size_t at = 0;

	lmtp_dot_init(&d);
	*done = false;
	while (at < len && !*done) {
		size_t n = 1 + (size_t)(rand_r(seed) % 64);
		if (rand_r(seed) % 6 == 0)
			n = len - at;
		if (n > len - at)
			n = len - at;
		size_t used = lmtp_dot_decode(&d, in + at, n, sink_emit, k, done);
		if (used > n || (!*done && used != n))
			return (size_t)-1;
		at += used;
	}
	return at;
}

static void test_random(void)
{
	static const char alphabet[] = "..\r\n\r\n\nabc";
	char in[3000], want[3000];
	unsigned seed = 4242;
	int bad = 0;

	for (int round = 0; round < 3000; round++) {
		size_t len = (size_t)(rand_r(&seed) % 400);
		/* Rare specials in some rounds: long plain lines, so the runs
		 * between dotted lines are long too. */
		unsigned plain = round % 3 == 0 ? 40 : 3;
		for (size_t i = 0; i < len; i++)
			in[i] = rand_r(&seed) % plain ? (char)('d' + rand_r(&seed) % 20)
			                               : alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
		/* Most rounds end in a terminator and a pipelined command. */
		if (round % 4 != 0) {
			const char *tail = round % 2 ? "\r\n.\r\nMAIL FROM:<>\r\n" : "\n.\nRSET\n";
			memcpy(in + len, tail, strlen(tail));
			len += strlen(tail);
		}
		size_t wlen;
		bool wdone, done;
		size_t wused = reference(in, len, want, &wlen, &wdone);
		struct sink k = { .len = 0 };
		size_t used = decode_chunked(in, len, &seed, &k, &done);
		if (used != wused || done != wdone || k.overflow || k.len != wlen ||
		    memcmp(k.buf, want, wlen) != 0) {
			if (bad++ < 5)
				fprintf(stderr, "round %d: used %zu/%zu done %d/%d len %zu/%zu\n", round,
				        used, wused, done, wdone, k.len, wlen);
		}
	}
	CHECK(bad == 0);
}

/* Lines that do not start with a dot go to EMIT as one run, however many
 * there are; a dotted line splits the run there. */
static void test_runs(void)
{
	struct lmtp_dot_decoder d;
	struct sink k = { .len = 0 };
	bool done;
	const char *a = "Subject: x\r\n\r\nline one\r\nline two\r\n";

	lmtp_dot_init(&d);
	CHECK(lmtp_dot_decode(&d, a, strlen(a), sink_emit, &k, &done) == strlen(a));
	CHECK(!done);
	CHECK(k.calls == 1);
	CHECK(k.len == strlen(a) && memcmp(k.buf, a, k.len) == 0);

	const char *b = "more\r\n..dotted\r\nafter\r\n.\r\nQUIT\r\n";
	size_t used = lmtp_dot_decode(&d, b, strlen(b), sink_emit, &k, &done);
	CHECK(done);
	CHECK(used == strlen(b) - strlen("QUIT\r\n"));
	CHECK(k.calls == 3);    /* "more\r\n", then ".dotted...after\r\n" less its dot */
	const char *want = "Subject: x\r\n\r\nline one\r\nline two\r\nmore\r\n.dotted\r\nafter\r\n";
	CHECK(k.len == strlen(want) && memcmp(k.buf, want, k.len) == 0);

	/* A chunk that ends right after a line's LF leaves the decoder at a
	 * line start: a dot first in the next chunk is stuffing. */
	struct sink k2 = { .len = 0 };
	lmtp_dot_init(&d);
	CHECK(lmtp_dot_decode(&d, "x\r\n", 3, sink_emit, &k2, &done) == 3 && !done);
	CHECK(lmtp_dot_decode(&d, "..y\r\n", 5, sink_emit, &k2, &done) == 5 && !done);
	CHECK(lmtp_dot_decode(&d, ".\r\n", 3, sink_emit, &k2, &done) == 3 && done);
	CHECK(k2.len == 7 && memcmp(k2.buf, "x\r\n.y\r\n", 7) == 0);
}

int main(void)
{
	test_runs();
	test_random();
	return check_summary();
}
