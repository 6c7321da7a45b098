/*
 * fuzz_imap.c - libFuzzer target for the IMAP command assembler and parser
 * (protocols/imap/imap_parser.h).  The input is a client byte stream: it is
 * cut into lines and literal data exactly as server/conn.c and
 * protocols/imap/imap.c do, fed to the assembler, and every complete command
 * is parsed the way its handler would: imap_cmd_parse(), then, by command
 * name, the typed imap_parse_* helpers in the handler's order.  Each command
 * is parsed twice, without and with the UTF8/BINARY options.
 *
 * Beyond "no crash", results are checked against the header's promises:
 * strings NUL terminated without inner NULs, mailbox names valid UTF-8,
 * sequence sets sorted and merged, resolved ranges sorted and holding the maximum for "*", search
 * trees well formed.  An optional first line "#fuzz: sync|minus" picks the
 * literal mode (LITERAL+ otherwise).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/imap/imap_parser.h"

/* The connection's own line limit (server/conn.c) is above the
 * assembler's, so both refusals can happen. */
#define CONN_MAX_LINE 4096

static void fail(const char *what)
{
	fprintf(stderr, "imap parser broke its contract: %s\n", what);
	abort();
}

/* ------------------------------------------------------------- checks */

static bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		unsigned c = p[i];
		size_t n;
		unsigned min, cp;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) { n = 1; min = 0x80; cp = c & 0x1F; }
		else if ((c & 0xF0) == 0xE0) { n = 2; min = 0x800; cp = c & 0x0F; }
		else if ((c & 0xF8) == 0xF0) { n = 3; min = 0x10000; cp = c & 0x07; }
		else return false;
		if (i + n >= len)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

static void check_str(const struct imap_str *s)
{
	if (!s->s)
		return;
	if (s->s[s->len] != '\0')
		fail("string not NUL terminated");
	if (memchr(s->s, '\0', s->len))
		fail("NUL inside a parsed string");
}

static void check_mailbox(const struct imap_str *s)
{
	check_str(s);
	if (!s->s)
		fail("mailbox name is NIL");
	if (!utf8_valid(s->s, s->len))
		fail("mailbox name is not UTF-8");
}

static void check_ranges(const struct imap_range *r, size_t n, uint32_t lo, uint32_t hi)
{
	for (size_t i = 0; i < n; i++) {
		if (r[i].lo > r[i].hi || r[i].lo < lo || r[i].hi > hi)
			fail("range out of order or bounds");
		if (i > 0 && (uint64_t)r[i - 1].hi + 1 >= r[i].lo)
			fail("ranges not sorted and merged");
		if (!imap_ranges_contain(r, n, r[i].lo) || !imap_ranges_contain(r, n, r[i].hi))
			fail("imap_ranges_contain misses an end point");
		if (r[i].lo > 1 && imap_ranges_contain(r, n, r[i].lo - 1) &&
		    (i == 0 || r[i - 1].hi != r[i].lo - 1))
			fail("imap_ranges_contain finds a number outside");
	}
	if (imap_ranges_contain(r, n, 0))
		fail("0 is in a set");
}

static void check_seqset(struct imap_cmd *c, const struct imap_seqset *set)
{
	static const uint32_t maxes[] = { 0, 1, 7, 4294967295u };

	if (set->dollar)
		return;
	check_ranges(set->r, set->n, 1, UINT32_MAX);
	if (!set->star && set->n == 0)
		fail("empty sequence set");
	for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
		struct imap_range *r;
		size_t n;
		if (imap_seqset_resolve(c, set, maxes[i], &r, &n) != IMAP_PARSE_OK)
			continue; /* arena exhausted: allowed */
		/* Not clipped to MAX: "9:*" with max 7 is 7:9 (RFC 9051). */
		check_ranges(r, n, 1, UINT32_MAX);
		if (set->star && maxes[i] && !imap_ranges_contain(r, n, maxes[i]))
			fail("a set with * does not contain the maximum");
	}
}

static void check_flags(const struct imap_flags *f)
{
	for (size_t i = 0; i < f->n; i++) {
		check_str(&f->v[i]);
		if (f->v[i].len == 0)
			fail("empty flag");
	}
}

static void check_date(const struct imap_date *d)
{
	if (d->mon < 1 || d->mon > 12 || d->day < 1 || d->day > 31)
		fail("date out of range");
	(void)imap_date_to_time(d);
}

static void check_datetime(const struct imap_datetime *dt)
{
	check_date(&dt->date);
	if (dt->hour < 0 || dt->hour > 23 || dt->min < 0 || dt->min > 59 || dt->sec < 0 ||
	    dt->sec > 60)
		fail("time out of range");
	(void)imap_datetime_to_time(dt);
}

static void check_search_key(struct imap_cmd *c, const struct imap_search_key *k, int depth)
{
	if (depth > IMAP_MAX_DEPTH + 8)
		fail("search tree deeper than IMAP_MAX_DEPTH");
	for (; k; k = k->next) {
		size_t nchild = 0;
		for (const struct imap_search_key *ch = k->child; ch; ch = ch->next)
			nchild++;
		switch (k->op) {
		case IMAP_SK_OR:
			if (nchild != 2)
				fail("OR without two operands");
			break;
		case IMAP_SK_NOT:
			if (nchild != 1)
				fail("NOT without one operand");
			break;
		case IMAP_SK_AND:
			break;
		default:
			if (nchild)
				fail("a leaf key with children");
		}
		check_str(&k->str);
		check_str(&k->str2);
		if (k->op == IMAP_SK_SEQSET || k->op == IMAP_SK_UID)
			check_seqset(c, &k->set);
		if (k->op >= IMAP_SK_BEFORE && k->op <= IMAP_SK_SAVEDSINCE)
			check_date(&k->date);
		check_search_key(c, k->child, depth + 1);
	}
}

/* ----------------------------------------------------- the handlers' way */

static void cmd_login(struct imap_cmd *c)
{
	struct imap_str u, p;
	if (imap_parse_sp(c) || imap_parse_astring(c, &u) || imap_parse_sp(c) ||
	    imap_parse_astring(c, &p) || imap_parse_end(c))
		return;
	check_str(&u);
	check_str(&p);
}

static void cmd_authenticate(struct imap_cmd *c)
{
	struct imap_str mech, ir = { 0 };
	if (imap_parse_sp(c) || imap_parse_atom(c, &mech))
		return;
	check_str(&mech);
	if (!imap_parse_at_end(c) &&
	    (imap_parse_sp(c) || imap_parse_atom(c, &ir) || imap_parse_end(c)))
		return;
	check_str(&ir);
}

static void cmd_enable(struct imap_cmd *c)
{
	struct imap_str *caps;
	size_t n;
	if (imap_parse_enable(c, &caps, &n) || imap_parse_end(c))
		return;
	if (n == 0)
		fail("ENABLE without a capability");
	for (size_t i = 0; i < n; i++)
		check_str(&caps[i]);
}

static void cmd_id(struct imap_cmd *c)
{
	struct imap_id_pair *pairs;
	size_t n;
	if (imap_parse_sp(c) || imap_parse_id(c, &pairs, &n) || imap_parse_end(c))
		return;
	for (size_t i = 0; i < n; i++) {
		check_str(&pairs[i].field);
		check_str(&pairs[i].value);
	}
}

static void cmd_select(struct imap_cmd *c)
{
	struct imap_str name;
	struct imap_select_params p;
	if (imap_parse_sp(c) || imap_parse_mailbox(c, &name))
		return;
	check_mailbox(&name);
	if (imap_parse_select_params(c, &p) || imap_parse_end(c))
		return;
	if (p.qresync) {
		if (p.known_uids.n || p.known_uids.star)
			check_seqset(c, &p.known_uids);
		if (p.known_seqs.n || p.known_seqs.star) {
			check_seqset(c, &p.known_seqs);
			check_seqset(c, &p.known_seq_uids);
		}
	}
}

static void cmd_mailbox(struct imap_cmd *c)
{
	struct imap_str name;
	if (imap_parse_sp(c) || imap_parse_mailbox(c, &name) || imap_parse_end(c))
		return;
	check_mailbox(&name);
}

static void cmd_rename(struct imap_cmd *c)
{
	struct imap_str a, b;
	if (imap_parse_sp(c) || imap_parse_mailbox(c, &a) || imap_parse_sp(c) ||
	    imap_parse_mailbox(c, &b) || imap_parse_end(c))
		return;
	check_mailbox(&a);
	check_mailbox(&b);
}

static void cmd_list(struct imap_cmd *c)
{
	struct imap_list l;
	if (imap_parse_sp(c) || imap_parse_list(c, &l) || imap_parse_end(c))
		return;
	if (l.npatterns == 0)
		fail("LIST without a pattern");
	check_str(&l.reference);
	for (size_t i = 0; i < l.npatterns; i++)
		check_str(&l.patterns[i]);
	for (size_t i = 0; i < l.nsel; i++)
		check_str(&l.sel[i].name);
	for (size_t i = 0; i < l.nret; i++)
		check_str(&l.ret[i].name);
}

static void cmd_status(struct imap_cmd *c)
{
	struct imap_str name;
	unsigned items;
	if (imap_parse_sp(c) || imap_parse_mailbox(c, &name) || imap_parse_sp(c) ||
	    imap_parse_status_items(c, &items) || imap_parse_end(c))
		return;
	check_mailbox(&name);
	if (items == 0)
		fail("STATUS without an item");
}

static void cmd_append(struct imap_cmd *c)
{
	struct imap_append a;
	if (imap_parse_sp(c) || imap_parse_append(c, &a))
		return;
	check_mailbox(&a.mailbox);
	check_flags(&a.flags);
	if (a.has_date)
		check_datetime(&a.date);
	if (!a.message.s)
		fail("APPEND without a message");
	if (!a.literal8 && memchr(a.message.s, '\0', a.message.len))
		fail("NUL in a plain APPEND literal");
	(void)imap_parse_end(c);
}

static void cmd_search(struct imap_cmd *c)
{
	struct imap_search q;
	if (imap_parse_sp(c) || imap_parse_search(c, &q))
		return;
	if (!q.root)
		fail("SEARCH without keys");
	check_search_key(c, q.root, 0);
}

static void cmd_fetch(struct imap_cmd *c)
{
	struct imap_seqset set;
	struct imap_fetch f;
	size_t n = 0;
	if (imap_parse_sp(c) || imap_parse_seqset(c, &set) || imap_parse_sp(c) ||
	    imap_parse_fetch(c, &f) || imap_parse_end(c))
		return;
	check_seqset(c, &set);
	for (const struct imap_fetch_att *a = f.atts; a; a = a->next) {
		n++;
		if (a->partial && a->count == 0)
			fail("FETCH partial of 0 octets");
		for (size_t i = 0; i < a->section.nparts; i++)
			if (a->section.part[i] == 0)
				fail("FETCH section part 0");
		for (size_t i = 0; i < a->section.nfields; i++)
			check_str(&a->section.fields[i]);
	}
	if (n != f.natts || n == 0)
		fail("FETCH attribute count");
}

static void cmd_store(struct imap_cmd *c)
{
	struct imap_seqset set;
	struct imap_store st;
	if (imap_parse_sp(c) || imap_parse_seqset(c, &set) || imap_parse_sp(c) ||
	    imap_parse_store(c, &st))
		return;
	check_seqset(c, &set);
	check_flags(&st.flags);
	(void)imap_parse_end(c);
}

static void cmd_copy(struct imap_cmd *c)
{
	struct imap_seqset set;
	struct imap_str name;
	if (imap_parse_sp(c) || imap_parse_seqset(c, &set) || imap_parse_sp(c) ||
	    imap_parse_mailbox(c, &name) || imap_parse_end(c))
		return;
	check_seqset(c, &set);
	check_mailbox(&name);
}

static void cmd_expunge(struct imap_cmd *c)
{
	struct imap_seqset set;
	if (!c->uid) {
		(void)imap_parse_end(c);
		return;
	}
	if (imap_parse_sp(c) || imap_parse_seqset(c, &set) || imap_parse_end(c))
		return;
	check_seqset(c, &set);
}

/* Also reached by names no handler has: the generic helpers. */
static void cmd_other(struct imap_cmd *c)
{
	struct imap_str s;
	struct imap_flags f;
	struct imap_date d;
	struct imap_datetime dt;
	uint32_t n;
	uint64_t n64;

	while (!imap_parse_at_end(c)) {
		if (imap_parse_sp(c))
			return;
		if (imap_parse_peek(c, '(')) {
			if (imap_parse_flag_list(c, &f))
				return;
			check_flags(&f);
		} else if (imap_parse_peek(c, '"')) {
			size_t save = c->pos;
			if (imap_parse_datetime(c, &dt) == IMAP_PARSE_OK) {
				check_datetime(&dt);
				continue;
			}
			c->pos = save;
			if (imap_parse_string(c, &s))
				return;
			check_str(&s);
		} else {
			size_t save = c->pos;
			if (imap_parse_number64(c, &n64) == IMAP_PARSE_OK)
				continue;
			c->pos = save;
			if (imap_parse_number(c, &n) == IMAP_PARSE_OK)
				continue;
			c->pos = save;
			if (imap_parse_date(c, &d) == IMAP_PARSE_OK) {
				check_date(&d);
				continue;
			}
			c->pos = save;
			if (imap_parse_nstring(c, &s))
				return;
			check_str(&s);
		}
	}
}

static const struct {
	const char *name;
	void (*fn)(struct imap_cmd *c);
} handlers[] = {
	{ "LOGIN", cmd_login },
	{ "AUTHENTICATE", cmd_authenticate },
	{ "ENABLE", cmd_enable },
	{ "ID", cmd_id },
	{ "SELECT", cmd_select },
	{ "EXAMINE", cmd_select },
	{ "CREATE", cmd_mailbox },
	{ "DELETE", cmd_mailbox },
	{ "SUBSCRIBE", cmd_mailbox },
	{ "UNSUBSCRIBE", cmd_mailbox },
	{ "RENAME", cmd_rename },
	{ "LIST", cmd_list },
	{ "LSUB", cmd_list },
	{ "STATUS", cmd_status },
	{ "APPEND", cmd_append },
	{ "SEARCH", cmd_search },
	{ "FETCH", cmd_fetch },
	{ "STORE", cmd_store },
	{ "COPY", cmd_copy },
	{ "MOVE", cmd_copy },
	{ "EXPUNGE", cmd_expunge },
};

static void execute(struct imap_cmd *c, const struct imap_asm *a, unsigned flags)
{
	if (imap_cmd_parse(c, a, flags) != IMAP_PARSE_OK) {
		if (!c->error)
			fail("refusal without a reason");
		return;
	}
	check_str(&c->tag);
	for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
		if (strcmp(handlers[i].name, c->name) == 0) {
			handlers[i].fn(c);
			return;
		}
	}
	cmd_other(c);
}

/* ------------------------------------------------------------- driving */

struct session {
	struct imap_asm as;
	struct imap_cmd cmd;
	bool bytes_mode;
	bool closed;
};

static void step(struct session *s, enum imap_asm_status st)
{
	switch (st) {
	case IMAP_ASM_COMPLETE:
		s->bytes_mode = false;
		execute(&s->cmd, &s->as, 0);
		execute(&s->cmd, &s->as, IMAP_PARSE_UTF8 | IMAP_PARSE_BINARY);
		break;
	case IMAP_ASM_LITERAL:
		s->bytes_mode = true;
		break;
	case IMAP_ASM_NEED_LINE:
	case IMAP_ASM_DISCARDED:
		s->bytes_mode = false;
		break;
	case IMAP_ASM_REJECT:
		if (!imap_asm_error(&s->as))
			fail("refusal without a reason");
		(void)imap_asm_tag(&s->as);
		s->bytes_mode = imap_asm_in_literal(&s->as);
		break;
	case IMAP_ASM_CLOSE:
		if (!imap_asm_error(&s->as))
			fail("close without a reason");
		s->closed = true;
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_limits lim = {
		.max_line = 1024,
		.max_command = 16384,
		.max_append = 32768,
		.max_discard = 4096,
		.literal_mode = IMAP_LITERAL_PLUS,
	};
	struct session s = { 0 };
	size_t off = 0;
	char *in;

	if (size >= 6 && memcmp(data, "#fuzz:", 6) == 0) {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t end = nl ? (size_t)(nl - data) : size;
		char opts[64];
		snprintf(opts, sizeof opts, "%.*s", (int)(end < 63 ? end : 63), (const char *)data);
		if (strstr(opts, "sync"))
			lim.literal_mode = IMAP_LITERAL_SYNC_ONLY;
		else if (strstr(opts, "minus"))
			lim.literal_mode = IMAP_LITERAL_MINUS;
		off = nl ? end + 1 : size;
	}
	/* A writable copy, as the connection's input buffer is. */
	in = malloc(size + 1);
	if (!in)
		abort();
	memcpy(in, data, size);
	imap_asm_init(&s.as, &lim);
	imap_cmd_init(&s.cmd, 1 << 20);

	while (off < size && !s.closed) {
		char *p = in + off;
		size_t avail = size - off;
		if (s.bytes_mode) {
			size_t used = 0;
			enum imap_asm_status st = imap_asm_literal(&s.as, p, avail, &used);
			if (used > avail || used > avail + imap_asm_literal_left(&s.as))
				fail("literal took more than it was given");
			off += used;
			if (st != IMAP_ASM_LITERAL)
				step(&s, st);
			else if (used == 0)
				fail("literal made no progress");
			continue;
		}
		char *lf = memchr(p, '\n', avail);
		if (!lf)
			break; /* an unfinished last line: the client went away */
		size_t n = (size_t)(lf - p), len = n;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		off += n + 1;
		if (len > CONN_MAX_LINE) {
			/* imap.c imap_line_too_long: the command is lost. */
			imap_asm_reset(&s.as);
			s.bytes_mode = false;
			continue;
		}
		p[len] = '\0';
		step(&s, imap_asm_line(&s.as, p, len));
	}
	imap_cmd_free(&s.cmd);
	imap_asm_free(&s.as);
	free(in);
	return 0;
}
