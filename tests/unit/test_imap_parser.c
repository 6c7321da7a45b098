/*
 * test_imap_parser.c - unit tests for the IMAP command assembler, argument
 * parser, modified UTF-7 and response writer (protocols/imap/).
 *
 * Plain C, no framework: CHECK() reports file:line of each failure and the
 * program prints "N passed, M failed" and exits non-zero on any failure.
 * The last test feeds random and mutated input under a fixed seed; run it
 * under ASan/UBSan to catch reads outside the buffer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "protocols/imap/imap_mutf7.h"
#include "protocols/imap/imap_parser.h"
#include "protocols/imap/imap_write.h"

#define CHECK_STR(got, want)                                               \
	do {                                                               \
		const char *g_ = (got), *w_ = (want);                      \
		if (g_ && w_ && strcmp(g_, w_) == 0) {                     \
			passed++;                                          \
		} else {                                                   \
			failed++;                                          \
			fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", \
				__FILE__, __LINE__, g_ ? g_ : "(null)",    \
				w_ ? w_ : "(null)");                       \
		}                                                          \
	} while (0)

static bool streq(const struct imap_str *s, const char *want)
{
	return s->s && s->len == strlen(want) && memcmp(s->s, want, s->len) == 0;
}

/* ------------------------------------------------------------------ */
/* A tiny driver standing in for the front-end                          */
/* ------------------------------------------------------------------ */

static const struct imap_limits default_limits = {
	.max_line = 1024,
	.max_command = 8192,
	.max_append = 100000,
	.max_discard = 10000,
	.literal_mode = IMAP_LITERAL_PLUS,
};

/* The events of one drive, one letter each: C complete, L literal with
 * continuation, l literal without, R reject, D discarded, X close. */
struct drive {
	char events[64];
	size_t nevents;
	size_t consumed;
};

static void note(struct drive *d, char e)
{
	if (d->nevents + 1 < sizeof(d->events)) {
		d->events[d->nevents++] = e;
		d->events[d->nevents] = '\0';
	}
}

/*
 * Feed WIRE (LEN octets, CRLF line ends) to A until a command completes, is
 * refused, its tail is discarded, or the input ends.  Returns the last
 * status.  Like a real client, it does not send a synchronizing literal the
 * server refused.
 */
static enum imap_asm_status drive(struct imap_asm *a, const char *wire,
				  size_t len, struct drive *d)
{
	size_t pos = 0;
	enum imap_asm_status st = IMAP_ASM_NEED_LINE;

	memset(d, 0, sizeof(*d));
	while (pos < len) {
		if (imap_asm_in_literal(a)) {
			size_t used;
			st = imap_asm_literal(a, wire + pos, len - pos, &used);
			pos += used;
			if (st == IMAP_ASM_LITERAL)
				break; /* input ended inside a literal */
			continue;
		}
		const char *nl = memchr(wire + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - wire) : len;
		size_t l = end - pos;
		if (l > 0 && wire[pos + l - 1] == '\r')
			l--;
		st = imap_asm_line(a, wire + pos, l);
		pos = nl ? end + 1 : len;
		switch (st) {
		case IMAP_ASM_COMPLETE:
			note(d, 'C');
			d->consumed = pos;
			return st;
		case IMAP_ASM_LITERAL:
			note(d, imap_asm_needs_continuation(a) ? 'L' : 'l');
			break;
		case IMAP_ASM_REJECT:
			note(d, 'R');
			if (!imap_asm_in_literal(a)) {
				d->consumed = pos;
				return st;
			}
			break;
		case IMAP_ASM_DISCARDED:
			note(d, 'D');
			d->consumed = pos;
			return st;
		case IMAP_ASM_CLOSE:
			note(d, 'X');
			d->consumed = pos;
			return st;
		case IMAP_ASM_NEED_LINE:
			break;
		}
	}
	d->consumed = pos;
	return st;
}

struct ctx {
	struct imap_asm a;
	struct imap_cmd c;
	struct drive d;
	enum imap_asm_status st;
};

static void ctx_init(struct ctx *x, const struct imap_limits *lim)
{
	imap_asm_init(&x->a, lim ? lim : &default_limits);
	imap_cmd_init(&x->c, 0);
}

static void ctx_free(struct ctx *x)
{
	imap_asm_free(&x->a);
	imap_cmd_free(&x->c);
}

/* Assemble WIRE and parse its tag and name; returns imap_cmd_parse()'s
 * result, or 99 if the command did not complete. */
static int start(struct ctx *x, const char *wire, size_t len, unsigned flags)
{
	x->st = drive(&x->a, wire, len, &x->d);
	if (x->st != IMAP_ASM_COMPLETE)
		return 99;
	return imap_cmd_parse(&x->c, &x->a, flags);
}

#define START(x, s, flags) start((x), (s), sizeof(s) - 1, (flags))

/* ------------------------------------------------------------------ */
/* Argument dispatch, as the command handlers will do it                */
/* ------------------------------------------------------------------ */

struct parsed {
	struct imap_str s1, s2;
	struct imap_seqset set;
	struct imap_fetch fetch;
	struct imap_store store;
	struct imap_search search;
	struct imap_sort sort;
	struct imap_thread thread;
	struct imap_select_params sel;
	struct imap_append append;
	struct imap_list list;
	struct imap_str *caps;
	size_t ncaps;
	struct imap_id_pair *id;
	size_t nid;
	unsigned mask;
};

static int dispatch(struct imap_cmd *c, struct parsed *p)
{
	const char *n = c->name;

	memset(p, 0, sizeof(*p));
	if (!strcmp(n, "CAPABILITY") || !strcmp(n, "NOOP") ||
	    !strcmp(n, "LOGOUT") || !strcmp(n, "STARTTLS") ||
	    !strcmp(n, "CHECK") || !strcmp(n, "CLOSE") ||
	    !strcmp(n, "UNSELECT") || !strcmp(n, "IDLE") ||
	    !strcmp(n, "NAMESPACE") || (!strcmp(n, "EXPUNGE") && !c->uid))
		return imap_parse_end(c);
	if (!strcmp(n, "LOGIN"))
		return imap_parse_sp(c) || imap_parse_astring(c, &p->s1) ||
		       imap_parse_sp(c) || imap_parse_astring(c, &p->s2) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "AUTHENTICATE")) {
		if (imap_parse_sp(c) || imap_parse_atom(c, &p->s1))
			return IMAP_PARSE_BAD;
		if (!imap_parse_at_end(c) &&
		    (imap_parse_sp(c) || imap_parse_atom(c, &p->s2)))
			return IMAP_PARSE_BAD;
		return imap_parse_end(c);
	}
	if (!strcmp(n, "SELECT") || !strcmp(n, "EXAMINE"))
		return imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_select_params(c, &p->sel) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "CREATE") || !strcmp(n, "DELETE") ||
	    !strcmp(n, "SUBSCRIBE") || !strcmp(n, "UNSUBSCRIBE"))
		return imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "RENAME"))
		return imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_sp(c) || imap_parse_mailbox(c, &p->s2) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "LIST"))
		return imap_parse_sp(c) || imap_parse_list(c, &p->list)
			       ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "LSUB"))
		return imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_sp(c) || imap_parse_list_mailbox(c, &p->s2) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "STATUS"))
		return imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_sp(c) ||
		       imap_parse_status_items(c, &p->mask) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "APPEND"))
		return imap_parse_sp(c) || imap_parse_append(c, &p->append)
			       ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "FETCH"))
		return imap_parse_sp(c) || imap_parse_seqset(c, &p->set) ||
		       imap_parse_sp(c) || imap_parse_fetch(c, &p->fetch)
			       ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "STORE"))
		return imap_parse_sp(c) || imap_parse_seqset(c, &p->set) ||
		       imap_parse_sp(c) || imap_parse_store(c, &p->store)
			       ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "COPY") || !strcmp(n, "MOVE"))
		return imap_parse_sp(c) || imap_parse_seqset(c, &p->set) ||
		       imap_parse_sp(c) || imap_parse_mailbox(c, &p->s1) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "EXPUNGE"))
		return imap_parse_sp(c) || imap_parse_seqset(c, &p->set) ||
		       imap_parse_end(c) ? IMAP_PARSE_BAD : 0;
	if (!strcmp(n, "SEARCH")) {
		if (imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		return imap_parse_search(c, &p->search);
	}
	if (!strcmp(n, "SORT"))
		return imap_parse_sp(c) ? IMAP_PARSE_BAD : imap_parse_sort(c, &p->sort);
	if (!strcmp(n, "THREAD"))
		return imap_parse_sp(c) ? IMAP_PARSE_BAD : imap_parse_thread(c, &p->thread);
	if (!strcmp(n, "ENABLE"))
		return imap_parse_enable(c, &p->caps, &p->ncaps);
	if (!strcmp(n, "ID"))
		return imap_parse_sp(c) || imap_parse_id(c, &p->id, &p->nid)
			       ? IMAP_PARSE_BAD : 0;
	c->error = "unknown command";
	return IMAP_PARSE_BAD;
}

/* Assemble, parse and dispatch WIRE; returns the dispatch result (99 when
 * the command did not assemble, 98 when the tag/name failed). */
static int run(struct ctx *x, struct parsed *p, const char *wire, size_t len,
	       unsigned flags)
{
	int rc = start(x, wire, len, flags);
	if (rc == 99)
		return 99;
	if (rc)
		return 98;
	return dispatch(&x->c, p);
}

#define RUN(x, p, s, flags) run((x), (p), (s), sizeof(s) - 1, (flags))

/* ------------------------------------------------------------------ */
/* Modified UTF-7                                                       */
/* ------------------------------------------------------------------ */

static bool dec_ok(const char *in, const char *want)
{
	char out[256];
	size_t n;
	return imap_mutf7_decode(in, strlen(in), out, sizeof(out), &n) == 0 &&
	       n == strlen(want) && strcmp(out, want) == 0;
}

static bool dec_bad(const char *in)
{
	char out[256];
	size_t n;
	return imap_mutf7_decode(in, strlen(in), out, sizeof(out), &n) == -1;
}

static bool enc_ok(const char *in, const char *want)
{
	char out[256];
	size_t n;
	return imap_mutf7_encode(in, strlen(in), out, sizeof(out), &n) == 0 &&
	       n == strlen(want) && strcmp(out, want) == 0;
}

static void test_mutf7(void)
{
	/* RFC 3501 section 5.1.3's example. */
	CHECK(dec_ok("~peter/mail/&U,BTFw-/&ZeVnLIqe-",
		     "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		     "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"));
	CHECK(enc_ok("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		     "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		     "~peter/mail/&U,BTFw-/&ZeVnLIqe-"));
	CHECK(dec_ok("&-", "&"));
	CHECK(enc_ok("&", "&-"));
	CHECK(dec_ok("a&-b", "a&b"));
	CHECK(dec_ok("", ""));
	CHECK(enc_ok("", ""));
	CHECK(enc_ok("Entw\xc3\xbc" "rfe", "Entw&APw-rfe"));
	CHECK(dec_ok("Entw&APw-rfe", "Entw\xc3\xbc" "rfe"));
	/* A character outside the BMP: a surrogate pair. */
	CHECK(enc_ok("\xf0\x9f\x98\x80", "&2D3eAA-"));
	CHECK(dec_ok("&2D3eAA-", "\xf0\x9f\x98\x80"));
	/* Controls are encoded, too. */
	CHECK(enc_ok("a\x01", "a&AAE-"));

	CHECK(dec_bad("&"));             /* not closed */
	CHECK(dec_bad("&U,BTFw"));       /* not closed */
	CHECK(dec_bad("&AGE-"));         /* encodes printable "a" */
	CHECK(dec_bad("&U,BTFw-&ZeVnLIqe-")); /* null shift "-&" */
	CHECK(dec_bad("&U,BTFx-"));      /* non-zero padding bits */
	CHECK(dec_bad("&U,BTF-"));       /* partial unit */
	CHECK(dec_bad("&2D0-"));         /* lone high surrogate */
	CHECK(dec_bad("&3gA-"));         /* lone low surrogate */
	CHECK(dec_bad("&Jjo!-"));        /* outside the alphabet */
	CHECK(dec_bad("&U/BTFw-"));      /* "/" is not modified base64 */
	CHECK(dec_bad("caf\xc3\xa9"));   /* raw 8-bit */
	CHECK(dec_bad("a\tb"));          /* raw control */
	CHECK(dec_bad("&AAA-"));         /* NUL */

	char out[8];
	size_t n;
	CHECK(imap_mutf7_encode("\xc3", 1, out, sizeof(out), &n) == -1);
	CHECK(imap_mutf7_encode("\xc0\x80", 2, out, sizeof(out), &n) == -1);
	CHECK(imap_mutf7_encode("\xed\xa0\x80", 3, out, sizeof(out), &n) == -1);
	CHECK(imap_mutf7_encode("abcdefghij", 10, out, sizeof(out), &n) == -1);
	CHECK(imap_utf8_valid("\xe6\x97\xa5", 3));
	CHECK(!imap_utf8_valid("\xe6\x97", 2));
	CHECK(!imap_utf8_valid("\xf5\x80\x80\x80", 4));

	/* Round trips over many code points. */
	int bad = 0;
	for (unsigned cp = 1; cp < 0x11000; cp += 7) {
		if (cp >= 0xd800 && cp <= 0xdfff)
			continue;
		char u[16], m[64], back[64];
		size_t ul = 0, ml, bl;
		u[ul++] = 'x';
		if (cp < 0x80) {
			u[ul++] = (char)cp;
		} else if (cp < 0x800) {
			u[ul++] = (char)(0xc0 | (cp >> 6));
			u[ul++] = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			u[ul++] = (char)(0xe0 | (cp >> 12));
			u[ul++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			u[ul++] = (char)(0x80 | (cp & 0x3f));
		} else {
			u[ul++] = (char)(0xf0 | (cp >> 18));
			u[ul++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			u[ul++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			u[ul++] = (char)(0x80 | (cp & 0x3f));
		}
		u[ul++] = 'y';
		if (imap_mutf7_encode(u, ul, m, sizeof(m), &ml) ||
		    imap_mutf7_decode(m, ml, back, sizeof(back), &bl) ||
		    bl != ul || memcmp(back, u, ul) != 0)
			bad++;
	}
	CHECK(bad == 0);
}

/* ------------------------------------------------------------------ */
/* Assembler                                                            */
/* ------------------------------------------------------------------ */

static void test_assembler(void)
{
	struct ctx x;
	struct parsed p;

	ctx_init(&x, NULL);
	CHECK(START(&x, "a1 NOOP\r\n", 0) == 0);
	CHECK_STR(x.d.events, "C");
	CHECK_STR(x.c.tag.s, "a1");
	CHECK_STR(x.c.name, "NOOP");

	/* Synchronizing literals: the client waits for "+". */
	CHECK(RUN(&x, &p, "a2 LOGIN {3}\r\nbob {6}\r\nsecret\r\n", 0) == 0);
	CHECK_STR(x.d.events, "LLC");
	CHECK(streq(&p.s1, "bob") && streq(&p.s2, "secret"));
	CHECK(x.a.nlits == 2 && !x.a.lits[0].nonsync);

	/* LITERAL+: no continuation. */
	CHECK(RUN(&x, &p, "a3 LOGIN {3+}\r\nbob {0+}\r\n\r\n", 0) == 0);
	CHECK_STR(x.d.events, "llC");
	CHECK(streq(&p.s1, "bob") && streq(&p.s2, ""));

	/* A literal fed in pieces. */
	CHECK(imap_asm_line(&x.a, "a4 LOGIN {5}", 12) == IMAP_ASM_LITERAL);
	CHECK(imap_asm_needs_continuation(&x.a));
	CHECK(imap_asm_literal_left(&x.a) == 5);
	size_t used;
	CHECK(imap_asm_literal(&x.a, "al", 2, &used) == IMAP_ASM_LITERAL &&
	      used == 2);
	CHECK(imap_asm_literal(&x.a, "iceXYZ", 6, &used) == IMAP_ASM_NEED_LINE &&
	      used == 3);
	CHECK(imap_asm_line(&x.a, " pw", 3) == IMAP_ASM_COMPLETE);
	CHECK(imap_cmd_parse(&x.c, &x.a, 0) == 0 && dispatch(&x.c, &p) == 0);
	CHECK(streq(&p.s1, "alice") && streq(&p.s2, "pw"));

	/* Line too long: refused, the next line is a new command. */
	char big[2000];
	memset(big, 'x', sizeof(big));
	memcpy(big, "t1 LOGIN ", 9);
	CHECK(imap_asm_line(&x.a, big, sizeof(big)) == IMAP_ASM_REJECT);
	CHECK_STR(imap_asm_error(&x.a), "command too long");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LINE_TOO_LONG);
	CHECK_STR(imap_asm_tag(&x.a), "t1");
	CHECK(!imap_asm_in_literal(&x.a));
	CHECK(START(&x, "t2 NOOP\r\n", 0) == 0);

	/* Whole command too long, over several literals. */
	char wire[12000];
	size_t wl = (size_t)snprintf(wire, sizeof(wire), "t3 LOGIN {5000}\r\n");
	memset(wire + wl, 'a', 5000);
	wl += 5000;
	wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, " {5000}\r\n");
	CHECK(drive(&x.a, wire, wl, &x.d) == IMAP_ASM_REJECT);
	CHECK_STR(x.d.events, "LR");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_TOO_BIG);
	CHECK(!imap_asm_in_literal(&x.a)); /* sync: never sent */
	CHECK(START(&x, "t4 NOOP\r\n", 0) == 0);

	/* A refused non-synchronizing literal is swallowed with the rest of
	 * its command, including later literals. */
	wl = (size_t)snprintf(wire, sizeof(wire), "t5 LOGIN {9000+}\r\n");
	memset(wire + wl, 'b', 9000);
	wl += 9000;
	wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl,
			       " {3+}\r\nxyz\r\nt6 NOOP\r\n");
	CHECK(drive(&x.a, wire, wl, &x.d) == IMAP_ASM_DISCARDED);
	CHECK_STR(x.d.events, "RlD");
	CHECK_STR(imap_asm_tag(&x.a), "t5");
	CHECK(start(&x, wire + x.d.consumed, wl - x.d.consumed, 0) == 0);
	CHECK_STR(x.c.tag.s, "t6");

	/* Many short lines add up past max_command. */
	CHECK(imap_asm_line(&x.a, "t8 LOGIN {1+}", 13) == IMAP_ASM_LITERAL);
	enum imap_asm_status st8 = IMAP_ASM_LITERAL;
	char part[1000];
	memset(part, 'y', sizeof(part));
	part[0] = ' ';
	memcpy(part + sizeof(part) - 4, "{1+}", 4);
	for (int i = 0; i < 20 && st8 == IMAP_ASM_LITERAL; i++) {
		CHECK(imap_asm_literal(&x.a, "z", 1, &used) == IMAP_ASM_NEED_LINE);
		st8 = imap_asm_line(&x.a, part, sizeof(part));
	}
	CHECK(st8 == IMAP_ASM_REJECT &&
	      imap_asm_error_code(&x.a) == IMAP_ASM_ERR_COMMAND_TOO_LONG);
	CHECK(imap_asm_in_literal(&x.a)); /* swallowing the last {1+} */
	CHECK(imap_asm_literal(&x.a, "z", 1, &used) == IMAP_ASM_NEED_LINE);
	CHECK(imap_asm_line(&x.a, "", 0) == IMAP_ASM_DISCARDED);

	/* "{0}" needs no literal call before the next line. */
	CHECK(imap_asm_line(&x.a, "t9 LOGIN {0}", 12) == IMAP_ASM_LITERAL);
	CHECK(imap_asm_literal_left(&x.a) == 0);
	CHECK(imap_asm_line(&x.a, " x", 2) == IMAP_ASM_COMPLETE);
	CHECK(imap_cmd_parse(&x.c, &x.a, 0) == 0 && dispatch(&x.c, &p) == 0 &&
	      streq(&p.s1, "") && streq(&p.s2, "x"));

	/* Over max_discard: close. */
	CHECK(START(&x, "t7 LOGIN {20000+}\r\n", 0) == 99);
	CHECK_STR(x.d.events, "X");
	ctx_free(&x);

	/* LITERAL-: {N+} only up to 4096. */
	struct imap_limits lim = default_limits;
	lim.literal_mode = IMAP_LITERAL_MINUS;
	ctx_init(&x, &lim);
	wl = (size_t)snprintf(wire, sizeof(wire), "m1 LOGIN {4096+}\r\n");
	memset(wire + wl, 'c', 4096);
	wl += 4096;
	wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, " x\r\n");
	CHECK(run(&x, &p, wire, wl, 0) == 0 && p.s1.len == 4096);
	wl = (size_t)snprintf(wire, sizeof(wire), "m2 LOGIN {4097+}\r\n");
	memset(wire + wl, 'c', 4097);
	wl += 4097;
	wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, " x\r\n");
	CHECK(drive(&x.a, wire, wl, &x.d) == IMAP_ASM_DISCARDED);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_MINUS);
	/* A synchronizing literal of the same size is fine. */
	CHECK(imap_asm_line(&x.a, "m3 LOGIN {4097}", 15) == IMAP_ASM_LITERAL);
	CHECK(imap_asm_needs_continuation(&x.a));
	imap_asm_reset(&x.a);
	CHECK(!imap_asm_in_literal(&x.a));
	ctx_free(&x);

	/* No LITERAL+ at all: "{N+}" is refused and swallowed. */
	lim.literal_mode = IMAP_LITERAL_SYNC_ONLY;
	ctx_init(&x, &lim);
	CHECK(START(&x, "s1 LOGIN {3+}\r\nabc x\r\n", 0) == 99);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_NONSYNC);
	CHECK(START(&x, "s2 LOGIN {99999999999999999999}\r\n", 0) == 99);
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_BAD_LITERAL);
	ctx_free(&x);

	/* APPEND literals count against max_append, not max_command. */
	ctx_init(&x, NULL);
	static char app[60000];
	wl = (size_t)snprintf(app, sizeof(app), "p1 APPEND INBOX {50000}\r\n");
	memset(app + wl, 'M', 50000);
	wl += 50000;
	app[wl++] = '\r';
	app[wl++] = '\n';
	CHECK(run(&x, &p, app, wl, 0) == 0);
	CHECK(p.append.message.len == 50000 && !p.append.literal8);
	CHECK(START(&x, "p2 APPEND INBOX {100001}\r\n", 0) == 99);
	CHECK(x.st == IMAP_ASM_REJECT &&
	      imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_TOO_BIG);
	CHECK(START(&x, "p3 LOGIN {50000}\r\n", 0) == 99);
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_TOO_BIG);

	/* A quoted string cannot run on into the literal after its line. */
	CHECK(RUN(&x, &p, "q1 LOGIN \"foo {3}\r\nbar\"\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unterminated quoted string");
	/* A line that merely ends in something brace-like is not a literal. */
	CHECK(RUN(&x, &p, "q2 LOGIN a {x}\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.d.events, "C");
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Literal modes: LITERAL+, LITERAL- and none (RFC 7888)                */
/* ------------------------------------------------------------------ */

/* HEAD, then N octets of FILL, then TAIL, into a new buffer (*LEN set). */
static char *wire_lit(const char *head, size_t n, char fill, const char *tail,
		      size_t *len)
{
	size_t hl = strlen(head), tl = strlen(tail);
	char *w = malloc(hl + n + tl + 1);

	if (w == NULL) {
		*len = 0;
		return NULL;
	}
	memcpy(w, head, hl);
	memset(w + hl, fill, n);
	memcpy(w + hl + n, tail, tl + 1);
	*len = hl + n + tl;
	return w;
}

/* Drive WIRE (freed here) through X; the last status. */
static enum imap_asm_status drive_free(struct ctx *x, char *wire, size_t len)
{
	enum imap_asm_status st = IMAP_ASM_CLOSE;

	CHECK(wire != NULL);
	if (wire)
		st = drive(&x->a, wire, len, &x->d);
	free(wire);
	return st;
}

static void test_literal_modes(void)
{
	struct imap_limits lim = default_limits; /* max_discard 10000,
						   * max_command 8192,
						   * max_append 100000 */
	struct ctx x;
	struct parsed p;
	size_t wl;
	char *w;

	/* LITERAL-: an APPEND "{N+}" over 4096 is refused, but read and
	 * thrown away up to max_append, past max_discard, so the client gets
	 * a tagged answer instead of a BYE (RFC 7888 sections 4 and 5). */
	lim.literal_mode = IMAP_LITERAL_MINUS;
	ctx_init(&x, &lim);
	w = wire_lit("a1 APPEND INBOX {20000+}\r\n", 20000, 'M', "\r\n", &wl);
	CHECK(drive_free(&x, w, wl) == IMAP_ASM_DISCARDED);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_MINUS);
	CHECK_STR(imap_asm_tag(&x.a), "a1");
	CHECK(x.d.consumed == wl);
	/* The stream is in step: the next command is read as one. */
	CHECK(START(&x, "a2 NOOP\r\n", 0) == 0);
	CHECK_STR(x.c.tag.s, "a2");

	/* Up to 4096 octets "{N+}" works in APPEND too, and so does literal8
	 * (RFC 7888 section 6). */
	w = wire_lit("a3 APPEND INBOX {4096+}\r\n", 4096, 'M', "\r\n", &wl);
	CHECK(w && run(&x, &p, w, wl, IMAP_PARSE_BINARY) == 0 &&
	      p.append.message.len == 4096);
	free(w);
	CHECK_STR(x.d.events, "lC");
	w = wire_lit("a4 APPEND INBOX ~{4096+}\r\n", 4096, 'M', "\r\n", &wl);
	CHECK(w && run(&x, &p, w, wl, IMAP_PARSE_BINARY) == 0 &&
	      p.append.literal8 && p.append.message.len == 4096);
	free(w);
	w = wire_lit("a5 APPEND INBOX ~{4097+}\r\n", 4097, 'M', "\r\n", &wl);
	CHECK(drive_free(&x, w, wl) == IMAP_ASM_DISCARDED);
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_MINUS);

	/* Past what APPEND could take at all: close (with a BYE). */
	CHECK(START(&x, "a6 APPEND INBOX {100001+}\r\n", 0) == 99);
	CHECK_STR(x.d.events, "X");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_MINUS);
	CHECK(imap_asm_line(&x.a, "a7 NOOP", 7) == IMAP_ASM_CLOSE);
	ctx_free(&x);

	/* A command other than APPEND: swallowed up to max_command when that
	 * is more than max_discard, else up to max_discard. */
	ctx_init(&x, &lim);
	w = wire_lit("b1 LOGIN {9000+}\r\n", 9000, 'p', " x\r\n", &wl);
	CHECK(drive_free(&x, w, wl) == IMAP_ASM_DISCARDED);
	CHECK_STR(x.d.events, "RD");
	CHECK(START(&x, "b2 LOGIN {10001+}\r\n", 0) == 99);
	CHECK_STR(x.d.events, "X");
	ctx_free(&x);
	struct imap_limits big = lim;
	big.max_command = 50000;
	ctx_init(&x, &big);
	w = wire_lit("b3 LOGIN {30000+}\r\n", 30000, 'p', " x\r\n", &wl);
	CHECK(drive_free(&x, w, wl) == IMAP_ASM_DISCARDED);
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_LITERAL_MINUS);
	ctx_free(&x);

	/* Every literal of the command counts, not only the first; a refused
	 * command's later "{N+}" is swallowed with it. */
	ctx_init(&x, &lim);
	w = wire_lit("c1 LOGIN {3+}\r\nbob {5000+}\r\n", 5000, 's',
		     " {2+}\r\nxy\r\n", &wl);
	CHECK(drive_free(&x, w, wl) == IMAP_ASM_DISCARDED);
	CHECK_STR(x.d.events, "lRlD");
	CHECK_STR(imap_asm_tag(&x.a), "c1");
	/* Synchronizing literals of any size are not LITERAL-'s business. */
	CHECK(imap_asm_line(&x.a, "c2 APPEND INBOX {50000}", 23) ==
	      IMAP_ASM_LITERAL);
	CHECK(imap_asm_needs_continuation(&x.a));
	imap_asm_reset(&x.a);

	/* The mode can change on a live assembler; it applies from the next
	 * literal announced. */
	imap_asm_set_literal_mode(&x.a, IMAP_LITERAL_PLUS);
	w = wire_lit("d1 LOGIN {5000+}\r\n", 5000, 'p', " x\r\n", &wl);
	CHECK(w && run(&x, &p, w, wl, 0) == 0 && p.s1.len == 5000);
	free(w);
	imap_asm_set_literal_mode(&x.a, IMAP_LITERAL_SYNC_ONLY);
	CHECK(START(&x, "d2 LOGIN {1+}\r\na x\r\n", 0) == 99);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_NONSYNC);
	ctx_free(&x);

	/* Neither: every "{N+}" and "~{N+}" is refused, even "{0+}", and
	 * swallowed up to max_discard only (no LITERAL- allowance); "{N}"
	 * still works. */
	lim.literal_mode = IMAP_LITERAL_SYNC_ONLY;
	ctx_init(&x, &lim);
	CHECK(START(&x, "e1 LOGIN {0+}\r\n x\r\n", 0) == 99);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_NONSYNC);
	CHECK(START(&x, "e2 APPEND INBOX ~{2+}\r\nab\r\n", 0) == 99);
	CHECK_STR(x.d.events, "RD");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_NONSYNC);
	CHECK_STR(imap_asm_error(&x.a),
		  "non-synchronizing literals are not supported");
	CHECK(RUN(&x, &p, "e3 LOGIN {3}\r\nbob {2}\r\npw\r\n", 0) == 0);
	CHECK_STR(x.d.events, "LLC");
	CHECK(streq(&p.s1, "bob") && streq(&p.s2, "pw"));
	CHECK(START(&x, "e4 APPEND INBOX {20000+}\r\n", 0) == 99);
	CHECK_STR(x.d.events, "X");
	CHECK(imap_asm_error_code(&x.a) == IMAP_ASM_ERR_NONSYNC);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Command line and simple commands                                      */
/* ------------------------------------------------------------------ */

static void test_commands(void)
{
	struct ctx x;
	struct parsed p;

	ctx_init(&x, NULL);
	CHECK(RUN(&x, &p, "a1 capability\r\n", 0) == 0);
	CHECK_STR(x.c.name, "CAPABILITY");
	CHECK(RUN(&x, &p, "a1 NOOP extra\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unexpected extra arguments");
	CHECK(START(&x, "+a NOOP\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(START(&x, "a\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "missing command");
	CHECK_STR(x.c.tag.s, "a");
	CHECK(START(&x, "a  NOOP\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(START(&x, "a{ NOOP\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(START(&x, "a UID FOO 1\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown UID command");
	CHECK(START(&x, "a uid fetch 1 FLAGS\r\n", 0) == 0);
	CHECK(x.c.uid);
	CHECK_STR(x.c.name, "FETCH");

	CHECK(RUN(&x, &p, "a LOGIN \"us\\\"er\" \"p\\\\w\"\r\n", 0) == 0);
	CHECK(streq(&p.s1, "us\"er") && streq(&p.s2, "p\\w"));
	CHECK(RUN(&x, &p, "a LOGIN \"abc\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unterminated quoted string");
	CHECK(RUN(&x, &p, "a LOGIN \"a\\bc\" x\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a LOGIN \"a\0b\" x\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "NUL in quoted string");
	CHECK(RUN(&x, &p, "a LOGIN {3}\r\na\0b x\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "NUL in literal");
	CHECK(RUN(&x, &p, "a LOGIN \"caf\xc3\xa9\" x\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "8-bit octet in quoted string");
	CHECK(RUN(&x, &p, "a LOGIN \"caf\xc3\xa9\" x\r\n", IMAP_PARSE_UTF8) == 0);
	CHECK(RUN(&x, &p, "a LOGIN \"caf\xc3\" x\r\n", IMAP_PARSE_UTF8) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a LOGIN a]b c\r\n", 0) == 0 && streq(&p.s1, "a]b"));
	CHECK(RUN(&x, &p, "a LOGIN ~ c\r\n", 0) == 0 && streq(&p.s1, "~"));
	CHECK(RUN(&x, &p, "a LOGIN ~{1}\r\nx c\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "literal8 not allowed here");
	CHECK(RUN(&x, &p, "a LOGIN x\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "missing argument");
	CHECK(RUN(&x, &p, "a AUTHENTICATE PLAIN AGJvYgBwdw==\r\n", 0) == 0);
	CHECK(streq(&p.s1, "PLAIN") && streq(&p.s2, "AGJvYgBwdw=="));

	/* Mailboxes. */
	CHECK(RUN(&x, &p, "a SELECT inBoX\r\n", 0) == 0 && streq(&p.s1, "INBOX"));
	CHECK(RUN(&x, &p, "a SELECT \"InBox\"\r\n", 0) == 0 &&
	      streq(&p.s1, "INBOX"));
	CHECK(RUN(&x, &p, "a SELECT INBOX.sub\r\n", 0) == 0 &&
	      streq(&p.s1, "INBOX.sub"));
	CHECK(RUN(&x, &p, "a EXAMINE &ZeVnLIqe-\r\n", 0) == 0 &&
	      streq(&p.s1, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"));
	CHECK(RUN(&x, &p, "a CREATE &ZeVn\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "mailbox name is not valid modified UTF-7");
	CHECK(RUN(&x, &p, "a CREATE {6}\r\nf\xc3\xbc\x62\x61r\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a CREATE {6}\r\nf\xc3\xbc\x62\x61r\r\n",
		  IMAP_PARSE_UTF8) == 0 && streq(&p.s1, "f\xc3\xbc" "bar"));
	CHECK(RUN(&x, &p, "a CREATE \"&ZeVnLIqe-\"\r\n", IMAP_PARSE_UTF8) == 0 &&
	      streq(&p.s1, "&ZeVnLIqe-"));
	CHECK(RUN(&x, &p, "a DELETE foo\r\n", 0) == 0 && streq(&p.s1, "foo"));
	CHECK(RUN(&x, &p, "a SUBSCRIBE \"a b\"\r\n", 0) == 0);
	CHECK(RUN(&x, &p, "a UNSUBSCRIBE a%b\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a RENAME old \"new one\"\r\n", 0) == 0 &&
	      streq(&p.s1, "old") && streq(&p.s2, "new one"));
	CHECK(RUN(&x, &p, "a RENAME old\r\n", 0) == IMAP_PARSE_BAD);

	/* SELECT parameters (RFC 7162). */
	CHECK(RUN(&x, &p, "a SELECT INBOX (CONDSTORE)\r\n", 0) == 0 &&
	      p.sel.condstore && !p.sel.qresync);
	CHECK(RUN(&x, &p, "a SELECT INBOX (QRESYNC (67890007 20050715194045000 "
			  "41,43:211,214:541))\r\n", 0) == 0);
	CHECK(p.sel.qresync && p.sel.uidvalidity == 67890007 &&
	      p.sel.modseq == UINT64_C(20050715194045000) &&
	      p.sel.known_uids.n == 3 && p.sel.known_uids.r[1].lo == 43 &&
	      p.sel.known_seqs.n == 0);
	CHECK(RUN(&x, &p, "a EXAMINE INBOX (QRESYNC (67890007 90060115194045000 "
			  "1:29997 (5000,7500,9000,9990:9999 15000,22500,"
			  "27000,29970,29973,29976,29979,29982,29985,29988,"
			  "29991,29994,29997)))\r\n", 0) == 0);
	CHECK(p.sel.known_seqs.n == 4 && p.sel.known_seq_uids.n == 13);
	CHECK(RUN(&x, &p, "a SELECT INBOX (QRESYNC (1 2 (1:2 3:4)))\r\n", 0) == 0);
	CHECK(p.sel.known_uids.n == 0 && p.sel.known_seqs.n == 1);
	CHECK(RUN(&x, &p, "a SELECT INBOX (QRESYNC (1 2 1:*))\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SELECT INBOX (QRESYNC (0 2))\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SELECT INBOX ()\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SELECT INBOX (FOO)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown or repeated SELECT parameter FOO");

	/* STATUS. */
	CHECK(RUN(&x, &p, "a STATUS blurdybloop (UIDNEXT messages unseen "
			  "HIGHESTMODSEQ)\r\n", 0) == 0);
	CHECK(p.mask == (IMAP_STATUS_UIDNEXT | IMAP_STATUS_MESSAGES |
			 IMAP_STATUS_UNSEEN | IMAP_STATUS_HIGHESTMODSEQ));
	CHECK(RUN(&x, &p, "a STATUS x (FOO)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown status item FOO");
	CHECK(RUN(&x, &p, "a STATUS x ()\r\n", 0) == IMAP_PARSE_BAD);

	/* LIST and LSUB. */
	CHECK(RUN(&x, &p, "a LIST \"\" *\r\n", 0) == 0);
	CHECK(!p.list.extended && streq(&p.list.reference, "") &&
	      p.list.npatterns == 1 && streq(&p.list.patterns[0], "*"));
	CHECK(RUN(&x, &p, "a LIST ~/Mail/ %/&ZeVnLIqe-/*\r\n", 0) == 0);
	CHECK(streq(&p.list.patterns[0],
		    "%/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/*"));
	CHECK(RUN(&x, &p, "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" "
			  "(\"INBOX\" Drafts%) RETURN (CHILDREN STATUS "
			  "(MESSAGES UNSEEN) X-FOO (a (b \"c)\")))\r\n", 0) == 0);
	CHECK(p.list.extended && p.list.npatterns == 2 &&
	      streq(&p.list.patterns[1], "Drafts%"));
	CHECK(p.list.known == (IMAP_LIST_SEL_SUBSCRIBED |
			       IMAP_LIST_SEL_RECURSIVEMATCH |
			       IMAP_LIST_RET_CHILDREN | IMAP_LIST_RET_STATUS));
	CHECK(p.list.status_items ==
	      (IMAP_STATUS_MESSAGES | IMAP_STATUS_UNSEEN));
	CHECK(p.list.nret == 3 && streq(&p.list.ret[2].name, "X-FOO") &&
	      streq(&p.list.ret[2].value, "(a (b \"c)\"))"));
	CHECK(RUN(&x, &p, "a LIST (RECURSIVEMATCH) \"\" *\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a LIST () \"\" % RETURN ()\r\n", 0) == 0);
	CHECK(RUN(&x, &p, "a LIST \"\" % FOO\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a LSUB \"#news.\" comp.mail.*\r\n", 0) == 0 &&
	      streq(&p.s2, "comp.mail.*"));

	/* ENABLE and ID. */
	CHECK(RUN(&x, &p, "a ENABLE condstore UTF8=ACCEPT\r\n", 0) == 0);
	CHECK(p.ncaps == 2 && streq(&p.caps[0], "CONDSTORE") &&
	      streq(&p.caps[1], "UTF8=ACCEPT"));
	CHECK(RUN(&x, &p, "a ENABLE\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a ID NIL\r\n", 0) == 0 && p.nid == 0);
	CHECK(RUN(&x, &p, "a ID (\"name\" \"sodr\" \"version\" NIL)\r\n", 0) == 0);
	CHECK(p.nid == 2 && streq(&p.id[0].field, "name") &&
	      streq(&p.id[0].value, "sodr") && p.id[1].value.s == NULL);
	CHECK(RUN(&x, &p, "a ID ()\r\n", 0) == 0 && p.nid == 0);
	CHECK(RUN(&x, &p, "a ID (\"name\")\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a ID FOO\r\n", 0) == IMAP_PARSE_BAD);

	/* COPY, MOVE, UID EXPUNGE. */
	CHECK(RUN(&x, &p, "a COPY 2:4 MEETING\r\n", 0) == 0 &&
	      p.set.n == 1 && streq(&p.s1, "MEETING"));
	CHECK(RUN(&x, &p, "a UID MOVE 42:69 foo\r\n", 0) == 0 && x.c.uid);
	CHECK(RUN(&x, &p, "a UID EXPUNGE 3000:3002\r\n", 0) == 0 &&
	      p.set.r[0].lo == 3000 && p.set.r[0].hi == 3002);
	CHECK(RUN(&x, &p, "a EXPUNGE\r\n", 0) == 0);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Sequence sets                                                        */
/* ------------------------------------------------------------------ */

static int seq(struct ctx *x, const char *set, struct imap_seqset *out)
{
	char wire[256];
	int n = snprintf(wire, sizeof(wire), "a FETCH %s FLAGS\r\n", set);
	struct parsed p;
	int rc = run(x, &p, wire, (size_t)n, 0);
	*out = p.set;
	return rc;
}

static void test_seqsets(void)
{
	struct ctx x;
	struct imap_seqset s;
	struct imap_range *r;
	size_t n;

	ctx_init(&x, NULL);
	CHECK(seq(&x, "1", &s) == 0 && s.n == 1 && s.r[0].lo == 1 && !s.star);
	CHECK(seq(&x, "5:2", &s) == 0 && s.n == 1 && s.r[0].lo == 2 &&
	      s.r[0].hi == 5);
	CHECK(seq(&x, "1,3:4,2,10", &s) == 0 && s.n == 2 && s.r[0].lo == 1 &&
	      s.r[0].hi == 4 && s.r[1].lo == 10);
	CHECK(seq(&x, "*:*", &s) == 0 && s.star && s.n == 0 &&
	      s.star_lo == UINT32_MAX && s.star_hi == 0);
	CHECK(seq(&x, "4294967295", &s) == 0 && s.r[0].lo == UINT32_MAX);
	CHECK(seq(&x, "1:4294967295,7", &s) == 0 && s.n == 1);
	CHECK(seq(&x, "$", &s) == 0 && s.dollar);

	CHECK(seq(&x, "1:", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "0", &s) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "sequence number 0 is invalid");
	CHECK(seq(&x, "3:0", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "a", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "4294967296", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "1,,2", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "1,", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, ":1", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "$,1", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "1:2:3", &s) == IMAP_PARSE_BAD);
	CHECK(seq(&x, "1.5", &s) == IMAP_PARSE_BAD);

	/* "*" resolved against the mailbox (RFC 9051 seq-range examples). */
	CHECK(seq(&x, "2,4:7,9,12:*", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 15, &r, &n) == 0 && n == 4 &&
	      r[3].lo == 12 && r[3].hi == 15);
	CHECK(seq(&x, "*:4,5:7", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 10, &r, &n) == 0 && n == 1 &&
	      r[0].lo == 4 && r[0].hi == 10);
	CHECK(seq(&x, "3291:*", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 100, &r, &n) == 0 && n == 1 &&
	      r[0].lo == 100 && r[0].hi == 3291);
	/* Merging before resolving would lose this: 5:8 u 3..6 = 3..8. */
	CHECK(seq(&x, "5:8,6:*", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 3, &r, &n) == 0 && n == 1 &&
	      r[0].lo == 3 && r[0].hi == 8);
	CHECK(seq(&x, "1:*", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 0, &r, &n) == 0 && n == 0);
	CHECK(seq(&x, "1,5:6,*", &s) == 0);
	CHECK(imap_seqset_resolve(&x.c, &s, 9, &r, &n) == 0 && n == 3);
	CHECK(imap_ranges_contain(r, n, 9) && imap_ranges_contain(r, n, 5) &&
	      !imap_ranges_contain(r, n, 7) && !imap_ranges_contain(r, n, 2));
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* FETCH and STORE                                                      */
/* ------------------------------------------------------------------ */

static const char *fetch_names(struct imap_fetch *f)
{
	static char out[512];
	struct imap_wbuf w;

	imap_wbuf_init(&w);
	for (struct imap_fetch_att *a = f->atts; a; a = a->next) {
		if (a != f->atts)
			imap_write_byte(&w, ' ');
		imap_write_fetch_name(&w, a, 0);
	}
	size_t n = w.len < sizeof(out) - 1 ? w.len : sizeof(out) - 1;
	if (n)
		memcpy(out, w.data, n);
	out[n] = '\0';
	imap_wbuf_free(&w);
	return out;
}

static void test_fetch(void)
{
	struct ctx x;
	struct parsed p;

	ctx_init(&x, NULL);
	CHECK(RUN(&x, &p, "a FETCH 1:* ALL\r\n", 0) == 0);
	CHECK_STR(fetch_names(&p.fetch), "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE");
	CHECK(RUN(&x, &p, "a FETCH 1 fast\r\n", 0) == 0);
	CHECK_STR(fetch_names(&p.fetch), "FLAGS INTERNALDATE RFC822.SIZE");
	CHECK(RUN(&x, &p, "a FETCH 1 FULL\r\n", 0) == 0);
	CHECK_STR(fetch_names(&p.fetch),
		  "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY");
	CHECK(p.fetch.natts == 5);
	CHECK(RUN(&x, &p, "a FETCH 1 (ALL)\r\n", 0) == IMAP_PARSE_BAD);

	CHECK(RUN(&x, &p, "a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS (From "
			  "Subject)]<0.100>)\r\n", 0) == 0);
	struct imap_fetch_att *a = p.fetch.atts;
	CHECK(a && a->kind == IMAP_FETCH_BODY_SECTION && a->peek);
	CHECK(a->section.nparts == 2 && a->section.part[0] == 1 &&
	      a->section.part[1] == 2);
	CHECK(a->section.text == IMAP_SECTION_HEADER_FIELDS &&
	      a->section.nfields == 2 && streq(&a->section.fields[1], "Subject"));
	CHECK(a->partial && a->origin == 0 && a->count == 100);
	CHECK_STR(fetch_names(&p.fetch),
		  "BODY[1.2.HEADER.FIELDS (From Subject)]<0>");

	CHECK(RUN(&x, &p, "a FETCH 2 (flags body[] BODY[TEXT]<10.5> "
			  "BODY[3.MIME] BODY[HEADER.FIELDS.NOT (X-A)] "
			  "RFC822.HEADER rfc822 RFC822.TEXT BODYSTRUCTURE BODY "
			  "UID ENVELOPE INTERNALDATE RFC822.SIZE MODSEQ)\r\n",
		  0) == 0);
	CHECK_STR(fetch_names(&p.fetch),
		  "FLAGS BODY[] BODY[TEXT]<10> BODY[3.MIME] "
		  "BODY[HEADER.FIELDS.NOT (X-A)] RFC822.HEADER RFC822 "
		  "RFC822.TEXT BODYSTRUCTURE BODY UID ENVELOPE INTERNALDATE "
		  "RFC822.SIZE MODSEQ");
	CHECK(p.fetch.atts->next->section.text == IMAP_SECTION_ALL);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[4.2.2.1]\r\n", 0) == 0 &&
	      p.fetch.atts->section.nparts == 4);

	CHECK(RUN(&x, &p, "a FETCH 1 BODY[MIME]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "MIME needs a part number");
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[0]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[1.]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[FOO]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "invalid section FOO");
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[HEADER.FIELDS]\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[HEADER.FIELDS ()]\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[HEADER.FIELDS (A:B)]\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[TEXT\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[]<0.0>\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY[]<5>\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODY.PEEK\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BODYSTRUCTURE[]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 (FOO)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown FETCH attribute FOO");
	CHECK(RUN(&x, &p, "a FETCH 1 (FLAGS\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 ()\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1\r\n", 0) == IMAP_PARSE_BAD);

	/* BINARY (RFC 3516) only when advertised. */
	CHECK(RUN(&x, &p, "a FETCH 1 BINARY[1]\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 (BINARY.PEEK[1.2]<0.10> BINARY.SIZE[1] "
			  "BINARY[])\r\n", IMAP_PARSE_BINARY) == 0);
	CHECK_STR(fetch_names(&p.fetch), "BINARY[1.2]<0> BINARY.SIZE[1] BINARY[]");
	CHECK(p.fetch.atts->peek && p.fetch.atts->count == 10);
	CHECK(RUN(&x, &p, "a FETCH 1 BINARY[1.HEADER]\r\n", IMAP_PARSE_BINARY) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 BINARY.SIZE[1]<0.1>\r\n",
		  IMAP_PARSE_BINARY) == IMAP_PARSE_BAD);

	/* UID FETCH adds UID; CHANGEDSINCE adds MODSEQ. */
	CHECK(RUN(&x, &p, "a UID FETCH 1:* (FLAGS)\r\n", 0) == 0);
	CHECK_STR(fetch_names(&p.fetch), "FLAGS UID");
	CHECK(RUN(&x, &p, "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 "
			  "VANISHED)\r\n", 0) == 0);
	CHECK(p.fetch.changedsince_set && p.fetch.changedsince == 12345 &&
	      p.fetch.vanished);
	CHECK_STR(fetch_names(&p.fetch), "FLAGS UID MODSEQ");
	CHECK(RUN(&x, &p, "a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
		  0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "VANISHED is allowed only in UID FETCH");
	CHECK(RUN(&x, &p, "a UID FETCH 1 FLAGS (VANISHED)\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a FETCH 1 FLAGS (FOO)\r\n", 0) == IMAP_PARSE_BAD);

	/* STORE. */
	CHECK(RUN(&x, &p, "a STORE 2:4 +FLAGS.SILENT (\\Deleted $Junk)\r\n", 0)
	      == 0);
	CHECK(p.store.op == IMAP_STORE_ADD && p.store.silent &&
	      p.store.flags.n == 2 && streq(&p.store.flags.v[0], "\\Deleted"));
	CHECK(RUN(&x, &p, "a STORE 1 flags \\Seen \\Flagged\r\n", 0) == 0);
	CHECK(p.store.op == IMAP_STORE_REPLACE && !p.store.silent &&
	      p.store.flags.n == 2);
	CHECK(RUN(&x, &p, "a STORE 1 FLAGS ()\r\n", 0) == 0 &&
	      p.store.flags.n == 0);
	CHECK(RUN(&x, &p, "a UID STORE 7,3:9 (UNCHANGEDSINCE 12121230045) "
			  "-FLAGS (\\Seen)\r\n", 0) == 0);
	CHECK(p.store.op == IMAP_STORE_REMOVE && p.store.unchangedsince_set &&
	      p.store.unchangedsince == UINT64_C(12121230045));
	CHECK(RUN(&x, &p, "a STORE 1 FLAGS (\\*)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a STORE 1 XFLAGS (\\Seen)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a STORE 1 +FLAGS (\\Seen\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a STORE 1 +FLAGS\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a STORE 1 (FOO 1) FLAGS (\\Seen)\r\n", 0) ==
	      IMAP_PARSE_BAD);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* SEARCH                                                               */
/* ------------------------------------------------------------------ */

/* A compact rendering of a search tree, for comparisons. */
static void render_key(const struct imap_search_key *k, char *out, size_t cap)
{
	static const char *const names[] = {
		[IMAP_SK_AND] = "AND", [IMAP_SK_OR] = "OR", [IMAP_SK_NOT] = "NOT",
		[IMAP_SK_ALL] = "ALL", [IMAP_SK_SEEN] = "SEEN",
		[IMAP_SK_FLAGGED] = "FLAGGED", [IMAP_SK_DRAFT] = "DRAFT",
		[IMAP_SK_DELETED] = "DELETED", [IMAP_SK_FROM] = "FROM",
		[IMAP_SK_SINCE] = "SINCE", [IMAP_SK_SEQSET] = "SET",
		[IMAP_SK_UID] = "UID", [IMAP_SK_TEXT] = "TEXT",
		[IMAP_SK_HEADER] = "HEADER", [IMAP_SK_UNSEEN] = "UNSEEN",
	};
	size_t len = strlen(out);
	const char *n = (size_t)k->op < sizeof(names) / sizeof(*names) &&
				names[k->op] ? names[k->op] : "?";

	snprintf(out + len, cap - len, "%s", n);
	if (k->str.s) {
		len = strlen(out);
		snprintf(out + len, cap - len, ":%s", k->str.s);
	}
	if (k->child) {
		len = strlen(out);
		snprintf(out + len, cap - len, "(");
		for (const struct imap_search_key *c = k->child; c; c = c->next) {
			if (c != k->child) {
				len = strlen(out);
				snprintf(out + len, cap - len, " ");
			}
			render_key(c, out, cap);
		}
		len = strlen(out);
		snprintf(out + len, cap - len, ")");
	}
}

static const char *tree(const struct imap_search *s)
{
	static char out[512];
	out[0] = '\0';
	if (s->root)
		render_key(s->root, out, sizeof(out));
	return out;
}

static void test_search(void)
{
	struct ctx x;
	struct parsed p;

	ctx_init(&x, NULL);
	CHECK(RUN(&x, &p, "a SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "
			  "\"Smith\"\r\n", 0) == 0);
	CHECK_STR(tree(&p.search), "AND(FLAGGED SINCE NOT(FROM:Smith))");
	struct imap_search_key *since = p.search.root->child->next;
	CHECK(since->date.year == 1994 && since->date.mon == 2 &&
	      since->date.day == 1);
	CHECK(!p.search.esearch);

	CHECK(RUN(&x, &p, "a SEARCH OR (SEEN FLAGGED) NOT DRAFT\r\n", 0) == 0);
	CHECK_STR(tree(&p.search), "AND(OR(AND(SEEN FLAGGED) NOT(DRAFT)))");
	CHECK(RUN(&x, &p, "a SEARCH OR OR SEEN DELETED UID 1:5,7 2:*\r\n", 0)
	      == 0);
	CHECK_STR(tree(&p.search), "AND(OR(OR(SEEN DELETED) UID) SET)");
	CHECK(RUN(&x, &p, "a SEARCH ((seen) (NOT (unseen)))\r\n", 0) == 0);
	CHECK_STR(tree(&p.search),
		  "AND(AND(AND(SEEN) AND(NOT(AND(UNSEEN)))))");
	CHECK(RUN(&x, &p, "a SEARCH $\r\n", 0) == 0 &&
	      p.search.root->child->set.dollar);

	/* CHARSET. */
	CHECK(RUN(&x, &p, "a SEARCH CHARSET UTF-8 TEXT {6}\r\n"
			  "\xe6\x97\xa5\xe6\x9c\xac\r\n", 0) == 0);
	CHECK_STR(tree(&p.search), "AND(TEXT:\xe6\x97\xa5\xe6\x9c\xac)");
	CHECK(RUN(&x, &p, "a SEARCH CHARSET us-ascii ALL\r\n", 0) == 0);
	CHECK(RUN(&x, &p, "a SEARCH CHARSET ISO-8859-1 TEXT x\r\n", 0) ==
	      IMAP_PARSE_BADCHARSET);
	CHECK(RUN(&x, &p, "a SEARCH CHARSET\r\n", 0) == IMAP_PARSE_BAD);

	/* ESEARCH RETURN options (RFC 4731, RFC 5182). */
	CHECK(RUN(&x, &p, "a SEARCH RETURN (MIN COUNT) UNSEEN\r\n", 0) == 0);
	CHECK(p.search.esearch &&
	      p.search.ret == (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_COUNT));
	CHECK(RUN(&x, &p, "a UID SEARCH RETURN () CHARSET UTF-8 ALL\r\n", 0)
	      == 0);
	CHECK(p.search.esearch && p.search.ret == IMAP_SEARCH_RET_ALL);
	CHECK(RUN(&x, &p, "a SEARCH RETURN (SAVE MAX ALL) ALL\r\n", 0) == 0 &&
	      p.search.ret == (IMAP_SEARCH_RET_SAVE | IMAP_SEARCH_RET_MAX |
			       IMAP_SEARCH_RET_ALL));
	CHECK(RUN(&x, &p, "a SEARCH RETURN (FOO) ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown RETURN option FOO");

	/* Every key with an argument. */
	CHECK(RUN(&x, &p, "a SEARCH ANSWERED BCC a BEFORE \"2-Mar-2020\" BODY b "
			  "CC c DELETED DRAFT FLAGGED FROM d HEADER Message-ID "
			  "<x@y> KEYWORD $Forwarded LARGER 1000 NEW OLD ON "
			  "1-Jan-2000 RECENT SEEN SENTBEFORE 1-Jan-2000 SENTON "
			  "1-Jan-2000 SENTSINCE 1-Jan-2000 SMALLER 5 SUBJECT e "
			  "TEXT f TO g UID 1 UNANSWERED UNDELETED UNDRAFT "
			  "UNFLAGGED UNKEYWORD foo UNSEEN 1:3 ALL\r\n", 0) == 0);
	size_t nkeys = 0;
	for (struct imap_search_key *k = p.search.root->child; k; k = k->next)
		nkeys++;
	CHECK(nkeys == 33);
	CHECK(RUN(&x, &p, "a SEARCH HEADER X-A \"\"\r\n", 0) == 0);
	CHECK_STR(tree(&p.search), "AND(HEADER:)");
	CHECK(streq(&p.search.root->child->str2, "X-A"));
	CHECK(RUN(&x, &p, "a SEARCH MODSEQ 620162338\r\n", 0) == 0 &&
	      p.search.modseq_used &&
	      p.search.root->child->num == 620162338);
	CHECK(RUN(&x, &p, "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
		  0) == 0);
	CHECK(streq(&p.search.root->child->str2, "/flags/\\draft") &&
	      streq(&p.search.root->child->str, "ALL"));
	CHECK(RUN(&x, &p, "a SEARCH MODSEQ \"/flags/x\" some 1\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH OLDER 3600 YOUNGER 60 SAVEDBEFORE "
			  "1-Jan-2020 SAVEDON 1-Jan-2020 SAVEDSINCE 1-Jan-2020 "
			  "SAVEDATESUPPORTED\r\n", 0) == 0);
	CHECK(RUN(&x, &p, "a SEARCH YOUNGER 0\r\n", 0) == IMAP_PARSE_BAD);

	/* Errors. */
	CHECK(RUN(&x, &p, "a SEARCH\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH FOO\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown search key FOO");
	CHECK(RUN(&x, &p, "a SEARCH ()\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH (SEEN\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH SEEN)\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH OR SEEN\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH NOT\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH FROM\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH 0\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH LARGER x\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SEARCH KEYWORD \\Seen\r\n", 0) == IMAP_PARSE_BAD);

	/* Hostile nesting is refused, not recursed into. */
	char deep[1024];
	size_t n = (size_t)snprintf(deep, sizeof(deep), "a SEARCH ");
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "NOT ");
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "ALL\r\n");
	CHECK(run(&x, &p, deep, n, 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "search keys nested too deeply");
	n = (size_t)snprintf(deep, sizeof(deep), "a SEARCH ");
	for (int i = 0; i < 200; i++)
		deep[n++] = '(';
	memcpy(deep + n, "ALL\r\n", 5);
	CHECK(run(&x, &p, deep, n + 5, 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "search keys nested too deeply");
	/* ...but 60 levels are fine. */
	n = (size_t)snprintf(deep, sizeof(deep), "a SEARCH ");
	for (int i = 0; i < 60; i++)
		deep[n++] = '(';
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "ALL");
	for (int i = 0; i < 60; i++)
		deep[n++] = ')';
	memcpy(deep + n, "\r\n", 2);
	CHECK(run(&x, &p, deep, n + 2, 0) == 0);
	ctx_free(&x);
}

/* SORT and THREAD arguments (RFC 5256 §5, RFC 5957). */
static void test_sort_thread(void)
{
	struct ctx x;
	struct parsed p;

	ctx_init(&x, NULL);
	CHECK(RUN(&x, &p, "a SORT (SUBJECT REVERSE date displayfrom) UTF-8 ALL\r\n", 0) == 0);
	CHECK(p.sort.ncrit == 3 && p.sort.crit[0].key == IMAP_SORT_SUBJECT &&
	      !p.sort.crit[0].reverse && p.sort.crit[1].key == IMAP_SORT_DATE &&
	      p.sort.crit[1].reverse && p.sort.crit[2].key == IMAP_SORT_DISPLAYFROM);
	CHECK_STR(tree(&p.sort.search), "AND(ALL)");
	CHECK(RUN(&x, &p, "a UID SORT (ARRIVAL) \"us-ascii\" FROM x $\r\n", 0) == 0);
	CHECK_STR(tree(&p.sort.search), "AND(FROM:x SET)");
	CHECK(RUN(&x, &p, "a SORT (ARRIVAL) KOI8-R ALL\r\n", 0) == IMAP_PARSE_BADCHARSET);
	CHECK(RUN(&x, &p, "a SORT (FOO) UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "unknown sort criterion FOO");
	CHECK(RUN(&x, &p, "a SORT () UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT (REVERSE) UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT (REVERSE REVERSE SIZE) UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT SIZE UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT (SIZE) UTF-8\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT (SIZE) ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a SORT (SIZE SIZE SIZE SIZE SIZE SIZE SIZE SIZE SIZE SIZE SIZE "
	                  "SIZE SIZE SIZE SIZE SIZE SIZE) UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a THREAD REFERENCES UTF-8 SINCE 5-Mar-2000\r\n", 0) == 0);
	CHECK(p.thread.alg == IMAP_THREAD_REFERENCES);
	CHECK(RUN(&x, &p, "a UID THREAD orderedsubject US-ASCII TEXT gewp\r\n", 0) == 0);
	CHECK(p.thread.alg == IMAP_THREAD_ORDEREDSUBJECT);
	CHECK(RUN(&x, &p, "a THREAD REFS UTF-8 ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a THREAD REFERENCES ALL\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a THREAD REFERENCES X-UNKNOWN ALL\r\n", 0) == IMAP_PARSE_BADCHARSET);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Dates and APPEND                                                     */
/* ------------------------------------------------------------------ */

static int search_date(struct ctx *x, const char *date, struct imap_date *d)
{
	char wire[128];
	struct parsed p;
	int n = snprintf(wire, sizeof(wire), "a SEARCH ON %s\r\n", date);
	int rc = run(x, &p, wire, (size_t)n, 0);
	if (rc == 0)
		*d = p.search.root->child->date;
	return rc;
}

static int append_date(struct ctx *x, const char *date,
		       struct imap_datetime *dt)
{
	char wire[128];
	struct parsed p;
	int n = snprintf(wire, sizeof(wire),
			 "a APPEND INBOX \"%s\" {1+}\r\nx\r\n", date);
	int rc = run(x, &p, wire, (size_t)n, 0);
	if (rc == 0)
		*dt = p.append.date;
	return rc;
}

static void test_dates_append(void)
{
	struct ctx x;
	struct parsed p;
	struct imap_date d;
	struct imap_datetime dt;

	ctx_init(&x, NULL);
	CHECK(search_date(&x, "29-Feb-2024", &d) == 0 && d.day == 29);
	CHECK(imap_date_to_time(&d) == 1709164800);
	CHECK(search_date(&x, "29-Feb-2000", &d) == 0);
	CHECK(search_date(&x, "\"1-jan-2020\"", &d) == 0 && d.mon == 1);
	CHECK(search_date(&x, "31-Dec-1999", &d) == 0);
	CHECK(search_date(&x, "29-Feb-2023", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "29-Feb-1900", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "31-Apr-2020", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "0-Jan-2020", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "1-Foo-2020", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "1-Jan-20", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "123-Jan-2020", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "\"1-Jan-2020", &d) == IMAP_PARSE_BAD);
	CHECK(search_date(&x, "1/Jan/2020", &d) == IMAP_PARSE_BAD);

	CHECK(append_date(&x, "17-Jul-1996 02:44:25 -0700", &dt) == 0);
	CHECK(dt.zone == -420 && dt.hour == 2 && dt.sec == 25);
	CHECK(imap_datetime_to_time(&dt) == 837596665);
	CHECK(append_date(&x, " 7-Jul-1996 02:44:25 +0000", &dt) == 0 &&
	      dt.date.day == 7);
	CHECK(append_date(&x, "7-Jul-1996 02:44:25 +0000", &dt) == 0);
	CHECK(append_date(&x, "01-Jan-1970 01:00:00 +0100", &dt) == 0 &&
	      imap_datetime_to_time(&dt) == 0);
	CHECK(append_date(&x, "31-Dec-2016 23:59:60 +0000", &dt) == 0);
	CHECK(append_date(&x, "17-Jul-1996 24:00:00 +0000", &dt) ==
	      IMAP_PARSE_BAD);
	CHECK(append_date(&x, "17-Jul-1996 02:60:00 +0000", &dt) ==
	      IMAP_PARSE_BAD);
	CHECK(append_date(&x, "17-Jul-1996 02:44:25 +0060", &dt) ==
	      IMAP_PARSE_BAD);
	CHECK(append_date(&x, "17-Jul-1996 02:44:25 0700", &dt) ==
	      IMAP_PARSE_BAD);
	CHECK(append_date(&x, "17-Jul-1996 02:44 +0000", &dt) == IMAP_PARSE_BAD);
	CHECK(append_date(&x, "17-Jul-1996", &dt) == IMAP_PARSE_BAD);
	CHECK(append_date(&x, "30-Feb-1996 02:44:25 +0000", &dt) ==
	      IMAP_PARSE_BAD);

	/* APPEND forms. */
	CHECK(RUN(&x, &p, "A003 APPEND saved-messages (\\Seen) "
			  "\"05-Jan-2024 10:00:00 +0100\" {5}\r\nhello\r\n", 0)
	      == 0);
	CHECK(streq(&p.append.mailbox, "saved-messages") &&
	      p.append.flags.n == 1 && p.append.has_date &&
	      p.append.date.date.year == 2024 &&
	      p.append.message.len == 5 &&
	      memcmp(p.append.message.s, "hello", 5) == 0);
	CHECK(RUN(&x, &p, "a APPEND inbox {0}\r\n\r\n", 0) == 0 &&
	      streq(&p.append.mailbox, "INBOX") && p.append.message.len == 0 &&
	      !p.append.has_date && p.append.flags.n == 0);
	CHECK(RUN(&x, &p, "a APPEND INBOX () {1}\r\nx\r\n", 0) == 0);
	CHECK(RUN(&x, &p, "a APPEND INBOX \"hello\"\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX (\\Seen) \"05-Jan-2024 10:00:00 "
			  "+0100\" \"hello\"\r\n", 0) == IMAP_PARSE_BAD);
	CHECK_STR(x.c.error, "the message must be a literal");
	CHECK(RUN(&x, &p, "a APPEND INBOX {1}\r\nx extra\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX {3}\r\na\0b\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX ~{3}\r\nabc\r\n", 0) == IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX ~{3}\r\na\0b\r\n",
		  IMAP_PARSE_BINARY) == 0);
	CHECK(p.append.literal8 && p.append.message.len == 3);
	CHECK(RUN(&x, &p, "a APPEND INBOX ~{3+}\r\nabc\r\n", IMAP_PARSE_BINARY)
	      == 0 && p.append.literal8);
	CHECK(RUN(&x, &p, "a APPEND INBOX UTF8 (~{3}\r\nabc)\r\n",
		  IMAP_PARSE_UTF8) == 0 && p.append.utf8 && p.append.literal8);
	CHECK(RUN(&x, &p, "a APPEND INBOX UTF8 (~{3}\r\nabc)\r\n", 0) ==
	      IMAP_PARSE_BAD);
	CHECK(RUN(&x, &p, "a APPEND INBOX UTF8 ({3}\r\nabc)\r\n",
		  IMAP_PARSE_UTF8) == IMAP_PARSE_BAD);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Writer                                                               */
/* ------------------------------------------------------------------ */

static const char *wstr(struct imap_wbuf *w)
{
	static char out[4096];
	size_t n = w->len < sizeof(out) - 1 ? w->len : sizeof(out) - 1;
	if (n)
		memcpy(out, w->data, n);
	out[n] = '\0';
	imap_wbuf_reset(w);
	return out;
}

static void test_writer(void)
{
	struct imap_wbuf w;

	imap_wbuf_init(&w);
	imap_write_astring(&w, "foo", 3, 0);
	CHECK_STR(wstr(&w), "foo");
	imap_write_astring(&w, "a]b", 3, 0);
	CHECK_STR(wstr(&w), "a]b");
	imap_write_astring(&w, "foo bar", 7, 0);
	CHECK_STR(wstr(&w), "\"foo bar\"");
	imap_write_astring(&w, "NIL", 3, 0);
	CHECK_STR(wstr(&w), "\"NIL\"");
	imap_write_astring(&w, "", 0, 0);
	CHECK_STR(wstr(&w), "\"\"");
	imap_write_astring(&w, "a%", 2, 0);
	CHECK_STR(wstr(&w), "\"a%\"");
	imap_write_string(&w, "foo", 3, 0);
	CHECK_STR(wstr(&w), "\"foo\"");
	imap_write_string(&w, "a\"b\\c", 5, 0);
	CHECK_STR(wstr(&w), "\"a\\\"b\\\\c\"");
	imap_write_string(&w, "x\r\ny", 4, 0);
	CHECK_STR(wstr(&w), "{4}\r\nx\r\ny");
	imap_write_string(&w, "caf\xc3\xa9", 5, 0);
	CHECK_STR(wstr(&w), "{5}\r\ncaf\xc3\xa9");
	imap_write_string(&w, "caf\xc3\xa9", 5, IMAP_WRITE_UTF8);
	CHECK_STR(wstr(&w), "\"caf\xc3\xa9\"");
	imap_write_string(&w, "caf\xc3", 4, IMAP_WRITE_UTF8);
	CHECK_STR(wstr(&w), "{4}\r\ncaf\xc3");
	imap_write_nstring(&w, NULL, 0, 0);
	CHECK_STR(wstr(&w), "NIL");
	imap_write_nstring(&w, "", 0, 0);
	CHECK_STR(wstr(&w), "\"\"");
	imap_write_string(&w, "a\0b", 3, 0);
	CHECK(w.len == 8 && memcmp(w.data, "{3}\r\na\0b", 8) == 0);
	imap_wbuf_reset(&w);
	char longv[IMAP_WRITE_QUOTED_MAX + 1];
	memset(longv, 'z', sizeof(longv));
	imap_write_astring(&w, longv, sizeof(longv), 0);
	CHECK(w.len > 8 && memcmp(w.data, "{1025}\r\n", 8) == 0);
	imap_wbuf_reset(&w);
	imap_write_literal8(&w, "ab", 2);
	CHECK_STR(wstr(&w), "~{2}\r\nab");

	const char *taipei = "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
			     "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e";
	imap_write_mailbox(&w, taipei, strlen(taipei), 0);
	CHECK_STR(wstr(&w), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	imap_write_mailbox(&w, "\xe6\x97\xa5 x", 5, 0);
	CHECK_STR(wstr(&w), "\"&ZeU- x\"");
	imap_write_mailbox(&w, "\xe6\x97\xa5", 3, IMAP_WRITE_UTF8);
	CHECK_STR(wstr(&w), "\"\xe6\x97\xa5\"");
	imap_write_mailbox(&w, "INBOX", 5, 0);
	CHECK_STR(wstr(&w), "INBOX");
	imap_write_mailbox(&w, "A&B", 3, 0);
	CHECK_STR(wstr(&w), "A&-B");

	const char *flags[] = { "\\Seen", "$Forwarded" };
	imap_write_flag_list(&w, flags, 2);
	CHECK_STR(wstr(&w), "(\\Seen $Forwarded)");
	imap_write_flag_list(&w, flags, 0);
	CHECK_STR(wstr(&w), "()");

	uint32_t uids[] = { 1, 2, 3, 5, 7, 8, 9 };
	imap_write_uid_set(&w, uids, 7);
	CHECK_STR(wstr(&w), "1:3,5,7:9");
	uint32_t unsorted[] = { 5, 3, 4, 4294967295u };
	imap_write_uid_set(&w, unsorted, 4);
	CHECK_STR(wstr(&w), "5,3:4,4294967295");
	imap_write_uid_set(&w, uids, 0);
	CHECK_STR(wstr(&w), "");
	struct imap_range r[] = { { 41, 41 }, { 43, 116 }, { 118, 118 } };
	imap_write_ranges(&w, r, 3);
	CHECK_STR(wstr(&w), "41,43:116,118");
	imap_write_u64(&w, 0);
	imap_write_byte(&w, ' ');
	imap_write_u64(&w, UINT64_MAX);
	imap_write_crlf(&w);
	CHECK_STR(wstr(&w), "0 18446744073709551615\r\n");
	CHECK(!w.oom);
	imap_wbuf_free(&w);

	/* What the writer quotes, the parser reads back. */
	struct ctx x;
	struct parsed p;
	const char *vals[] = { "plain", "with space", "q\"uote\\", "",
			       "NIL", "a]b", "x\r\ny", "{5}", "%*" };
	int bad = 0;
	ctx_init(&x, NULL);
	imap_wbuf_init(&w);
	for (size_t i = 0; i < sizeof(vals) / sizeof(*vals); i++) {
		imap_wbuf_reset(&w);
		imap_write_str(&w, "t LOGIN ");
		imap_write_astring(&w, vals[i], strlen(vals[i]), 0);
		imap_write_str(&w, " x\r\n");
		if (run(&x, &p, w.data, w.len, 0) != 0 || !streq(&p.s1, vals[i]))
			bad++;
	}
	CHECK(bad == 0);
	imap_wbuf_free(&w);
	ctx_free(&x);
}

/* ------------------------------------------------------------------ */
/* Robustness                                                           */
/* ------------------------------------------------------------------ */

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

static const char *const seeds[] = {
	"a LOGIN {3+}\r\nbob \"pw\"\r\n",
	"a SELECT INBOX (QRESYNC (1 2 1:5 (1:2 3:4)))\r\n",
	"a FETCH 1:*,3 (BODY.PEEK[1.2.HEADER.FIELDS (From Subject)]<0.100> "
	"BINARY[1]<0.5> FLAGS) (CHANGEDSINCE 5)\r\n",
	"a UID STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $x)\r\n",
	"a SEARCH RETURN (MIN) CHARSET UTF-8 OR (FROM x NOT TO {2+}\r\nab) "
	"UID 1:* HEADER X y SINCE 1-Jan-2020 MODSEQ \"/flags/x\" all 1\r\n",
	"a APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" ~{4+}\r\nab\x01c\r\n",
	"a LIST (SUBSCRIBED) \"\" (% \"&ZeVnLIqe-\") RETURN (STATUS (MESSAGES) "
	"X (a (b)))\r\n",
	"a STATUS foo (MESSAGES UIDNEXT)\r\n",
	"a ID (\"a\" NIL \"b\" {1+}\r\nc)\r\n",
	"a ENABLE QRESYNC\r\n",
	"a RENAME \"a b\" &-c\r\n",
};

static unsigned long fuzz_complete, fuzz_ok;

static const char specials[] = "(){}[]<>\"\\*%$:,.+-~ \r\n\0~{";

/* Feed WIRE through assembler, parser and dispatch until it is used up. */
static void fuzz_one(struct ctx *x, const char *wire, size_t len,
		     unsigned flags)
{
	size_t pos = 0;
	int guard = 0;
	struct parsed p;

	while (pos < len && guard++ < 1000) {
		enum imap_asm_status st = drive(&x->a, wire + pos, len - pos,
						&x->d);
		pos += x->d.consumed ? x->d.consumed : len - pos;
		if (st == IMAP_ASM_COMPLETE) {
			fuzz_complete++;
			if (imap_cmd_parse(&x->c, &x->a, flags) == 0 &&
			    dispatch(&x->c, &p) == 0)
				fuzz_ok++;
		}
		if (st == IMAP_ASM_CLOSE) {
			imap_asm_free(&x->a);
			imap_asm_init(&x->a, &default_limits);
		}
	}
	imap_asm_reset(&x->a);
}

static void test_robustness(void)
{
	struct ctx x;
	char buf[2048];
	int iterations = 30000;
	const char *env = getenv("IMAP_FUZZ_ITERATIONS");

	if (env && atoi(env) > 0)
		iterations = atoi(env);

	ctx_init(&x, NULL);
	for (int it = 0; it < iterations; it++) {
		unsigned flags = rnd() & 3;
		size_t len;
		if (it % 3 == 0) {
			/* Random bytes, biased towards IMAP punctuation. */
			len = rnd() % 300;
			for (size_t i = 0; i < len; i++) {
				uint32_t r = rnd();
				buf[i] = (r & 1) ? specials[r % sizeof(specials)]
						 : (char)(r >> 8);
			}
		} else {
			const char *s = seeds[rnd() % (sizeof(seeds) /
						       sizeof(*seeds))];
			len = strlen(s);
			memcpy(buf, s, len);
			int muts = (int)(rnd() % 4); /* some stay valid */
			for (int m = 0; m < muts && len > 0; m++) {
				size_t at = rnd() % len;
				switch (rnd() % 5) {
				case 0: /* flip */
					buf[at] = (char)rnd();
					break;
				case 1: /* special */
					buf[at] = specials[rnd() % sizeof(specials)];
					break;
				case 2: /* truncate */
					len = at;
					break;
				case 3: /* delete */
					memmove(buf + at, buf + at + 1, len - at - 1);
					len--;
					break;
				default: /* duplicate a span */
					if (len < sizeof(buf) / 2) {
						size_t span = rnd() % (len - at);
						memmove(buf + at + span, buf + at,
							len - at);
						len += span;
					}
					break;
				}
			}
		}
		/* Exercise exact-length buffers: ASan sees any over-read. */
		char *copy = malloc(len ? len : 1);
		if (len)
			memcpy(copy, buf, len);
		fuzz_one(&x, copy, len, flags);
		free(copy);
		if (it % 7 == 0) {
			char m[64], u[256];
			size_t ml = rnd() % sizeof(m), ul;
			for (size_t i = 0; i < ml; i++)
				m[i] = (rnd() & 1) ? "&-ABZaz09+,"[rnd() % 11]
						   : (char)rnd();
			if (imap_mutf7_decode(m, ml, u, ml + 1, &ul) == 0) {
				char back[512];
				size_t bl;
				/* What decodes must encode back identically. */
				CHECK(imap_mutf7_encode(u, ul, back, sizeof(back),
							&bl) == 0 &&
				      bl == ml && memcmp(back, m, ml) == 0);
			}
			(void)imap_mutf7_encode(m, ml, u, sizeof(u), &ul);
		}
	}
	ctx_free(&x);
	printf("robustness: %d inputs, %lu commands assembled, %lu parsed\n",
	       iterations, fuzz_complete, fuzz_ok);
	CHECK(fuzz_complete > 0 && fuzz_ok > 0);
}

int main(void)
{
	test_mutf7();
	test_assembler();
	test_literal_modes();
	test_commands();
	test_seqsets();
	test_fetch();
	test_search();
	test_sort_thread();
	test_dates_append();
	test_writer();
	test_robustness();
	return check_summary();
}
