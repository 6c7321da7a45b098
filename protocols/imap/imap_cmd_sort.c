/*
 * imap_cmd_sort.c - SORT and THREAD, and their UID forms (RFC 5256), with
 * the DISPLAYFROM and DISPLAYTO sort keys of RFC 5957.
 *
 * Both first run the SEARCH engine (imap_search_run) over the view, then
 * read what they order by for the messages found: the record (internal
 * date, size) and, when a key needs it, the message's ENVELOPE from the
 * MIME tree stored at ingest plus its References field.  That reading is
 * done in slices of SLICE messages, each slice in its own short read
 * transaction; the keys are copied out into one string pool, so no read
 * transaction is held while sorting, threading or writing.
 *
 * Strings collate by Unicode code point after simple case folding (see
 * fold_cp); RFC 5256 §7 asks for i;unicode-casemap, which also decomposes
 * characters (docs/imap.md lists this as a deviation).  Every tree walk is
 * iterative, so a reply chain as long as the mailbox cannot exhaust the
 * stack.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/imap/imap_int.h"
#include "store/mime.h"

/* Messages whose header is read per read transaction, and otherwise. */
#define SLICE 200
#define SLICE_RECORDS 20000

#define NIL UINT32_MAX

/* A string in the pool: offsets, because the pool moves as it grows. */
struct pstr {
	size_t off;
	uint32_t len;
};

/* What has to be read of each message. */
enum {
	NEED_SUBJECT = 1u << 0,
	NEED_FROM = 1u << 1,
	NEED_TO = 1u << 2,
	NEED_CC = 1u << 3,
	NEED_DFROM = 1u << 4,
	NEED_DTO = 1u << 5,
	NEED_SENT = 1u << 6,
	NEED_REFS = 1u << 7,
};

/* One message found by the search, with its keys. */
struct smsg {
	uint32_t seq;
	uint32_t size;
	int64_t arrival, sent;          /* seconds, UTC */
	struct pstr subj;               /* base subject, folded (§2.1) */
	struct pstr from, to, cc;       /* addr-mailbox, folded */
	struct pstr dfrom, dto;         /* display name or address, folded */
	struct pstr msgid;              /* normalised; len 0: none valid */
	struct pstr refs;               /* normalised ids, each ended by NUL */
	bool reply;                     /* §4: the subject marks a reply/forward */
};

/* The messages, their strings, and the scratch buffers that load them. */
struct sortset {
	struct smsg *m;
	size_t n;
	struct mime_buf pool;
	struct mime_buf tmp, tmp2;
	unsigned need;
	bool oom;
};

static const char *pool_at(const struct sortset *ss, size_t off)
{
	return ss->pool.data ? ss->pool.data + off : "";
}

/* ------------------------------------------------------------ collation */

/* Simple case folding (to upper case) for ASCII, Latin-1, Latin
 * Extended-A, Greek and Cyrillic: the scripts SEARCH folds too. */
static uint32_t fold_cp(uint32_t c)
{
	if (c < 0x80)
		return c >= 'a' && c <= 'z' ? c - 32 : c;
	if (c >= 0xe0 && c <= 0xfe && c != 0xf7)
		return c - 0x20;
	if (c == 0xff)
		return 0x178;
	if (c >= 0x100 && c <= 0x17f) {
		if (c == 0x131 || c == 0x138 || c == 0x149)
			return c;
		if (c == 0x17f)
			return 'S';
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
			return (c & 1) ? c : c - 1;
		if (c == 0x130 || c == 0x178)
			return c;
		return (c & 1) ? c - 1 : c;
	}
	if (c >= 0x3b1 && c <= 0x3c9)
		return c == 0x3c2 ? 0x3a3 : c - 0x20;
	if (c == 0x3ac)
		return 0x386;
	if (c >= 0x3ad && c <= 0x3af)
		return c - 0x25;
	if (c == 0x3cc)
		return 0x38c;
	if (c == 0x3cd || c == 0x3ce)
		return c - 0x3f;
	if (c >= 0x430 && c <= 0x44f)
		return c - 0x20;
	if (c >= 0x450 && c <= 0x45f)
		return c - 0x50;
	if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf))
		return (c & 1) ? c - 1 : c;
	return c;
}

/* Decode one UTF-8 character of S/N at *I; an invalid octet is returned as
 * itself with *RAW set. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i, bool *raw)
{
	unsigned char c = s[*i];
	size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
	           : (c & 0xf8) == 0xf0 ? 4 : 0;
	uint32_t cp;

	*raw = false;
	if (len == 1 || len == 0 || *i + len > n) {
		*raw = len != 1;
		(*i)++;
		return c;
	}
	cp = c & (0x7f >> len);
	for (size_t k = 1; k < len; k++) {
		if ((s[*i + k] & 0xc0) != 0x80) {
			*raw = true;
			(*i)++;
			return c;
		}
		cp = (cp << 6) | (s[*i + k] & 0x3f);
	}
	*i += len;
	return cp;
}

static int put_utf8(struct mime_buf *out, uint32_t cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return mime_buf_put(out, b, n);
}

/* Append S/N folded to the pool as *OUT.  Folded UTF-8 compares by code
 * point with memcmp. */
static void pool_fold(struct sortset *ss, const char *s, size_t n, struct pstr *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t start = ss->pool.len;

	for (size_t i = 0; i < n;) {
		bool raw;
		uint32_t cp = utf8_next(u, n, &i, &raw);
		int rc = raw ? mime_buf_put(&ss->pool, &u[i - 1], 1) : put_utf8(&ss->pool, fold_cp(cp));
		if (rc < 0) {
			ss->oom = true;
			break;
		}
	}
	out->off = start;
	out->len = (uint32_t)(ss->pool.len - start);
}

static int cmp_pstr(const struct sortset *ss, struct pstr a, struct pstr b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int r = n ? memcmp(pool_at(ss, a.off), pool_at(ss, b.off), n) : 0;

	if (r != 0)
		return r;
	return a.len < b.len ? -1 : a.len > b.len;
}

/* --------------------------------------------- base subject (RFC 5256 §2.1) */

/* subj-blob = "[" *BLOBCHAR "]" *WSP at S/N: its length, or 0. */
static size_t blob_len(const char *s, size_t n)
{
	size_t i = 1;

	if (n == 0 || s[0] != '[')
		return 0;
	while (i < n && s[i] != ']' && s[i] != '[')
		i++;
	if (i >= n || s[i] != ']')
		return 0;
	i++;
	while (i < n && s[i] == ' ')
		i++;
	return i;
}

/* subj-leader = (*subj-blob subj-refwd) / WSP at S/N: its length, or 0;
 * *REFWD says whether it was a subj-refwd.
 * subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" */
static size_t leader_len(const char *s, size_t n, bool *refwd)
{
	size_t i = 0, b;

	*refwd = false;
	if (n > 0 && s[0] == ' ')
		return 1;
	while ((b = blob_len(s + i, n - i)) > 0)
		i += b;
	if (n - i >= 2 && strncasecmp(s + i, "re", 2) == 0) {
		i += 2;
	} else if (n - i >= 2 && strncasecmp(s + i, "fw", 2) == 0) {
		i += 2;
		if (i < n && (s[i] == 'd' || s[i] == 'D'))
			i++;
	} else {
		return 0;
	}
	while (i < n && s[i] == ' ')
		i++;
	i += blob_len(s + i, n - i);
	if (i >= n || s[i] != ':')
		return 0;
	*refwd = true;
	return i + 1;
}

static bool has_nonwsp(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ')
			return true;
	return false;
}

/*
 * The base subject of the raw (unfolded) SUBJECT/LEN, folded, into the pool
 * as *OUT.  Returns true if the extraction removed a subj-refwd, a "(fwd)"
 * trailer or a subj-fwd-hdr and subj-fwd-trl: the message is a reply or
 * forward (§4, REFERENCES).  The steps are numbered as in §2.1.
 */
static bool base_subject(struct sortset *ss, const char *subject, size_t len, struct pstr *out)
{
	bool reply = false, refwd;
	size_t b = 0, e = 0, n;
	char *t;

	/* (1) RFC 2047 words to UTF-8; tabs and line breaks to spaces, runs of
	 * spaces to one. */
	ss->tmp.len = 0;
	ss->tmp2.len = 0;
	if (mime_decode_header(&ss->tmp, subject, len) < 0) {
		ss->oom = true;
		ss->tmp.len = 0;
	}
	for (size_t i = 0; i < ss->tmp.len; i++) {
		char c = ss->tmp.data[i];
		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && ss->tmp2.len && ss->tmp2.data[ss->tmp2.len - 1] == ' ')
			continue;
		if (mime_buf_put(&ss->tmp2, &c, 1) < 0) {
			ss->oom = true;
			break;
		}
	}
	if (ss->tmp2.len == 0) {
		pool_fold(ss, "", 0, out);
		return false;
	}
	t = ss->tmp2.data;
	e = ss->tmp2.len;
	for (;;) {
		/* (2) trailing subj-trailer = "(fwd)" / WSP, repeatedly. */
		for (;;) {
			if (e > b && t[e - 1] == ' ') {
				e--;
			} else if (e - b >= 5 && strncasecmp(t + e - 5, "(fwd)", 5) == 0) {
				e -= 5;
				reply = true;
			} else {
				break;
			}
		}
		/* (5): repeat (3) and (4) while (4) removes something. */
		for (;;) {
			/* (3) every subj-leader. */
			while ((n = leader_len(t + b, e - b, &refwd)) > 0) {
				b += n;
				reply |= refwd;
			}
			/* (4) one subj-blob, if a non-empty subj-base remains. */
			n = blob_len(t + b, e - b);
			if (n == 0 || !has_nonwsp(t + b + n, e - b - n))
				break;
			b += n;
		}
		/* (6) "[fwd:" ... "]": unwrap and start over from (2). */
		if (e - b >= 6 && strncasecmp(t + b, "[fwd:", 5) == 0 && t[e - 1] == ']') {
			b += 5;
			e -= 1;
			reply = true;
			continue;
		}
		break;
	}
	/* (7) */
	pool_fold(ss, t + b, e - b, out);
	return reply;
}

/* ------------------------------------------------------------ Message-IDs */

/* Skip a comment at S[*I] == '(' (nested, with quoted-pairs). */
static void skip_comment(const char *s, size_t n, size_t *i)
{
	int depth = 0;

	for (; *i < n; (*i)++) {
		if (s[*i] == '\\') {
			(*i)++;
		} else if (s[*i] == '(') {
			depth++;
		} else if (s[*i] == ')' && --depth == 0) {
			(*i)++;
			return;
		}
	}
}

/*
 * Find the next valid msg-id (RFC 5322 §3.6.4) in S/N from *POS and append
 * its normalised form, "left@right" with the angle brackets, quotes,
 * quoted-pair backslashes, comments and white space removed, to the pool
 * followed by a NUL (RFC 5256 §4: "<"a"@b>" and "<a@b>" are one ID).
 * Returns false when there is none.  Anything that is not "<" ... ">"
 * with a non-empty left and right side of one "@" is skipped.
 */
static bool next_msgid(struct sortset *ss, const char *s, size_t n, size_t *pos, struct pstr *out)
{
	size_t i = *pos;

	while (i < n) {
		if (s[i] == '(') {
			skip_comment(s, n, &i);
			continue;
		}
		if (s[i] != '<') {
			i++;
			continue;
		}
		size_t start = ss->pool.len, at = 0, nat = 0;
		bool bad = false, closed = false;
		for (i++; i < n && !closed;) {
			char c = s[i];
			if (c == '>') {
				closed = true;
				i++;
			} else if (c == '<') {
				bad = true; /* a new "<": start over there */
				break;
			} else if (c == '(') {
				skip_comment(s, n, &i);
			} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
				i++;
			} else if (c == '"') {
				for (i++; i < n && s[i] != '"'; i++) {
					if (s[i] == '\\' && i + 1 < n)
						i++;
					if (mime_buf_put(&ss->pool, &s[i], 1) < 0)
						ss->oom = true;
				}
				i++;
			} else {
				if (c == '\\' && i + 1 < n)
					c = s[++i];
				if (c == '@') {
					nat++;
					at = ss->pool.len - start;
				}
				if (mime_buf_put(&ss->pool, &c, 1) < 0)
					ss->oom = true;
				i++;
			}
		}
		size_t len = ss->pool.len - start;
		if (!bad && closed && nat == 1 && at > 0 && at + 1 < len && !ss->oom) {
			if (mime_buf_put(&ss->pool, "", 1) < 0) {
				ss->oom = true;
				return false;
			}
			out->off = start;
			out->len = (uint32_t)len;
			*pos = i;
			return true;
		}
		ss->pool.len = start;
	}
	*pos = n;
	return false;
}

/* -------------------------------------------------------- loading keys */

/* RFC 5256 §2.2: the Date: field in UTC; a bad zone counts as UTC and a
 * bad time as 00:00:00; no valid date at all means the internal date. */
static int64_t sent_time(struct mime_str date, int64_t internal)
{
	struct imap_datetime dt;
	unsigned f;

	if (date.p == NULL)
		return internal;
	f = imap_date_field_parse(date.p, date.len, &dt);
	if (!(f & IMAP_DATEF_DATE))
		return internal;
	return (int64_t)imap_datetime_to_time(&dt);
}

/* The first address of L that is a mailbox (group markers skipped). */
static const struct mime_addr *first_addr(const struct mime_addr_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].host.p != NULL && l->v[i].mailbox.p != NULL)
			return &l->v[i];
	return NULL;
}

/* RFC 5256 §3: the addr-mailbox of the first address; "" when none. */
static void addr_key(struct sortset *ss, const struct mime_addr_list *l, struct pstr *out)
{
	const struct mime_addr *a = first_addr(l);

	if (a == NULL)
		pool_fold(ss, "", 0, out);
	else
		pool_fold(ss, a->mailbox.p, a->mailbox.len, out);
}

/* RFC 5957: the display name of the first address, RFC 2047-decoded; if
 * it has none, its address "mailbox@host".  "" when there is no address. */
static void display_key(struct sortset *ss, const struct mime_addr_list *l, struct pstr *out)
{
	const struct mime_addr *a = first_addr(l);

	ss->tmp.len = 0;
	ss->tmp2.len = 0;
	if (a != NULL && a->name.p != NULL && a->name.len > 0) {
		if (mime_decode_header(&ss->tmp, a->name.p, a->name.len) < 0)
			ss->oom = true;
		if (mime_unfold(&ss->tmp2, ss->tmp.data ? ss->tmp.data : "", ss->tmp.len) < 0)
			ss->oom = true;
	}
	if (a != NULL && ss->tmp2.len == 0) {
		if (mime_buf_put(&ss->tmp2, a->mailbox.p, a->mailbox.len) < 0 ||
		    mime_buf_put(&ss->tmp2, "@", 1) < 0 ||
		    mime_buf_put(&ss->tmp2, a->host.p, a->host.len) < 0)
			ss->oom = true;
	}
	pool_fold(ss, ss->tmp2.data ? ss->tmp2.data : "", ss->tmp2.len, out);
}

/* RFC 5256 §4 REFERENCES: the Message-IDs of References, or if it has none
 * that is valid the first valid one of In-Reply-To. */
static void load_refs(struct sortset *ss, struct smsg *sm, const char *hdr, size_t hdrlen,
                      struct mime_str in_reply_to)
{
	struct mime_field f;
	struct pstr id;
	size_t pos = 0, start = ss->pool.len;

	sm->refs.off = start;
	sm->refs.len = 0;
	if (mime_header_find(hdr, hdrlen, "References", 0, &f)) {
		ss->tmp.len = 0;
		if (mime_unfold(&ss->tmp, f.value, f.value_len) < 0)
			ss->oom = true;
		/* The IDs go to the pool after the unfolded text is read from
		 * tmp, so tmp must not be the pool: it is not. */
		while (next_msgid(ss, ss->tmp.data ? ss->tmp.data : "", ss->tmp.len, &pos, &id))
			;
	}
	if (ss->pool.len == start && in_reply_to.p != NULL) {
		pos = 0;
		next_msgid(ss, in_reply_to.p, in_reply_to.len, &pos, &id);
	}
	sm->refs.len = (uint32_t)(ss->pool.len - start);
}

/* Read the keys of message SM (UID) in read transaction T. */
static void load_one(struct sortset *ss, store_txn *t, uint32_t mailbox_id, uint32_t uid,
                     struct smsg *sm)
{
	struct store_message m;
	const char *raw;
	size_t rawlen;
	const void *blob;
	size_t bloblen;
	mime_tree *tree = NULL;

	/* Gone since the search (another process's expunge): it sorts with
	 * empty keys rather than vanish from an answer already decided. */
	if (store_message_get(t, mailbox_id, uid, &m) != STORE_OK)
		return;
	sm->size = m.size;
	sm->arrival = sm->sent = m.internal_date;
	if (ss->need == 0 || store_body_get(t, m.body_id, &raw, &rawlen) != STORE_OK)
		return;
	size_t hdrlen = m.header_size < rawlen ? m.header_size : rawlen;
	if (store_body_mime(t, m.body_id, &blob, &bloblen) == STORE_OK)
		tree = mime_load(blob, bloblen, raw, rawlen);
	if (tree == NULL) /* none stored, or unreadable: the header is enough */
		tree = mime_parse(raw, hdrlen);
	if (tree == NULL) {
		ss->oom = true;
		return;
	}
	const struct mime_envelope *env = mime_envelope(tree);
	if (ss->need & NEED_SENT)
		sm->sent = sent_time(env->date, m.internal_date);
	if (ss->need & NEED_SUBJECT)
		sm->reply = base_subject(ss, env->subject.p ? env->subject.p : "", env->subject.len,
		                         &sm->subj);
	if (ss->need & NEED_FROM)
		addr_key(ss, &env->addr[MIME_FROM], &sm->from);
	if (ss->need & NEED_TO)
		addr_key(ss, &env->addr[MIME_TO], &sm->to);
	if (ss->need & NEED_CC)
		addr_key(ss, &env->addr[MIME_CC], &sm->cc);
	if (ss->need & NEED_DFROM)
		display_key(ss, &env->addr[MIME_FROM], &sm->dfrom);
	if (ss->need & NEED_DTO)
		display_key(ss, &env->addr[MIME_TO], &sm->dto);
	if (ss->need & NEED_REFS) {
		size_t pos = 0;
		if (env->message_id.p != NULL)
			next_msgid(ss, env->message_id.p, env->message_id.len, &pos, &sm->msgid);
		load_refs(ss, sm, raw, hdrlen, env->in_reply_to);
	}
	mime_free(tree);
}

/*
 * Fill SS with the messages of H and their keys: one read transaction per
 * slice.  Returns 0, or -1 after answering NO.
 */
static int load_keys(struct imap_session *s, const struct imap_search_hits *h,
                     struct sortset *ss)
{
	const struct imap_view *v = &s->view;
	store *st = conn_store(s->c);
	size_t slice = ss->need ? SLICE : SLICE_RECORDS;

	ss->m = calloc(h->n ? h->n : 1, sizeof *ss->m);
	if (ss->m == NULL) {
		imap_no(s, "SERVERBUG", "Out of memory");
		return -1;
	}
	ss->n = h->n;
	for (size_t start = 0; start < h->n && !ss->oom; start += slice) {
		size_t end = start + slice < h->n ? start + slice : h->n;
		store_txn *t = store_read_begin(st);
		if (t == NULL) {
			imap_no(s, "SERVERBUG", "Cannot read the mailbox");
			return -1;
		}
		for (size_t i = start; i < end && !ss->oom; i++) {
			ss->m[i].seq = h->seqs[i];
			load_one(ss, t, v->mailbox_id, v->uids[h->seqs[i] - 1], &ss->m[i]);
		}
		store_read_end(t);
	}
	if (ss->oom) {
		imap_no(s, "SERVERBUG", "Out of memory");
		return -1;
	}
	return 0;
}

static void sortset_free(struct sortset *ss)
{
	free(ss->m);
	free(ss->pool.data);
	free(ss->tmp.data);
	free(ss->tmp2.data);
}

/* The number a response gives for SM: its UID under UID SORT/THREAD. */
static uint32_t msg_number(const struct imap_session *s, const struct smsg *sm)
{
	return s->uid ? s->view.uids[sm->seq - 1] : sm->seq;
}

static int cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

/* Sent date, then sequence number (§2.2's tie-breaker). */
static int cmp_sent(const struct smsg *a, const struct smsg *b)
{
	int r = cmp_i64(a->sent, b->sent);
	return r ? r : cmp_i64(a->seq, b->seq);
}

/* -------------------------------------------------------------- SORT */

struct sort_ctx {
	const struct sortset *ss;
	const struct imap_sort *q;
};

static int cmp_sort(const void *pa, const void *pb, void *arg)
{
	const struct sort_ctx *c = arg;
	const struct smsg *a = &c->ss->m[*(const uint32_t *)pa];
	const struct smsg *b = &c->ss->m[*(const uint32_t *)pb];

	for (size_t i = 0; i < c->q->ncrit; i++) {
		int r = 0;
		switch (c->q->crit[i].key) {
		case IMAP_SORT_ARRIVAL: r = cmp_i64(a->arrival, b->arrival); break;
		case IMAP_SORT_DATE: r = cmp_i64(a->sent, b->sent); break;
		case IMAP_SORT_SIZE: r = cmp_i64(a->size, b->size); break;
		case IMAP_SORT_SUBJECT: r = cmp_pstr(c->ss, a->subj, b->subj); break;
		case IMAP_SORT_FROM: r = cmp_pstr(c->ss, a->from, b->from); break;
		case IMAP_SORT_TO: r = cmp_pstr(c->ss, a->to, b->to); break;
		case IMAP_SORT_CC: r = cmp_pstr(c->ss, a->cc, b->cc); break;
		case IMAP_SORT_DISPLAYFROM: r = cmp_pstr(c->ss, a->dfrom, b->dfrom); break;
		case IMAP_SORT_DISPLAYTO: r = cmp_pstr(c->ss, a->dto, b->dto); break;
		}
		/* REVERSE turns one criterion around, never the implicit
		 * sequence-number one (§3). */
		if (r != 0)
			return c->q->crit[i].reverse ? -r : r;
	}
	return cmp_i64(a->seq, b->seq);
}

static unsigned sort_needs(const struct imap_sort *q)
{
	unsigned need = 0;

	for (size_t i = 0; i < q->ncrit; i++) {
		switch (q->crit[i].key) {
		case IMAP_SORT_DATE: need |= NEED_SENT; break;
		case IMAP_SORT_SUBJECT: need |= NEED_SUBJECT; break;
		case IMAP_SORT_FROM: need |= NEED_FROM; break;
		case IMAP_SORT_TO: need |= NEED_TO; break;
		case IMAP_SORT_CC: need |= NEED_CC; break;
		case IMAP_SORT_DISPLAYFROM: need |= NEED_DFROM; break;
		case IMAP_SORT_DISPLAYTO: need |= NEED_DTO; break;
		case IMAP_SORT_ARRIVAL: case IMAP_SORT_SIZE: break;
		}
	}
	return need;
}

/* Run the search of Q; on success fill SS (keys per NEED). */
static int search_and_load(struct imap_session *s, struct imap_cmd *cmd,
                           const struct imap_search *q, unsigned need, struct sortset *ss)
{
	struct imap_search_hits h;

	if (imap_search_run(s, cmd, q, &h) != 0)
		return -1;
	ss->need = need;
	int rc = load_keys(s, &h, ss);
	free(h.seqs);
	return rc;
}

/* Answer a failed parse of SORT or THREAD: an unknown charset is a NO
 * (RFC 5256 section 3 lists "can't sort that charset" under NO; the code
 * is RFC 3501's BADCHARSET), anything else a BAD.  True when it answered. */
static bool parse_failed(struct imap_session *s, struct imap_cmd *cmd, int rc)
{
	if (rc == IMAP_PARSE_OK)
		return false;
	if (rc == IMAP_PARSE_BADCHARSET)
		imap_no(s, "BADCHARSET (UTF-8 US-ASCII)", "Unsupported charset");
	else
		imap_bad(s, NULL, "%s", cmd->error);
	return true;
}

void imap_cmd_sort(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_sort q;
	struct sortset ss = { 0 };
	int rc;

	rc = imap_parse_sp(cmd);
	if (rc == IMAP_PARSE_OK)
		rc = imap_parse_sort(cmd, &q);
	if (parse_failed(s, cmd, rc))
		return;
	if (search_and_load(s, cmd, &q.search, sort_needs(&q), &ss) != 0) {
		sortset_free(&ss);
		return;
	}
	uint32_t *order = malloc((ss.n ? ss.n : 1) * sizeof *order);
	if (order == NULL) {
		sortset_free(&ss);
		imap_no(s, "SERVERBUG", "Out of memory");
		return;
	}
	for (size_t i = 0; i < ss.n; i++)
		order[i] = (uint32_t)i;
	struct sort_ctx ctx = { .ss = &ss, .q = &q };
	if (ss.n > 1)
		qsort_r(order, ss.n, sizeof *order, cmp_sort, &ctx);

	imap_write_str(&s->out, "* SORT");
	for (size_t i = 0; i < ss.n; i++) {
		imap_write_byte(&s->out, ' ');
		imap_write_u64(&s->out, msg_number(s, &ss.m[order[i]]));
	}
	imap_write_crlf(&s->out);
	free(order);
	sortset_free(&ss);
	imap_ok(s, NULL, "Sort completed");
}

/* ------------------------------------------------------ THREAD: the tree */

/* A thread tree node: a message (MSG is its index in the sortset) or a
 * dummy (MSG == NIL).  Links are node indexes; children are a doubly
 * linked list.  Node 0 is the root. */
struct tnode {
	uint32_t msg;
	uint32_t parent, child, next, prev;
};

struct tree {
	struct tnode *v;
	size_t n, cap;
	const struct sortset *ss;
	bool oom;
};

static uint32_t node_new(struct tree *t, uint32_t msg)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct tnode *p = realloc(t->v, cap * sizeof *p);
		if (p == NULL) {
			t->oom = true;
			return NIL;
		}
		t->v = p;
		t->cap = cap;
	}
	t->v[t->n] = (struct tnode){ msg, NIL, NIL, NIL, NIL };
	return (uint32_t)t->n++;
}

static void node_unlink(struct tree *t, uint32_t c)
{
	struct tnode *n = &t->v[c];

	if (n->parent == NIL)
		return;
	if (n->prev != NIL)
		t->v[n->prev].next = n->next;
	else
		t->v[n->parent].child = n->next;
	if (n->next != NIL)
		t->v[n->next].prev = n->prev;
	n->parent = n->next = n->prev = NIL;
}

/* Make C the first child of P (order is settled by sorting later). */
static void node_link(struct tree *t, uint32_t p, uint32_t c)
{
	node_unlink(t, c);
	t->v[c].parent = p;
	t->v[c].prev = NIL;
	t->v[c].next = t->v[p].child;
	if (t->v[p].child != NIL)
		t->v[t->v[p].child].prev = c;
	t->v[p].child = c;
}

/* Is A the same node as B or an ancestor of it? */
static bool node_is_ancestor(const struct tree *t, uint32_t a, uint32_t b)
{
	for (uint32_t x = b; x != NIL; x = t->v[x].parent)
		if (x == a)
			return true;
	return false;
}

/* The message that stands for node X when sorting: itself, or a dummy's
 * first child (RFC 5256 §4 steps 4 and 6). */
static const struct smsg *node_msg(const struct tree *t, uint32_t x)
{
	while (x != NIL && t->v[x].msg == NIL)
		x = t->v[x].child;
	return x == NIL ? NULL : &t->ss->m[t->v[x].msg];
}

static int cmp_node_sent(const void *pa, const void *pb, void *arg)
{
	const struct tree *t = arg;
	const struct smsg *a = node_msg(t, *(const uint32_t *)pa);
	const struct smsg *b = node_msg(t, *(const uint32_t *)pb);

	if (a == NULL || b == NULL)
		return (a != NULL) - (b != NULL);
	return cmp_sent(a, b);
}

/* A growable array of node indexes (also used as a stack). */
struct ivec {
	uint32_t *v;
	size_t n, cap;
};

static bool ivec_push(struct ivec *a, uint32_t x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		uint32_t *p = realloc(a->v, cap * sizeof *p);
		if (p == NULL)
			return false;
		a->v = p;
		a->cap = cap;
	}
	a->v[a->n++] = x;
	return true;
}

/* Room for N more entries, so that pushes cannot fail. */
static bool ivec_reserve(struct ivec *a, size_t n)
{
	if (a->cap - a->n >= n)
		return true;
	uint32_t *p = realloc(a->v, (a->n + n) * sizeof *p);
	if (p == NULL)
		return false;
	a->v = p;
	a->cap = a->n + n;
	return true;
}

/* Sort the children of P by sent date (dummies by their first child). */
static bool sort_children(struct tree *t, uint32_t p, struct ivec *tmp)
{
	tmp->n = 0;
	for (uint32_t c = t->v[p].child; c != NIL; c = t->v[c].next)
		if (!ivec_push(tmp, c))
			return false;
	if (tmp->n < 2)
		return true;
	qsort_r(tmp->v, tmp->n, sizeof *tmp->v, cmp_node_sent, t);
	t->v[p].child = tmp->v[0];
	for (size_t i = 0; i < tmp->n; i++) {
		t->v[tmp->v[i]].prev = i ? tmp->v[i - 1] : NIL;
		t->v[tmp->v[i]].next = i + 1 < tmp->n ? tmp->v[i + 1] : NIL;
	}
	return true;
}

/* Every node under the root, parents before children (pre-order). */
static bool preorder(const struct tree *t, struct ivec *out, struct ivec *stack)
{
	out->n = stack->n = 0;
	if (!ivec_push(stack, 0))
		return false;
	while (stack->n > 0) {
		uint32_t x = stack->v[--stack->n];
		if (!ivec_push(out, x))
			return false;
		for (uint32_t c = t->v[x].child; c != NIL; c = t->v[c].next)
			if (!ivec_push(stack, c))
				return false;
	}
	return true;
}

/* ------------------------------------------- THREAD: a simple string map */

/* Pool strings to node indexes, open addressing. */
struct smap {
	struct {
		struct pstr key;
		uint32_t val;
	} *e;
	size_t cap, n;
};

static size_t smap_hash(const char *s, size_t n)
{
	size_t h = 1469598103934665603u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211u;
	return h;
}

/* The slot for KEY: its entry, or the empty slot where it would go. */
static size_t smap_slot(const struct smap *m, const struct sortset *ss, struct pstr key)
{
	size_t i = smap_hash(pool_at(ss, key.off), key.len) & (m->cap - 1);

	while (m->e[i].val != NIL && cmp_pstr(ss, m->e[i].key, key) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static uint32_t smap_get(const struct smap *m, const struct sortset *ss, struct pstr key)
{
	return m->cap ? m->e[smap_slot(m, ss, key)].val : NIL;
}

static bool smap_put(struct smap *m, const struct sortset *ss, struct pstr key, uint32_t val)
{
	if (2 * (m->n + 1) > m->cap) {
		struct smap g = { .cap = m->cap ? m->cap * 2 : 256 };
		g.e = malloc(g.cap * sizeof *g.e);
		if (g.e == NULL)
			return false;
		for (size_t i = 0; i < g.cap; i++)
			g.e[i].val = NIL;
		for (size_t i = 0; i < m->cap; i++)
			if (m->e[i].val != NIL) {
				size_t j = smap_slot(&g, ss, m->e[i].key);
				g.e[j] = m->e[i];
				g.n++;
			}
		free(m->e);
		*m = g;
	}
	size_t i = smap_slot(m, ss, key);
	if (m->e[i].val == NIL)
		m->n++;
	m->e[i].key = key;
	m->e[i].val = val;
	return true;
}

/* ------------------------------------------------ THREAD: REFERENCES (§4) */

/* Step 1: link messages and the IDs they reference. */
static void refs_link(struct tree *t, struct smap *ids)
{
	const struct sortset *ss = t->ss;

	for (uint32_t i = 0; i < ss->n && !t->oom; i++) {
		const struct smsg *sm = &ss->m[i];
		uint32_t self = NIL;

		/* A message without a valid Message-ID, or whose ID an earlier
		 * (lower-numbered) message has, gets a unique one: it is just
		 * not entered in the table.  One whose ID so far names a dummy
		 * becomes that node. */
		if (sm->msgid.len > 0) {
			uint32_t x = smap_get(ids, ss, sm->msgid);
			if (x != NIL && t->v[x].msg == NIL) {
				t->v[x].msg = i;
				self = x;
			} else if (x == NIL) {
				self = node_new(t, i);
				if (self != NIL && !smap_put(ids, ss, sm->msgid, self))
					t->oom = true;
			}
		}
		if (self == NIL)
			self = node_new(t, i);
		if (self == NIL)
			return;

		/* (A) each reference the parent of the next, unless the child
		 * already has a parent or the link would make a loop. */
		uint32_t prev = NIL;
		const char *p = pool_at(ss, sm->refs.off);
		for (size_t off = 0; off < sm->refs.len && !t->oom;) {
			struct pstr id = { sm->refs.off + off, (uint32_t)strlen(p + off) };
			off += id.len + 1;
			uint32_t x = smap_get(ids, ss, id);
			if (x == NIL) {
				x = node_new(t, NIL);
				if (x == NIL || !smap_put(ids, ss, id, x)) {
					t->oom = true;
					return;
				}
			}
			if (prev != NIL && t->v[x].parent == NIL && !node_is_ancestor(t, x, prev))
				node_link(t, prev, x);
			prev = x;
		}
		/* (B) the last reference is the parent: it replaces a link made
		 * from a (probably truncated) References of another message.
		 * When the new link would make a loop the old one is kept. */
		if (prev == NIL)
			node_unlink(t, self);
		else if (t->v[self].parent != prev && !node_is_ancestor(t, self, prev))
			node_link(t, prev, self);
	}
}

/* Step 3: remove dummies, bottom-up, so that each node's children are
 * final before its own list is rebuilt.  A dummy without children goes; one
 * with children is replaced by them, except at the top when it has more
 * than one. */
static bool refs_prune(struct tree *t, struct ivec *order, struct ivec *stack)
{
	if (!preorder(t, order, stack))
		return false;
	for (size_t k = order->n; k-- > 0;) {
		uint32_t p = order->v[k];
		uint32_t c = t->v[p].child;
		t->v[p].child = NIL;
		stack->n = 0;
		while (c != NIL) {
			uint32_t next = t->v[c].next;
			struct tnode *cn = &t->v[c];
			if (cn->msg != NIL) {
				if (!ivec_push(stack, c))
					return false;
			} else if (cn->child != NIL &&
			           (p != 0 || t->v[cn->child].next == NIL)) {
				for (uint32_t g = cn->child; g != NIL; g = t->v[g].next)
					if (!ivec_push(stack, g))
						return false;
			} else if (cn->child != NIL) {
				if (!ivec_push(stack, c))
					return false;
			}
			c = next;
		}
		/* Rebuild P's list from what was kept, in order. */
		for (size_t i = stack->n; i-- > 0;) {
			uint32_t x = stack->v[i];
			t->v[x].parent = p;
			t->v[x].prev = NIL;
			t->v[x].next = t->v[p].child;
			if (t->v[p].child != NIL)
				t->v[t->v[p].child].prev = x;
			t->v[p].child = x;
		}
	}
	return true;
}

/* The thread subject of top-level node X (§4 step 5.B.i), and whether X
 * is a message that is a reply or forward. */
static const struct smsg *thread_msg(const struct tree *t, uint32_t x)
{
	if (t->v[x].msg != NIL)
		return &t->ss->m[t->v[x].msg];
	return t->v[x].child != NIL ? node_msg(t, t->v[x].child) : NULL;
}

static bool is_reply(const struct tree *t, uint32_t x)
{
	return t->v[x].msg != NIL && t->ss->m[t->v[x].msg].reply;
}

/* Step 5: gather top-level threads with the same base subject. */
static bool refs_merge_subjects(struct tree *t, struct ivec *top)
{
	const struct sortset *ss = t->ss;
	struct smap subj = { 0 };
	bool ok = false;

	top->n = 0;
	for (uint32_t c = t->v[0].child; c != NIL; c = t->v[c].next)
		if (!ivec_push(top, c))
			return false;

	/* (B) one message per base subject in the subject table. */
	for (size_t i = 0; i < top->n; i++) {
		uint32_t cur = top->v[i];
		const struct smsg *m = thread_msg(t, cur);
		if (m == NULL || m->subj.len == 0)
			continue;
		uint32_t old = smap_get(&subj, ss, m->subj);
		if (old == NIL ||
		    (t->v[old].msg != NIL &&
		     (t->v[cur].msg == NIL || (is_reply(t, old) && !is_reply(t, cur))))) {
			if (!smap_put(&subj, ss, m->subj, cur))
				goto out;
		}
	}
	/* (C) merge each other thread with that subject into the table's. */
	for (size_t i = 0; i < top->n; i++) {
		uint32_t cur = top->v[i];
		if (cur == NIL)
			continue;
		const struct smsg *m = thread_msg(t, cur);
		if (m == NULL || m->subj.len == 0)
			continue;
		uint32_t tab = smap_get(&subj, ss, m->subj);
		if (tab == NIL || tab == cur)
			continue;
		bool cur_dummy = t->v[cur].msg == NIL, tab_dummy = t->v[tab].msg == NIL;
		node_unlink(t, cur);
		top->v[i] = NIL;
		if (cur_dummy && tab_dummy) {
			uint32_t g;
			while ((g = t->v[cur].child) != NIL)
				node_link(t, tab, g);
		} else if (tab_dummy || (is_reply(t, cur) && !is_reply(t, tab))) {
			node_link(t, tab, cur);
		} else {
			/* A new dummy takes the table message's place at the top. */
			uint32_t d = node_new(t, NIL);
			if (d == NIL)
				goto out;
			uint32_t before = t->v[tab].prev;
			node_unlink(t, tab);
			t->v[d].parent = 0;
			t->v[d].prev = before;
			t->v[d].next = before != NIL ? t->v[before].next : t->v[0].child;
			if (before != NIL)
				t->v[before].next = d;
			else
				t->v[0].child = d;
			if (t->v[d].next != NIL)
				t->v[t->v[d].next].prev = d;
			node_link(t, d, cur);
			node_link(t, d, tab);
			for (size_t j = i + 1; j < top->n; j++)
				if (top->v[j] == tab)
					top->v[j] = d;
			if (!smap_put(&subj, ss, m->subj, d))
				goto out;
		}
	}
	ok = true;
out:
	free(subj.e);
	return ok;
}

static bool thread_references(struct tree *t)
{
	struct smap ids = { 0 };
	struct ivec order = { 0 }, stack = { 0 };
	bool ok = false;

	if (node_new(t, NIL) != 0) /* the root */
		goto out;
	refs_link(t, &ids); /* (1) */
	if (t->oom)
		goto out;
	/* (2) every node without a parent goes under the root. */
	for (uint32_t x = 1; x < t->n; x++)
		if (t->v[x].parent == NIL)
			node_link(t, 0, x);
	if (!refs_prune(t, &order, &stack)) /* (3) */
		goto out;
	/* (4) sort the top level by sent date, a dummy by its first child. */
	for (uint32_t c = t->v[0].child; c != NIL; c = t->v[c].next)
		if (t->v[c].msg == NIL && !sort_children(t, c, &stack))
			goto out;
	if (!sort_children(t, 0, &stack))
		goto out;
	if (!refs_merge_subjects(t, &stack)) /* (5) */
		goto out;
	/* (6) sort every set of siblings, the deepest first. */
	if (!preorder(t, &order, &stack))
		goto out;
	for (size_t k = order.n; k-- > 0;)
		if (!sort_children(t, order.v[k], &stack))
			goto out;
	ok = true;
out:
	free(ids.e);
	free(order.v);
	free(stack.v);
	return ok && !t->oom;
}

/* ------------------------------------------ THREAD: ORDEREDSUBJECT (§4) */

static int cmp_subject_sent(const void *pa, const void *pb, void *arg)
{
	const struct sortset *ss = ((const struct tree *)arg)->ss;
	const struct smsg *a = &ss->m[*(const uint32_t *)pa];
	const struct smsg *b = &ss->m[*(const uint32_t *)pb];
	int r = cmp_pstr(ss, a->subj, b->subj);

	return r ? r : cmp_sent(a, b);
}

/* Sort by base subject and sent date; each run of one subject is a thread
 * whose first message is the parent of all the others; threads are put in
 * order of their first message's sent date. */
static bool thread_orderedsubject(struct tree *t)
{
	const struct sortset *ss = t->ss;
	struct ivec order = { 0 }, stack = { 0 };
	bool ok = false;

	if (node_new(t, NIL) != 0)
		goto out;
	for (uint32_t i = 0; i < ss->n; i++)
		if (!ivec_push(&order, i) || node_new(t, i) != i + 1)
			goto out;
	if (order.n > 1)
		qsort_r(order.v, order.n, sizeof *order.v, cmp_subject_sent, t);
	for (size_t i = 0; i < order.n;) {
		uint32_t head = order.v[i] + 1;
		size_t j = i + 1;
		node_link(t, 0, head);
		while (j < order.n &&
		       cmp_pstr(ss, ss->m[order.v[j]].subj, ss->m[order.v[i]].subj) == 0)
			node_link(t, head, order.v[j++] + 1);
		if (!sort_children(t, head, &stack))
			goto out;
		i = j;
	}
	ok = sort_children(t, 0, &stack);
out:
	free(order.v);
	free(stack.v);
	return ok && !t->oom;
}

/* --------------------------------------------------- THREAD: the answer */

/*
 * Write "* THREAD" and the tree in the thread-list form of RFC 5256 §4
 * (formal syntax in §5): a chain of single children is "(a b c)", a node
 * with several children is followed by one "(...)" per child, and a dummy
 * writes no number.  Iterative: STACK holds, per open "(", the sibling to
 * open after it closes; it has room for one entry per node beforehand, so
 * the answer is never left half written.
 */
static bool write_threads(struct imap_session *s, const struct tree *t, struct ivec *stack)
{
	struct imap_wbuf *o = &s->out;
	uint32_t head = t->v[0].child;

	stack->n = 0;
	if (!ivec_reserve(stack, t->n))
		return false;
	imap_write_str(o, "* THREAD");
	if (head != NIL)
		imap_write_byte(o, ' ');
	while (head != NIL) {
		/* Open the list that starts at HEAD and follow its chain. */
		imap_write_byte(o, '(');
		if (!ivec_push(stack, t->v[head].next))
			return false;
		uint32_t n = head;
		bool first = true;
		head = NIL;
		for (;;) {
			if (t->v[n].msg != NIL) {
				if (!first)
					imap_write_byte(o, ' ');
				imap_write_u64(o, msg_number(s, &t->ss->m[t->v[n].msg]));
				first = false;
			}
			uint32_t c = t->v[n].child;
			if (c == NIL)
				break;
			if (t->v[c].next == NIL) {
				n = c;
				continue;
			}
			if (!first)
				imap_write_byte(o, ' ');
			head = c; /* a split: its children are nested lists */
			break;
		}
		if (head != NIL)
			continue;
		/* Close lists until one has a sibling to open next. */
		while (stack->n > 0 && head == NIL) {
			head = stack->v[--stack->n];
			imap_write_byte(o, ')');
		}
	}
	imap_write_crlf(o);
	return true;
}

void imap_cmd_thread(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_thread q;
	struct sortset ss = { 0 };
	struct tree t = { .ss = &ss };
	struct ivec stack = { 0 };
	int rc;

	rc = imap_parse_sp(cmd);
	if (rc == IMAP_PARSE_OK)
		rc = imap_parse_thread(cmd, &q);
	if (parse_failed(s, cmd, rc))
		return;
	unsigned need = NEED_SUBJECT | NEED_SENT;
	if (q.alg == IMAP_THREAD_REFERENCES)
		need |= NEED_REFS;
	if (search_and_load(s, cmd, &q.search, need, &ss) != 0) {
		sortset_free(&ss);
		return;
	}
	bool ok = q.alg == IMAP_THREAD_REFERENCES ? thread_references(&t)
	                                          : thread_orderedsubject(&t);
	if (ok)
		ok = write_threads(s, &t, &stack);
	free(stack.v);
	free(t.v);
	sortset_free(&ss);
	if (!ok) {
		imap_no(s, "SERVERBUG", "Out of memory");
		return;
	}
	imap_ok(s, NULL, "Thread completed");
}
