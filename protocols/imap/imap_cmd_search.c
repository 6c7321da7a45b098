/*
 * imap_cmd_search.c - SEARCH and UID SEARCH (RFC 3501 §6.4.4, §7.2.5), with
 * the RETURN form of ESEARCH (RFC 4731), the saved result "$" of SEARCHRES
 * (RFC 5182), MODSEQ (RFC 7162 §3.1.5), OLDER and YOUNGER (RFC 5032) and the
 * SAVED* keys (RFC 8514) that the parser knows.  The search itself
 * (imap_search_run) is shared with SORT and THREAD (imap_cmd_sort.c), and
 * so is the Date: parser (imap_date_field_parse).
 *
 * SEARCHRES.  RETURN (SAVE) keeps the result in the view as UIDs, so an
 * expunge takes a message out of it without renumbering (RFC 5182 §2.1);
 * "$" in a key becomes a UID key over it.  A SEARCH with SAVE that fails
 * with NO empties it, a BAD leaves it alone (§2.1; the example 5 there
 * empties it after a NO without SAVE, against the normative text, which
 * we follow).  SAVE alone asks for no result, so nothing untagged is sent.
 *
 * IMAP4rev2 (RFC 9051 §6.4.4, Appendix E item 4) has no SEARCH response:
 * once the session has enabled it, a SEARCH without RETURN is answered as
 * RETURN (ALL), with ESEARCH.  RECENT and NEW then match nothing and OLD
 * everything, since such a session never sees a message as \Recent.
 *
 * The parser gives a key tree; this file compiles it (sequence sets
 * resolved, keywords looked up, dates turned into day numbers, cheap keys
 * moved ahead of costly ones) and evaluates it against each message of the
 * view in UID order.  Flag, size, date and UID keys read only the small
 * per-message records; a header or body key loads the message's bytes (and
 * for BODY/TEXT its MIME tree) only when the cheaper keys before it did not
 * already decide.  Searches that read bodies run in slices of
 * SLICE_BODY messages, each in its own short read transaction.
 *
 * Dates.  BEFORE/ON/SINCE compare the day of the internal date in UTC.  The
 * store keeps the internal date as an instant, not the zone it was given in,
 * so UTC is the one zone every session and FETCH INTERNALDATE can agree on.
 * SENTBEFORE/SENTON/SENTSINCE parse the Date: field per RFC 5322 (obsolete
 * forms of §4.3 included) and compare its calendar date as written, that is
 * in the sender's zone: RFC 3501 §6.4.4 says "disregarding time and
 * timezone".  A message with no parsable Date: falls back to its internal
 * date, as RFC 5256 §2.2 does for sorting.
 *
 * Limitation: the session has no way to yield to the loop between slices,
 * so one SEARCH over the bodies of a very large mailbox is still evaluated
 * in one go (short read transactions, but one loop turn).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "protocols/imap/imap_int.h"
#include "store/mime.h"

/* Messages per read transaction when bodies are read, and otherwise. */
#define SLICE_BODY 200
#define SLICE_RECORDS 20000

/* What evaluating a key costs: which parts of a message it reads. */
enum sk_cost {
	COST_RECORD = 0, /* the per-message record (flags, size, dates) */
	COST_HEADER = 1, /* the message's header */
	COST_BODY = 2,   /* the MIME tree and the decoded text parts */
};

/* A compiled search key. */
struct sk {
	enum imap_search_op op;
	enum sk_cost cost;
	struct sk **kids;               /* AND, OR, NOT */
	size_t nkids;
	const struct imap_str *str;     /* text to find (UTF-8) */
	const char *field;              /* header field name, NUL terminated */
	int64_t day;                    /* date keys: days since the epoch */
	uint64_t num;                   /* LARGER, SMALLER, MODSEQ, OLDER, YOUNGER */
	int kw;                         /* KEYWORD: bit index, -1 when unknown */
	struct imap_range *ranges;      /* SEQSET, UID: resolved */
	size_t nranges;
};

/* One message being evaluated, with what has been loaded of it so far. */
struct msg_ctx {
	store_txn *t;
	const struct imap_view *v;
	const struct store_message *m;
	uint32_t seq;
	time_t now;

	bool raw_tried;
	const char *raw;                /* NULL when the body is missing */
	size_t rawlen, hdrlen;

	bool hdr_text_done, body_text_done, sent_done;
	struct mime_buf hdr_text;       /* every field, unfolded and decoded */
	struct mime_buf body_text;      /* decoded text parts, UTF-8 */
	int64_t sent_day;
	struct mime_buf tmp, tmp2;
};

static int64_t day_of_time(int64_t t)
{
	return t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
}

static int64_t day_of_date(const struct imap_date *d)
{
	return day_of_time((int64_t)imap_date_to_time(d));
}

/* ------------------------------------------------------------ compiling */

static enum sk_cost leaf_cost(enum imap_search_op op)
{
	switch (op) {
	case IMAP_SK_BCC: case IMAP_SK_CC: case IMAP_SK_FROM:
	case IMAP_SK_SUBJECT: case IMAP_SK_TO: case IMAP_SK_HEADER:
	case IMAP_SK_SENTBEFORE: case IMAP_SK_SENTON: case IMAP_SK_SENTSINCE:
		return COST_HEADER;
	case IMAP_SK_BODY: case IMAP_SK_TEXT:
		return COST_BODY;
	default:
		return COST_RECORD;
	}
}

static int cmp_cost(const void *a, const void *b)
{
	const struct sk *x = *(struct sk *const *)a, *y = *(struct sk *const *)b;
	return (int)x->cost - (int)y->cost;
}

struct compile_env {
	struct imap_session *s;
	struct imap_cmd *cmd;
	const char *kwnames[64];
	size_t nkw;
};

static const char *header_name_of(enum imap_search_op op)
{
	switch (op) {
	case IMAP_SK_BCC: return "Bcc";
	case IMAP_SK_CC: return "Cc";
	case IMAP_SK_FROM: return "From";
	case IMAP_SK_SUBJECT: return "Subject";
	case IMAP_SK_TO: return "To";
	default: return NULL;
	}
}

/* Compile K (and its siblings' subtrees are compiled by the caller) into
 * an sk from the command's arena.  NULL when the arena is exhausted. */
static struct sk *compile(struct compile_env *e, const struct imap_search_key *k)
{
	struct sk *c = imap_cmd_alloc(e->cmd, sizeof(*c));
	const struct imap_view *v = &e->s->view;

	if (c == NULL)
		return NULL;
	c->op = k->op;
	c->kw = -1;
	c->num = k->num;
	switch (k->op) {
	case IMAP_SK_AND: case IMAP_SK_OR: case IMAP_SK_NOT: {
		size_t n = 0;
		for (const struct imap_search_key *ch = k->child; ch; ch = ch->next)
			n++;
		c->kids = imap_cmd_alloc(e->cmd, (n ? n : 1) * sizeof(*c->kids));
		if (c->kids == NULL)
			return NULL;
		for (const struct imap_search_key *ch = k->child; ch; ch = ch->next) {
			struct sk *kc = compile(e, ch);
			if (kc == NULL)
				return NULL;
			if (kc->cost > c->cost)
				c->cost = kc->cost;
			c->kids[c->nkids++] = kc;
		}
		/* Cheap first, so AND and OR short-circuit before a body is read.
		 * Order does not change the result: evaluation has no side effects. */
		if (c->nkids > 1)
			qsort(c->kids, c->nkids, sizeof(*c->kids), cmp_cost);
		return c;
	}
	case IMAP_SK_KEYWORD: case IMAP_SK_UNKEYWORD:
		for (size_t i = 0; i < e->nkw; i++)
			if (e->kwnames[i] && strcasecmp(e->kwnames[i], k->str.s) == 0) {
				c->kw = (int)i;
				break;
			}
		break;
	case IMAP_SK_BCC: case IMAP_SK_CC: case IMAP_SK_FROM:
	case IMAP_SK_SUBJECT: case IMAP_SK_TO:
		c->field = header_name_of(k->op);
		c->str = &k->str;
		break;
	case IMAP_SK_HEADER:
		c->field = k->str2.s;
		c->str = &k->str;
		break;
	case IMAP_SK_BODY: case IMAP_SK_TEXT:
		c->str = &k->str;
		break;
	case IMAP_SK_BEFORE: case IMAP_SK_ON: case IMAP_SK_SINCE:
	case IMAP_SK_SENTBEFORE: case IMAP_SK_SENTON: case IMAP_SK_SENTSINCE:
	case IMAP_SK_SAVEDBEFORE: case IMAP_SK_SAVEDON: case IMAP_SK_SAVEDSINCE:
		c->day = day_of_date(&k->date);
		break;
	case IMAP_SK_SEQSET:
		if (k->set.dollar)
			goto saved;
		/* A number past the view simply matches nothing here. */
		if (imap_seqset_resolve(e->cmd, &k->set, v->count, &c->ranges, &c->nranges))
			return NULL;
		break;
	case IMAP_SK_UID:
		if (k->set.dollar)
			goto saved;
		/* "*" is the highest UID in the mailbox (RFC 3501 §6.4.8). */
		if (imap_seqset_resolve(e->cmd, &k->set, v->count ? v->uids[v->count - 1] : 0,
		                        &c->ranges, &c->nranges))
			return NULL;
		break;
	saved:
		/* "$" (RFC 5182 §2.1) names the same messages whether it stands
		 * for sequence numbers or UIDs; the saved result is kept as UIDs,
		 * so it becomes a UID key.  Expunged UIDs just match nothing. */
		c->op = IMAP_SK_UID;
		c->ranges = imap_cmd_alloc(e->cmd, (v->nsaved ? v->nsaved : 1) * sizeof(*c->ranges));
		if (c->ranges == NULL)
			return NULL;
		for (size_t i = 0; i < v->nsaved; i++) {
			if (c->nranges && c->ranges[c->nranges - 1].hi + 1 == v->saved[i]) {
				c->ranges[c->nranges - 1].hi = v->saved[i];
				continue;
			}
			c->ranges[c->nranges].lo = c->ranges[c->nranges].hi = v->saved[i];
			c->nranges++;
		}
		break;
	default:
		break;
	}
	c->cost = leaf_cost(k->op);
	return c;
}

/* ------------------------------------------------------ loading content */

static bool load_raw(struct msg_ctx *x)
{
	if (!x->raw_tried) {
		x->raw_tried = true;
		if (store_body_get(x->t, x->m->body_id, &x->raw, &x->rawlen) != STORE_OK) {
			x->raw = NULL;
			x->rawlen = 0;
		}
		x->hdrlen = x->m->header_size < x->rawlen ? x->m->header_size : x->rawlen;
	}
	return x->raw != NULL;
}

/* Unfold VALUE and decode its RFC 2047 words into x->tmp2 (UTF-8). */
static int decode_field(struct msg_ctx *x, const char *value, size_t len)
{
	x->tmp.len = 0;
	x->tmp2.len = 0;
	if (mime_unfold(&x->tmp, value, len) < 0)
		return -1;
	return mime_decode_header(&x->tmp2, x->tmp.data ? x->tmp.data : "", x->tmp.len);
}

/* Does any field named FIELD contain NEEDLE?  An empty needle matches any
 * message that has the field (RFC 3501 §6.4.4, HEADER).  Address fields
 * match on their whole decoded text, display names included. */
static bool match_field(struct msg_ctx *x, const char *field, const struct imap_str *needle)
{
	struct mime_field f;

	if (!load_raw(x))
		return false;
	for (size_t nth = 0; mime_header_find(x->raw, x->hdrlen, field, nth, &f); nth++) {
		if (needle->len == 0)
			return true;
		if (decode_field(x, f.value, f.value_len) < 0)
			return false;
		if (mime_search_match(x->tmp2.data ? x->tmp2.data : "", x->tmp2.len,
		                      needle->s, needle->len))
			return true;
	}
	return false;
}

/* Every field of header HDR/LEN as "Name: decoded value\n", appended to OUT. */
static void header_text(struct msg_ctx *x, struct mime_buf *out, const char *hdr, size_t len)
{
	struct mime_field f;
	size_t pos = 0;

	while (mime_header_next(hdr, len, &pos, &f)) {
		if (f.name_len == 0)
			continue;
		if (decode_field(x, f.value, f.value_len) < 0)
			return;
		if (mime_buf_put(out, f.name, f.name_len) < 0 || mime_buf_put(out, ": ", 2) < 0 ||
		    mime_buf_put(out, x->tmp2.data, x->tmp2.len) < 0 || mime_buf_put(out, "\n", 1) < 0)
			return;
	}
}

static bool str_is(struct mime_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.p != NULL && s.len == n && memcmp(s.p, lit, n) == 0;
}

/* Append the searchable text of PART: the decoded text leaves, and the
 * header of every encapsulated message, each followed by a newline so a
 * match cannot span two parts. */
static void part_text(struct msg_ctx *x, const struct mime_part *p, int depth)
{
	if (depth > MIME_MAX_DEPTH)
		return;
	if (str_is(p->type, "multipart")) {
		for (const struct mime_part *c = p->child; c; c = c->next)
			part_text(x, c, depth + 1);
		return;
	}
	if (p->child) { /* message/rfc822: its header, then its body */
		header_text(x, &x->body_text, x->raw + p->child->hdr_off, p->child->hdr_len);
		part_text(x, p->child, depth + 1);
		return;
	}
	if (!str_is(p->type, "text") || p->body_len == 0)
		return;
	x->tmp.len = 0;
	if (mime_decode_body(&x->tmp, p->enc, x->raw + p->body_off, p->body_len) < 0)
		return;
	struct mime_str cs = mime_part_charset(p);
	int rc = cs.p ? mime_charset_to_utf8(&x->body_text, cs.p, cs.len,
	                                     x->tmp.data ? x->tmp.data : "", x->tmp.len)
	              : 1;
	if (rc == 1) /* unknown charset: search the octets as they are */
		mime_buf_put(&x->body_text, x->tmp.data, x->tmp.len);
	mime_buf_put(&x->body_text, "\n", 1);
}

static const struct mime_buf *body_text(struct msg_ctx *x)
{
	if (x->body_text_done)
		return &x->body_text;
	x->body_text_done = true;
	if (!load_raw(x))
		return &x->body_text;
	const void *blob;
	size_t bloblen;
	mime_tree *tree = NULL;
	if (store_body_mime(x->t, x->m->body_id, &blob, &bloblen) == STORE_OK)
		tree = mime_load(blob, bloblen, x->raw, x->rawlen);
	if (tree == NULL) /* none stored, or unreadable: parse it now */
		tree = mime_parse(x->raw, x->rawlen);
	if (tree != NULL) {
		part_text(x, mime_root(tree), 0);
		mime_free(tree);
	}
	return &x->body_text;
}

static const struct mime_buf *hdr_text(struct msg_ctx *x)
{
	if (!x->hdr_text_done) {
		x->hdr_text_done = true;
		if (load_raw(x))
			header_text(x, &x->hdr_text, x->raw, x->hdrlen);
	}
	return &x->hdr_text;
}

static bool buf_match(const struct mime_buf *b, const struct imap_str *needle)
{
	return mime_search_match(b->data ? b->data : "", b->len, needle->s, needle->len);
}

/* ------------------------------------------------ RFC 5322 Date: parsing */

static int month_of(const char *p, size_t n)
{
	static const char names[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	if (n < 3)
		return 0;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(p, names + 3 * i, 3) == 0)
			return i + 1;
	return 0;
}

static bool all_digits(const char *p, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

static int digits_value(const char *p, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n && i < 9; i++)
		v = v * 10 + (p[i] - '0');
	return v;
}

static int month_days(int year, int mon)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	return mon == 2 && leap ? 29 : days[mon - 1];
}

/* RFC 5322 §4.3 obsolete zone names; any other alphabetic zone (the
 * military letters) means -0000, an unknown zone, taken as UTC. */
static int zone_of_name(const char *z, size_t n)
{
	static const struct {
		const char *name;
		int minutes;
	} zones[] = {
		{ "UT", 0 }, { "GMT", 0 }, { "EST", -300 }, { "EDT", -240 },
		{ "CST", -360 }, { "CDT", -300 }, { "MST", -420 }, { "MDT", -360 },
		{ "PST", -480 }, { "PDT", -420 },
	};
	for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++)
		if (strlen(zones[i].name) == n && strncasecmp(z, zones[i].name, n) == 0)
			return zones[i].minutes;
	return 0;
}

/*
 * Parse an RFC 5322 date-time (§3.3, with the obsolete forms of §4.3:
 * comments anywhere, two- and three-digit years, alphabetic zones) from the
 * unfolded value S/LEN.  See imap_int.h for what the result bits mean.  A
 * token after the date is taken as the time, and one after that as the
 * zone; a time that does not parse ends the parse (the zone is then not
 * looked at).
 */
unsigned imap_date_field_parse(const char *s, size_t len, struct imap_datetime *dt)
{
	char buf[256];
	size_t n = 0;
	int depth = 0;
	unsigned res;

	memset(dt, 0, sizeof *dt);
	/* Drop comments (they nest) and turn commas into spaces. */
	for (size_t i = 0; i < len && n + 1 < sizeof(buf); i++) {
		char c = s[i];
		if (c == '\\' && depth > 0) {
			i++;
			continue;
		}
		if (c == '(') {
			depth++;
			continue;
		}
		if (c == ')' && depth > 0) {
			depth--;
			continue;
		}
		if (depth > 0)
			continue;
		buf[n++] = (c == ',' || c == '\t' || c == '\r' || c == '\n') ? ' ' : c;
	}
	buf[n] = '\0';

	const char *tok[8];
	size_t tlen[8], nt = 0;
	for (size_t i = 0; i < n && nt < 8;) {
		while (i < n && buf[i] == ' ')
			i++;
		if (i >= n)
			break;
		size_t st = i;
		while (i < n && buf[i] != ' ')
			i++;
		tok[nt] = buf + st;
		tlen[nt++] = i - st;
	}

	size_t k = 0;
	if (k < nt && !all_digits(tok[k], tlen[k]) && month_of(tok[k], tlen[k]) == 0)
		k++; /* day of week */
	if (k + 3 > nt || !all_digits(tok[k], tlen[k]) || tlen[k] > 2)
		return 0;
	int day = digits_value(tok[k], tlen[k]);
	int mon = month_of(tok[k + 1], tlen[k + 1]);
	if (mon == 0 || !all_digits(tok[k + 2], tlen[k + 2]) || tlen[k + 2] > 4)
		return 0;
	int year = digits_value(tok[k + 2], tlen[k + 2]);
	if (tlen[k + 2] == 2)
		year += year < 50 ? 2000 : 1900; /* RFC 5322 §4.3 */
	else if (tlen[k + 2] == 3)
		year += 1900;
	if (day < 1 || day > month_days(year, mon))
		return 0;
	dt->date.year = year;
	dt->date.mon = mon;
	dt->date.day = day;
	res = IMAP_DATEF_DATE;
	k += 3;
	if (k < nt) { /* time: hh:mm[:ss] */
		int hh, mm, ss = 0;
		const char *t = tok[k];
		size_t tl = tlen[k];
		const char *c1 = tl >= 4 && tl <= 8 ? memchr(t, ':', tl) : NULL;
		if (c1 == NULL || !all_digits(t, (size_t)(c1 - t)))
			return res | IMAP_DATEF_BAD_TIME;
		hh = digits_value(t, (size_t)(c1 - t));
		const char *rest = c1 + 1;
		size_t rl = tl - (size_t)(rest - t);
		const char *c2 = memchr(rest, ':', rl);
		size_t ml = c2 ? (size_t)(c2 - rest) : rl;
		if (!all_digits(rest, ml))
			return res | IMAP_DATEF_BAD_TIME;
		mm = digits_value(rest, ml);
		if (c2) {
			size_t sl = rl - ml - 1;
			if (!all_digits(c2 + 1, sl))
				return res | IMAP_DATEF_BAD_TIME;
			ss = digits_value(c2 + 1, sl);
		}
		if (hh > 23 || mm > 59 || ss > 60)
			return res | IMAP_DATEF_BAD_TIME;
		dt->hour = hh;
		dt->min = mm;
		dt->sec = ss;
		res |= IMAP_DATEF_TIME;
		k++;
	}
	if (k < nt) { /* zone: +hhmm, -hhmm, or an obsolete name */
		const char *z = tok[k];
		if (z[0] == '+' || z[0] == '-') {
			if (tlen[k] != 5 || !all_digits(z + 1, 4) || digits_value(z + 3, 2) > 59)
				return res | IMAP_DATEF_BAD_ZONE;
			int mins = digits_value(z + 1, 2) * 60 + digits_value(z + 3, 2);
			dt->zone = z[0] == '-' ? -mins : mins;
		} else {
			dt->zone = zone_of_name(z, tlen[k]);
		}
		res |= IMAP_DATEF_ZONE;
	}
	return res;
}

/* The calendar date as written, for SENT*: a value whose time or zone is
 * there but malformed is not a date-time at all. */
static bool parse_sent_date(const char *s, size_t len, struct imap_date *d)
{
	struct imap_datetime dt;
	unsigned f = imap_date_field_parse(s, len, &dt);

	if (!(f & IMAP_DATEF_DATE) || (f & (IMAP_DATEF_BAD_TIME | IMAP_DATEF_BAD_ZONE)))
		return false;
	*d = dt.date;
	return true;
}

/* The day the message was sent, per its Date: field as written, else its
 * internal date (see the head of the file). */
static int64_t sent_day(struct msg_ctx *x)
{
	struct mime_field f;
	struct imap_date d;

	if (x->sent_done)
		return x->sent_day;
	x->sent_done = true;
	x->sent_day = day_of_time(x->m->internal_date);
	if (!load_raw(x) || !mime_header_find(x->raw, x->hdrlen, "Date", 0, &f))
		return x->sent_day;
	x->tmp.len = 0;
	if (mime_unfold(&x->tmp, f.value, f.value_len) == 0 && x->tmp.data &&
	    parse_sent_date(x->tmp.data, x->tmp.len, &d))
		x->sent_day = day_of_date(&d);
	return x->sent_day;
}

/* ----------------------------------------------------------- evaluating */

static bool eval(struct msg_ctx *x, const struct sk *k)
{
	const struct store_message *m = x->m;
	uint32_t f = m->flags;

	switch (k->op) {
	case IMAP_SK_AND:
		for (size_t i = 0; i < k->nkids; i++)
			if (!eval(x, k->kids[i]))
				return false;
		return true;
	case IMAP_SK_OR:
		for (size_t i = 0; i < k->nkids; i++)
			if (eval(x, k->kids[i]))
				return true;
		return false;
	case IMAP_SK_NOT:
		return k->nkids == 1 && !eval(x, k->kids[0]);
	case IMAP_SK_ALL:
	case IMAP_SK_SAVEDATESUPPORTED:
		return true;
	case IMAP_SK_ANSWERED: return (f & STORE_F_ANSWERED) != 0;
	case IMAP_SK_DELETED: return (f & STORE_F_DELETED) != 0;
	case IMAP_SK_DRAFT: return (f & STORE_F_DRAFT) != 0;
	case IMAP_SK_FLAGGED: return (f & STORE_F_FLAGGED) != 0;
	case IMAP_SK_SEEN: return (f & STORE_F_SEEN) != 0;
	case IMAP_SK_UNANSWERED: return (f & STORE_F_ANSWERED) == 0;
	case IMAP_SK_UNDELETED: return (f & STORE_F_DELETED) == 0;
	case IMAP_SK_UNDRAFT: return (f & STORE_F_DRAFT) == 0;
	case IMAP_SK_UNFLAGGED: return (f & STORE_F_FLAGGED) == 0;
	case IMAP_SK_UNSEEN: return (f & STORE_F_SEEN) == 0;
	case IMAP_SK_RECENT: return imap_view_is_recent(x->v, m->uid);
	case IMAP_SK_OLD: return !imap_view_is_recent(x->v, m->uid);
	case IMAP_SK_NEW:
		return imap_view_is_recent(x->v, m->uid) && (f & STORE_F_SEEN) == 0;
	case IMAP_SK_KEYWORD:
		return k->kw >= 0 && (m->keywords >> k->kw) & 1;
	case IMAP_SK_UNKEYWORD:
		return k->kw < 0 || !((m->keywords >> k->kw) & 1);
	case IMAP_SK_LARGER: return m->size > k->num;
	case IMAP_SK_SMALLER: return m->size < k->num;
	case IMAP_SK_MODSEQ: return m->modseq >= k->num;
	case IMAP_SK_OLDER: return m->internal_date <= (int64_t)x->now - (int64_t)k->num;
	case IMAP_SK_YOUNGER: return m->internal_date >= (int64_t)x->now - (int64_t)k->num;
	case IMAP_SK_BEFORE: return day_of_time(m->internal_date) < k->day;
	case IMAP_SK_ON: return day_of_time(m->internal_date) == k->day;
	case IMAP_SK_SINCE: return day_of_time(m->internal_date) >= k->day;
	case IMAP_SK_SAVEDBEFORE: case IMAP_SK_SAVEDON: case IMAP_SK_SAVEDSINCE: {
		int64_t d = day_of_time(m->save_date ? m->save_date : m->internal_date);
		return k->op == IMAP_SK_SAVEDBEFORE ? d < k->day
		     : k->op == IMAP_SK_SAVEDON ? d == k->day : d >= k->day;
	}
	case IMAP_SK_SENTBEFORE: return sent_day(x) < k->day;
	case IMAP_SK_SENTON: return sent_day(x) == k->day;
	case IMAP_SK_SENTSINCE: return sent_day(x) >= k->day;
	case IMAP_SK_SEQSET: return imap_ranges_contain(k->ranges, k->nranges, x->seq);
	case IMAP_SK_UID: return imap_ranges_contain(k->ranges, k->nranges, m->uid);
	case IMAP_SK_BCC: case IMAP_SK_CC: case IMAP_SK_FROM:
	case IMAP_SK_SUBJECT: case IMAP_SK_TO: case IMAP_SK_HEADER:
		return match_field(x, k->field, k->str);
	case IMAP_SK_BODY:
		return buf_match(body_text(x), k->str);
	case IMAP_SK_TEXT:
		return buf_match(hdr_text(x), k->str) || buf_match(body_text(x), k->str);
	}
	return false;
}

/* ------------------------------------------------------------- the walk */

struct walk {
	struct msg_ctx x;
	const struct sk *root;
	const uint32_t *uids;           /* the view's, this slice */
	size_t i, end;                  /* next index into uids, slice end */
	uint32_t *hits;                 /* sequence numbers of matches */
	size_t nhits, cap;
	uint64_t max_modseq;            /* of all matches */
	uint64_t first_modseq, last_modseq; /* of the lowest and highest match */
	bool oom;
};

static void ctx_reset(struct msg_ctx *x)
{
	x->raw_tried = false;
	x->raw = NULL;
	x->rawlen = x->hdrlen = 0;
	x->hdr_text_done = x->body_text_done = x->sent_done = false;
	x->hdr_text.len = x->body_text.len = 0;
}

/* store_message_foreach callback: merge the store's records (UID order)
 * with the view's UIDs.  A view UID the store no longer has was expunged
 * and matches nothing; a store UID the view does not have yet is skipped. */
static int walk_one(const struct store_message *m, void *arg)
{
	struct walk *w = arg;

	while (w->i < w->end && w->uids[w->i] < m->uid)
		w->i++;
	if (w->i >= w->end)
		return 1;
	if (w->uids[w->i] != m->uid)
		return 0;
	ctx_reset(&w->x);
	w->x.m = m;
	w->x.seq = (uint32_t)w->i + 1;
	if (eval(&w->x, w->root)) {
		if (w->nhits == w->cap) {
			size_t cap = w->cap ? w->cap * 2 : 256;
			uint32_t *p = realloc(w->hits, cap * sizeof(*p));
			if (p == NULL) {
				w->oom = true;
				return 1;
			}
			w->hits = p;
			w->cap = cap;
		}
		if (w->nhits == 0)
			w->first_modseq = m->modseq;
		w->last_modseq = m->modseq;
		w->hits[w->nhits++] = w->x.seq;
		if (m->modseq > w->max_modseq)
			w->max_modseq = m->modseq;
	}
	w->i++;
	return w->i >= w->end;
}

/* ------------------------------------------------------------ the search */

int imap_search_run(struct imap_session *s, struct imap_cmd *cmd, const struct imap_search *q,
                    struct imap_search_hits *out)
{
	struct compile_env env = { .s = s, .cmd = cmd };
	store *st = conn_store(s->c);

	memset(out, 0, sizeof *out);
	/* The keyword table, for KEYWORD/UNKEYWORD: bit indexes are stable,
	 * so they are looked up once. */
	store_txn *t = store_read_begin(st);
	if (t == NULL) {
		imap_no(s, "SERVERBUG", "Cannot read the mailbox");
		return -1;
	}
	if (store_mailbox_keywords(t, s->view.mailbox_id, env.kwnames, &env.nkw) != STORE_OK)
		env.nkw = 0;
	struct sk *root = compile(&env, q->root);
	store_read_end(t);
	if (root == NULL) {
		imap_bad(s, NULL, "Search too complex");
		return -2;
	}

	struct walk w = { .root = root, .uids = s->view.uids };
	w.x.v = &s->view;
	w.x.now = time(NULL);
	size_t slice = root->cost >= COST_HEADER ? SLICE_BODY : SLICE_RECORDS;
	bool failed = false;

	for (size_t start = 0; start < s->view.count && !w.oom; start += slice) {
		w.i = start;
		w.end = start + slice < s->view.count ? start + slice : s->view.count;
		w.x.t = t = store_read_begin(st);
		if (t == NULL) {
			failed = true;
			break;
		}
		store_message_foreach(t, s->view.mailbox_id, s->view.uids[start], walk_one, &w);
		store_read_end(t);
		w.x.t = NULL;
	}
	free(w.x.hdr_text.data);
	free(w.x.body_text.data);
	free(w.x.tmp.data);
	free(w.x.tmp2.data);

	if (failed || w.oom) {
		free(w.hits);
		imap_no(s, "SERVERBUG", "Search failed");
		return -1;
	}
	out->seqs = w.hits;
	out->n = w.nhits;
	out->max_modseq = w.max_modseq;
	out->first_modseq = w.first_modseq;
	out->last_modseq = w.last_modseq;
	return 0;
}

/* ------------------------------------------------------------ answering */

/* Replace the saved result (RFC 5182 §2.1, §2.4) by what H found: all of
 * it, or only MIN and/or MAX when those are asked without ALL or COUNT.
 * Saved as UIDs, ascending.  -1 when memory runs out (then it is empty). */
static int save_result(struct imap_session *s, const struct imap_search *q,
                       const struct imap_search_hits *h)
{
	struct imap_view *v = &s->view;
	unsigned r = q->ret;
	uint32_t *u = NULL;
	size_t n = 0;

	if (h->n > 0) {
		u = malloc(h->n * sizeof *u);
		if (u == NULL) {
			imap_saved_reset(v);
			return -1;
		}
	}
	if ((r & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT)) ||
	    !(r & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX))) {
		for (size_t i = 0; i < h->n; i++)
			u[n++] = v->uids[h->seqs[i] - 1];
	} else if (h->n > 0) {
		if (r & IMAP_SEARCH_RET_MIN)
			u[n++] = v->uids[h->seqs[0] - 1];
		if ((r & IMAP_SEARCH_RET_MAX) && (n == 0 || h->n > 1))
			u[n++] = v->uids[h->seqs[h->n - 1] - 1];
	}
	imap_saved_reset(v);
	v->saved = u;
	v->nsaved = n;
	return 0;
}

/* The MODSEQ an ESEARCH response carries (RFC 4731 §3.2): that of the
 * messages it returns. */
static uint64_t esearch_modseq(unsigned ret, const struct imap_search_hits *h)
{
	bool min = ret & IMAP_SEARCH_RET_MIN, max = ret & IMAP_SEARCH_RET_MAX;

	if ((ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT)) || (!min && !max))
		return h->max_modseq;
	if (min && max)
		return h->first_modseq > h->last_modseq ? h->first_modseq : h->last_modseq;
	return min ? h->first_modseq : h->last_modseq;
}

static void write_result(struct imap_session *s, const struct imap_cmd *cmd,
                         const struct imap_search *q, struct imap_search_hits *h)
{
	struct imap_wbuf *o = &s->out;
	const struct imap_view *v = &s->view;
	const unsigned items = IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX |
	                       IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT;

	/* Numbers to report: UIDs for UID SEARCH (RFC 3501 §6.4.8). */
	if (s->uid)
		for (size_t i = 0; i < h->n; i++)
			h->seqs[i] = v->uids[h->seqs[i] - 1];

	if (!q->esearch) {
		imap_write_str(o, "* SEARCH");
		for (size_t i = 0; i < h->n; i++) {
			imap_write_byte(o, ' ');
			imap_write_u64(o, h->seqs[i]);
		}
		if (q->modseq_used && h->n > 0) { /* RFC 7162 §3.1.5 */
			imap_write_str(o, " (MODSEQ ");
			imap_write_u64(o, h->max_modseq);
			imap_write_byte(o, ')');
		}
		imap_write_crlf(o);
		return;
	}
	/* RETURN (SAVE) alone asks for no result items, so no ESEARCH
	 * response is sent (RFC 5182 §2.2 example 1, RFC 4731 §3.1). */
	if (!(q->ret & items))
		return;
	/* RFC 4731 §3.1: MIN, MAX and ALL are left out when nothing matched;
	 * COUNT is always there.  ALL is a sequence set. */
	imap_write_str(o, "* ESEARCH (TAG ");
	imap_write_string(o, cmd->tag.s, cmd->tag.len, 0);
	imap_write_byte(o, ')');
	if (s->uid)
		imap_write_str(o, " UID");
	if ((q->ret & IMAP_SEARCH_RET_MIN) && h->n) {
		imap_write_str(o, " MIN ");
		imap_write_u64(o, h->seqs[0]);
	}
	if ((q->ret & IMAP_SEARCH_RET_MAX) && h->n) {
		imap_write_str(o, " MAX ");
		imap_write_u64(o, h->seqs[h->n - 1]);
	}
	if ((q->ret & IMAP_SEARCH_RET_ALL) && h->n) {
		imap_write_str(o, " ALL ");
		imap_write_uid_set(o, h->seqs, h->n);
	}
	if (q->ret & IMAP_SEARCH_RET_COUNT) {
		imap_write_str(o, " COUNT ");
		imap_write_u64(o, h->n);
	}
	if (q->modseq_used && h->n) {
		imap_write_str(o, " MODSEQ ");
		imap_write_u64(o, esearch_modseq(q->ret, h));
	}
	imap_write_crlf(o);
}

void imap_cmd_search(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_search q;
	struct imap_search_hits h;
	int rc;

	if (imap_parse_sp(cmd) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	rc = imap_parse_search(cmd, &q);
	if (rc == IMAP_PARSE_BADCHARSET) {
		/* A NO to a SEARCH with SAVE empties the saved result (RFC 5182
		 * §2.1); a BAD leaves it as it was. */
		if (q.ret & IMAP_SEARCH_RET_SAVE)
			imap_saved_reset(&s->view);
		imap_no(s, "BADCHARSET (UTF-8 US-ASCII)", "Unsupported charset");
		return;
	}
	if (rc != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (q.modseq_used) /* a CONDSTORE enabling command (RFC 7162 §3.1) */
		imap_condstore_enable(s);
	if ((s->enabled & IMAP_EN_REV2) && !q.esearch) {
		/* RFC 9051 §6.4.4: no result option means ALL. */
		q.esearch = true;
		q.ret = IMAP_SEARCH_RET_ALL;
	}
	rc = imap_search_run(s, cmd, &q, &h);
	if (rc != 0) {
		if (rc == -1 && (q.ret & IMAP_SEARCH_RET_SAVE))
			imap_saved_reset(&s->view);
		return;
	}
	if ((q.ret & IMAP_SEARCH_RET_SAVE) && save_result(s, &q, &h) < 0) {
		free(h.seqs);
		imap_no(s, "SERVERBUG", "Out of memory saving the result");
		return;
	}
	write_result(s, cmd, &q, &h);
	free(h.seqs);
	imap_ok(s, NULL, "%s", (q.ret & IMAP_SEARCH_RET_SAVE) ? "Search completed, result saved"
	                                                      : "Search completed");
}
