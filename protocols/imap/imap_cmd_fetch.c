/*
 * imap_cmd_fetch.c - FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8, §7.4.2),
 * with BINARY (RFC 3516), and CHANGEDSINCE and VANISHED (RFC 7162 §3.1.4,
 * §3.2.6).
 *
 * A FETCH runs in slices (DESIGN §3 "Reads on the loop"): each slice is
 * one short read transaction that answers up to SLICE_MESSAGES messages or
 * about SLICE_OUTPUT octets, then hands the output to the connection.  When
 * the connection is congested the command stops and goes on from the
 * session's drained callback (s->resume), so a FETCH of a large mailbox or
 * of a 20 MiB body never holds a transaction or the loop for long; a large
 * literal is itself copied out one slice at a time.
 *
 * FLAGS, UID, INTERNALDATE, RFC822.SIZE and MODSEQ come from the message
 * record only.  ENVELOPE, BODY and BODYSTRUCTURE come from the MIME tree
 * stored at ingest (store_body_mime); BODY[section] reads the body bytes,
 * and the tree only when a part number is named.
 *
 * Decisions where RFC 3501 is silent:
 *  - a part that does not exist, and HEADER/TEXT/HEADER.FIELDS of a part
 *    that is not message/rfc822, answer the empty string "" (as an origin
 *    past the end does, §6.4.5), so clients always get a string;
 *  - messages expunged by another session since this view was built are
 *    skipped; FETCH then answers NO "Some of the requested messages no
 *    longer exist" (RFC 2180 §4.1.2), UID FETCH answers OK, since a UID set
 *    names only the UIDs that exist (§6.4.8).
 */
#include "protocols/imap/imap_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "store/mime.h"

enum {
	SLICE_MESSAGES = 256,
	SLICE_OUTPUT = 1 << 20,
	STREAM_MIN = 64 << 10, /* least octets of a literal a slice copies */
};

/* The command's state across slices; allocated from the command's arena. */
struct fetch_job {
	struct imap_fetch f;
	uint32_t *uids;        /* ascending, from the view */
	size_t n, next;        /* next: index of the next message to answer */
	bool add_uid;          /* UID FETCH without UID: include it (§6.4.8) */
	bool sets_seen;        /* an item sets \Seen implicitly (§6.4.5) */
	bool add_modseq;       /* CHANGEDSINCE without MODSEQ (RFC 7162) */
	uint32_t *seen;        /* messages to get \Seen at the end */
	size_t nseen;
	size_t missing;        /* messages gone from the store */
	bool unknown_cte;      /* BINARY met an encoding it cannot decode */
	bool failed;           /* a read transaction could not be had */

	/* A message whose response spans slices (a large literal). */
	bool in_msg;
	struct store_message msg;
	uint32_t seq;
	bool will_seen;
	const struct imap_fetch_att *att; /* next item to write */
	bool first;            /* nothing written yet after "(" */
	size_t lit_pos, lit_end; /* the literal's octets still to copy */
};

/* What one message's items read, loaded on first use within a slice. */
struct fetch_msg {
	store_txn *txn;
	const struct store_message *m;
	const char *data;
	size_t len;
	bool have_data;
	mime_tree *tree;
	bool tree_tried;
	const char *kw[64];
	size_t nkw;
};

/* Where a section's octets are: a range of the message, or built text. */
struct section_text {
	const char *p;
	size_t len;
	struct mime_buf own;   /* HEADER.FIELDS(.NOT), decoded BINARY */
	bool in_body;          /* P points into the stored body */
};

static const char *const month_names[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static const char *fetch_data(struct fetch_msg *fm)
{
	if (!fm->have_data) {
		fm->have_data = true;
		if (store_body_get(fm->txn, fm->m->body_id, &fm->data, &fm->len) != STORE_OK) {
			fm->data = "";
			fm->len = 0;
		}
	}
	return fm->data;
}

/* The MIME tree: the one stored at ingest, or, for a message stored
 * without one (or with one that does not load), a fresh parse. */
static const mime_tree *fetch_tree(struct fetch_msg *fm)
{
	if (fm->tree_tried)
		return fm->tree;
	fm->tree_tried = true;
	fetch_data(fm);
	const void *blob;
	size_t bloblen;
	if (store_body_mime(fm->txn, fm->m->body_id, &blob, &bloblen) == STORE_OK)
		fm->tree = mime_load(blob, bloblen, fm->data, fm->len);
	if (fm->tree == NULL)
		fm->tree = mime_parse(fm->data, fm->len);
	return fm->tree;
}

static void fetch_msg_done(struct fetch_msg *fm)
{
	mime_free(fm->tree);
	fm->tree = NULL;
	fm->tree_tried = false;
	fm->have_data = false;
}

static bool att_sets_seen(const struct imap_fetch_att *a)
{
	switch (a->kind) {
	case IMAP_FETCH_RFC822:
	case IMAP_FETCH_RFC822_TEXT:
		return true;
	case IMAP_FETCH_BODY_SECTION:
	case IMAP_FETCH_BINARY:
		return !a->peek;
	default:
		return false;
	}
}

static bool field_listed(const struct imap_section *sec, const char *name, size_t len)
{
	for (size_t i = 0; i < sec->nfields; i++)
		if (sec->fields[i].len == len && strncasecmp(sec->fields[i].s, name, len) == 0)
			return true;
	return false;
}

/* HEADER.FIELDS(.NOT): the matching fields of HDR in their original order,
 * each with its folding, then the blank line that ends a header
 * (RFC 3501 §6.4.5).  Names match case-insensitively. */
static void header_fields(struct section_text *out, const char *hdr, size_t len,
                          const struct imap_section *sec, bool not)
{
	size_t pos = 0;
	struct mime_field f;
	while (mime_header_next(hdr, len, &pos, &f)) {
		if (f.name_len == 0)
			continue; /* not a field: neither listed nor unlisted */
		if (field_listed(sec, f.name, f.name_len) != not)
			mime_buf_put(&out->own, f.raw, f.rawlen);
	}
	mime_buf_put(&out->own, "\r\n", 2);
	out->p = out->own.data;
	out->len = out->own.len;
	out->in_body = false;
}

static void set_range(struct section_text *out, const char *base, size_t off, size_t len,
                      size_t total)
{
	if (off > total)
		off = total;
	if (len > total - off)
		len = total - off;
	out->p = base + off;
	out->len = len;
	out->in_body = true;
}

/* A part that is a message/rfc822 has its message as the only child. */
static const struct mime_part *encapsulated(const struct mime_part *p)
{
	return p->env != NULL ? p->child : NULL;
}

/*
 * Find the octets SEC names in the message.  Returns false for a part that
 * does not exist.  Without a part number nothing needs the tree: the
 * record's header_size splits HEADER from TEXT (RFC 3501 §6.4.5).
 */
static bool section_find(struct fetch_msg *fm, const struct imap_section *sec,
                         struct section_text *out)
{
	const char *d = fetch_data(fm);
	size_t total = fm->len;
	size_t hsize = fm->m->header_size;
	if (hsize > total)
		hsize = total;

	if (sec->nparts == 0) {
		switch (sec->text) {
		case IMAP_SECTION_ALL:
			set_range(out, d, 0, total, total);
			return true;
		case IMAP_SECTION_HEADER:
			set_range(out, d, 0, hsize, total);
			return true;
		case IMAP_SECTION_TEXT:
			set_range(out, d, hsize, total - hsize, total);
			return true;
		case IMAP_SECTION_HEADER_FIELDS:
		case IMAP_SECTION_HEADER_FIELDS_NOT:
			header_fields(out, d, hsize, sec,
			              sec->text == IMAP_SECTION_HEADER_FIELDS_NOT);
			return true;
		case IMAP_SECTION_MIME:
			return false; /* the parser refuses it; be safe */
		}
		return false;
	}

	const mime_tree *t = fetch_tree(fm);
	if (t == NULL)
		return false;
	const struct mime_part *p = mime_find_part(t, sec->part, sec->nparts);
	if (p == NULL)
		return false;
	const struct mime_part *m = encapsulated(p);

	switch (sec->text) {
	case IMAP_SECTION_ALL:
		set_range(out, d, p->body_off, p->body_len, total);
		return true;
	case IMAP_SECTION_MIME:
		set_range(out, d, p->hdr_off, p->hdr_len, total);
		return true;
	case IMAP_SECTION_HEADER:
		if (m == NULL)
			return false;
		set_range(out, d, m->hdr_off, m->hdr_len, total);
		return true;
	case IMAP_SECTION_TEXT:
		if (m == NULL)
			return false;
		set_range(out, d, m->body_off, m->body_len, total);
		return true;
	case IMAP_SECTION_HEADER_FIELDS:
	case IMAP_SECTION_HEADER_FIELDS_NOT:
		if (m == NULL)
			return false;
		if (m->hdr_off > total || m->hdr_len > total - m->hdr_off)
			return false;
		header_fields(out, d + m->hdr_off, m->hdr_len, sec,
		              sec->text == IMAP_SECTION_HEADER_FIELDS_NOT);
		return true;
	}
	return false;
}

/*
 * BINARY[part]: the part's body with its transfer encoding removed
 * (RFC 3516 §4.2).  BINARY[] is the whole message, which has no encoding
 * of its own.  Returns false for a missing part; sets *UNKNOWN for an
 * encoding that cannot be decoded.
 */
static bool binary_find(struct fetch_msg *fm, const struct imap_section *sec,
                        struct section_text *out, bool *unknown)
{
	if (!section_find(fm, sec, out))
		return false;
	if (sec->nparts == 0)
		return true;
	const struct mime_part *p = mime_find_part(fm->tree, sec->part, sec->nparts);
	switch (p->enc) {
	case MIME_ENC_7BIT:
	case MIME_ENC_8BIT:
	case MIME_ENC_BINARY:
		return true;
	case MIME_ENC_QP:
	case MIME_ENC_BASE64:
		mime_decode_body(&out->own, p->enc, out->p, out->len);
		out->p = out->own.data ? out->own.data : "";
		out->len = out->own.len;
		out->in_body = false;
		return true;
	case MIME_ENC_OTHER:
		break;
	}
	*unknown = true;
	return false;
}

static void write_internaldate(struct imap_wbuf *w, int64_t when)
{
	time_t t = (time_t)when;
	struct tm tm;
	char buf[64];
	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(buf, sizeof(buf), "\"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
	         month_names[tm.tm_mon >= 0 && tm.tm_mon < 12 ? tm.tm_mon : 0],
	         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	imap_write_str(w, buf);
}

/* RFC 8474 §5.1: "E" and the body's number in 16 hex digits; for a body
 * stored before bodies were numbered, "M" and the first 24 hex digits (96
 * bits) of its SHA-256, as it always was (an EMAILID does not change).  A
 * COPY or MOVE shares the body, so the id survives both; two messages
 * with identical bytes may share one too, which §5.1 permits, and a number
 * is never given to other bytes. */
static void write_emailid(struct imap_wbuf *w, const uint8_t body_id[32])
{
	static const char hex[] = "0123456789abcdef";
	char id[1 + 24];
	uint64_t num = store_body_number(body_id);

	if (num) {
		id[0] = 'E';
		for (size_t i = 0; i < 16; i++)
			id[1 + i] = hex[(num >> (60 - 4 * i)) & 0xf];
		imap_write_bytes(w, id, 1 + 16);
		return;
	}
	id[0] = 'M';
	for (size_t i = 0; i < 12; i++) {
		id[1 + 2 * i] = hex[body_id[i] >> 4];
		id[2 + 2 * i] = hex[body_id[i] & 0xf];
	}
	imap_write_bytes(w, id, sizeof(id));
}

static void write_literal_head(struct imap_wbuf *w, size_t len, bool literal8)
{
	imap_write_str(w, literal8 ? "~{" : "{");
	imap_write_u64(w, len);
	imap_write_str(w, "}\r\n");
}

/*
 * Write a body section item (BODY[...], BINARY[...], RFC822*).  Returns
 * false when a large literal was only begun: the rest is copied by later
 * slices from j->lit_pos.
 */
static bool write_section_item(struct imap_session *s, struct fetch_job *j,
                               struct fetch_msg *fm, const struct imap_fetch_att *att,
                               size_t budget)
{
	struct imap_wbuf *w = &s->out;
	unsigned wflags = imap_write_flags(s);
	struct imap_section plain = { 0 };
	const struct imap_section *sec = &att->section;
	bool binary = att->kind == IMAP_FETCH_BINARY || att->kind == IMAP_FETCH_BINARY_SIZE;

	switch (att->kind) {
	case IMAP_FETCH_RFC822:
		sec = &plain;
		break;
	case IMAP_FETCH_RFC822_HEADER:
		plain.text = IMAP_SECTION_HEADER;
		sec = &plain;
		break;
	case IMAP_FETCH_RFC822_TEXT:
		plain.text = IMAP_SECTION_TEXT;
		sec = &plain;
		break;
	default:
		break;
	}

	struct section_text st = { 0 };
	bool unknown = false;
	bool found = binary ? binary_find(fm, sec, &st, &unknown) : section_find(fm, sec, &st);
	if (unknown) {
		/* RFC 3516 §4.3: the request fails with UNKNOWN-CTE; the item
		 * is left out of this response. */
		j->unknown_cte = true;
		free(st.own.data);
		return true;
	}

	if (!j->first)
		imap_write_byte(w, ' ');
	j->first = false;
	imap_write_fetch_name(w, att, wflags);
	imap_write_byte(w, ' ');

	if (att->kind == IMAP_FETCH_BINARY_SIZE) {
		imap_write_u64(w, found ? st.len : 0);
		free(st.own.data);
		return true;
	}

	const char *p = found ? st.p : "";
	size_t len = found ? st.len : 0;
	if (att->partial) {
		/* §6.4.5: a partial past the end is the empty string; one that
		 * runs past the end is cut there. */
		if (att->origin >= len) {
			len = 0;
		} else {
			p += att->origin;
			len -= (size_t)att->origin;
			if (att->count < len)
				len = (size_t)att->count;
		}
	}

	if (len == 0) {
		imap_write_str(w, "\"\"");
		free(st.own.data);
		return true;
	}

	/* RFC 3516 §4.3: decoded data with NUL goes out as literal8. */
	bool literal8 = binary && memchr(p, '\0', len) != NULL;
	if (!st.in_body || len <= budget || len <= STREAM_MIN) {
		write_literal_head(w, len, literal8);
		imap_write_bytes(w, p, len);
		free(st.own.data);
		return true;
	}

	/* A large range of the stored body: copy a slice now, the rest later
	 * from the same immutable body (store_body_get). */
	size_t chunk = budget > STREAM_MIN ? budget : STREAM_MIN;
	write_literal_head(w, len, literal8);
	imap_write_bytes(w, p, chunk);
	j->lit_pos = (size_t)(p - fm->data) + chunk;
	j->lit_end = (size_t)(p - fm->data) + len;
	return false;
}

/* Write the items of the current message from j->att on.  Returns false
 * when a literal is left unfinished for the next slice. */
static bool write_items(struct imap_session *s, struct fetch_job *j, struct fetch_msg *fm,
                        size_t budget)
{
	struct imap_wbuf *w = &s->out;
	unsigned wflags = imap_write_flags(s);
	const struct store_message *m = fm->m;

	for (const struct imap_fetch_att *a = j->att; a != NULL; a = a->next) {
		j->att = a->next;
		if (a->kind == IMAP_FETCH_UID && j->add_uid)
			continue; /* already written first */
		switch (a->kind) {
		case IMAP_FETCH_BODY_SECTION:
		case IMAP_FETCH_BINARY:
		case IMAP_FETCH_BINARY_SIZE:
		case IMAP_FETCH_RFC822:
		case IMAP_FETCH_RFC822_HEADER:
		case IMAP_FETCH_RFC822_TEXT: {
			size_t used = w->len;
			if (!write_section_item(s, j, fm, a, budget))
				return false;
			used = w->len - used;
			budget = used < budget ? budget - used : 0;
			continue;
		}
		default:
			break;
		}

		if (!j->first)
			imap_write_byte(w, ' ');
		j->first = false;
		switch (a->kind) {
		case IMAP_FETCH_FLAGS: {
			uint32_t flags = m->flags | (j->will_seen ? STORE_F_SEEN : 0);
			imap_write_str(w, "FLAGS ");
			imap_write_msg_flags(w, flags, m->keywords, fm->kw, fm->nkw,
			                     imap_view_is_recent(&s->view, m->uid));
			break;
		}
		case IMAP_FETCH_INTERNALDATE:
			imap_write_str(w, "INTERNALDATE ");
			write_internaldate(w, m->internal_date);
			break;
		case IMAP_FETCH_RFC822_SIZE:
			imap_write_str(w, "RFC822.SIZE ");
			imap_write_u64(w, m->size);
			break;
		case IMAP_FETCH_UID:
			imap_write_str(w, "UID ");
			imap_write_u64(w, m->uid);
			break;
		case IMAP_FETCH_MODSEQ:
			imap_write_str(w, "MODSEQ (");
			imap_write_u64(w, m->modseq);
			imap_write_byte(w, ')');
			break;
		case IMAP_FETCH_SAVEDATE:
			/* RFC 8514 §4.3; records from before save_date existed
			 * carry 0 and answer their INTERNALDATE, as SEARCH does. */
			imap_write_str(w, "SAVEDATE ");
			write_internaldate(w, m->save_date ? m->save_date : m->internal_date);
			break;
		case IMAP_FETCH_EMAILID:
			imap_write_str(w, "EMAILID (");
			write_emailid(w, m->body_id);
			imap_write_byte(w, ')');
			break;
		case IMAP_FETCH_THREADID:
			/* RFC 8474 §5.2: NIL, threads are not tracked. */
			imap_write_str(w, "THREADID NIL");
			break;
		case IMAP_FETCH_ENVELOPE: {
			const mime_tree *t = fetch_tree(fm);
			imap_write_str(w, "ENVELOPE ");
			if (t != NULL)
				imap_write_envelope(w, mime_envelope(t), wflags);
			else
				imap_write_str(w, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
			break;
		}
		case IMAP_FETCH_BODY:
		case IMAP_FETCH_BODYSTRUCTURE: {
			bool ext = a->kind == IMAP_FETCH_BODYSTRUCTURE;
			const mime_tree *t = fetch_tree(fm);
			imap_write_str(w, ext ? "BODYSTRUCTURE " : "BODY ");
			if (t != NULL)
				imap_write_bodystructure(w, mime_root(t), ext, wflags);
			else
				imap_write_str(w, "(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
			break;
		}
		default:
			break;
		}
	}
	if (j->add_modseq) {
		imap_write_str(w, j->first ? "MODSEQ (" : " MODSEQ (");
		imap_write_u64(w, m->modseq);
		imap_write_byte(w, ')');
		j->first = false;
	}
	return true;
}

/* Go on copying a literal begun by an earlier slice. */
static bool continue_literal(struct fetch_job *j, struct fetch_msg *fm, struct imap_wbuf *w,
                             size_t budget)
{
	fetch_data(fm);
	size_t end = j->lit_end <= fm->len ? j->lit_end : fm->len;
	size_t pos = j->lit_pos <= end ? j->lit_pos : end;
	size_t chunk = budget > STREAM_MIN ? budget : STREAM_MIN;
	if (chunk > end - pos)
		chunk = end - pos;
	imap_write_bytes(w, fm->data + pos, chunk);
	/* A body that went away mid-literal (it cannot while the message
	 * exists, but bodies of expunged messages may be removed): pad, so
	 * the client's count of octets stays right. */
	if (pos + chunk == end && end < j->lit_end) {
		while (end < j->lit_end) {
			imap_write_byte(w, ' ');
			end++;
		}
		j->lit_pos = j->lit_end;
		return true;
	}
	j->lit_pos = pos + chunk;
	return j->lit_pos >= j->lit_end;
}

static void end_message(struct fetch_job *j, struct imap_wbuf *w)
{
	imap_write_str(w, ")\r\n");
	if (j->will_seen)
		j->seen[j->nseen++] = j->msg.uid;
	j->in_msg = false;
	j->next++;
}

/* One slice: one read transaction.  Returns true while messages remain. */
static bool fetch_slice(struct imap_session *s, struct fetch_job *j)
{
	struct imap_wbuf *w = &s->out;
	store_txn *txn = store_read_begin(conn_store(s->c));
	if (txn == NULL) {
		j->failed = true;
		return false;
	}

	struct fetch_msg fm = { .txn = txn, .m = &j->msg };
	if (store_mailbox_keywords(txn, s->view.mailbox_id, fm.kw, &fm.nkw) != STORE_OK)
		fm.nkw = 0;

	size_t start = w->len;
	size_t count = 0;
	while (j->next < j->n && count < SLICE_MESSAGES) {
		size_t used = w->len - start;
		if (used >= SLICE_OUTPUT)
			break;
		size_t budget = SLICE_OUTPUT - used;

		if (j->in_msg) {
			/* A literal left over by the previous slice. */
			if (!continue_literal(j, &fm, w, budget)) {
				fetch_msg_done(&fm);
				break;
			}
			used = w->len - start;
			budget = used < SLICE_OUTPUT ? SLICE_OUTPUT - used : 0;
			if (!write_items(s, j, &fm, budget)) {
				fetch_msg_done(&fm);
				break;
			}
			fetch_msg_done(&fm);
			end_message(j, w);
			count++;
			continue;
		}

		uint32_t uid = j->uids[j->next];
		if (store_message_get(txn, s->view.mailbox_id, uid, &j->msg) != STORE_OK) {
			j->missing++;
			j->next++;
			continue;
		}
		if (j->f.changedsince_set && j->msg.modseq <= j->f.changedsince) {
			j->next++;
			continue;
		}
		j->in_msg = true;
		j->seq = imap_view_seq(&s->view, uid);
		j->will_seen = j->sets_seen && !s->view.readonly &&
		               !(j->msg.flags & STORE_F_SEEN);
		j->att = j->f.atts;
		j->first = true;

		imap_write_str(w, "* ");
		imap_write_u64(w, j->seq);
		imap_write_str(w, " FETCH (");
		if (j->add_uid) {
			imap_write_str(w, "UID ");
			imap_write_u64(w, uid);
			j->first = false;
		}
		if (!write_items(s, j, &fm, budget)) {
			fetch_msg_done(&fm);
			break;
		}
		fetch_msg_done(&fm);
		end_message(j, w);
		count++;
	}

	store_read_end(txn);
	return j->next < j->n;
}

static void fetch_answer(struct imap_session *s, int seen_status)
{
	struct fetch_job *j = s->cmd_state;
	s->cmd_state = NULL;
	const char *name = s->uid ? "UID FETCH" : "FETCH";

	if (j->failed)
		imap_no(s, "SERVERBUG", "%s failed: the store could not be read", name);
	else if (seen_status != STORE_OK)
		imap_no(s, NULL, "%s done, but \\Seen could not be stored: %s", name,
		        store_strerror(seen_status));
	else if (j->unknown_cte)
		imap_no(s, "UNKNOWN-CTE", "Cannot decode a part's content transfer encoding");
	else if (j->missing && !s->uid)
		imap_no(s, NULL, "Some of the requested messages no longer exist");
	else
		imap_ok(s, NULL, "%s completed", name);
}

static void fetch_seen_done(struct imap_session *s, store_req *r)
{
	fetch_answer(s, store_req_status(r));
}

/*
 * The output is written; now the implicit \Seen (RFC 3501 §6.4.5), in one
 * request for all the messages that get it.  The answer's view sync then
 * reports their new FLAGS as untagged FETCH responses.
 */
static void fetch_finish(struct imap_session *s, struct fetch_job *j)
{
	if (j->nseen == 0 || j->failed) {
		fetch_answer(s, STORE_OK);
		return;
	}
	store_req *r = store_req_new();
	for (size_t i = 0; i < j->nseen; i++)
		store_req_set_flags(r, s->view.mailbox_id, j->seen[i], STORE_FLAGS_ADD,
		                    STORE_F_SEEN, NULL, 0);
	imap_submit(s, r, fetch_seen_done);
}

static void fetch_resume(struct imap_session *s);

static void fetch_run(struct imap_session *s)
{
	struct fetch_job *j = s->cmd_state;
	for (;;) {
		if (conn_closed(s->c))
			return;
		bool more = fetch_slice(s, j);
		if (!more)
			break;
		imap_flush(s);
		if (conn_congested(s->c)) {
			/* Wait for the client to read: imap.c's drained handler
			 * calls fetch_resume. */
			s->busy = true;
			conn_pause(s->c);
			s->resume = fetch_resume;
			return;
		}
	}
	fetch_finish(s, j);
}

static void fetch_resume(struct imap_session *s)
{
	s->resume = NULL;
	s->busy = false;
	conn_resume(s->c);
	fetch_run(s);
}

void imap_cmd_fetch(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_seqset set;
	struct fetch_job *j = imap_cmd_alloc(cmd, sizeof(*j));
	if (j == NULL) {
		imap_no(s, NULL, "Out of memory");
		return;
	}
	if (imap_parse_sp(cmd) != IMAP_PARSE_OK || imap_parse_seqset(cmd, &set) != IMAP_PARSE_OK ||
	    imap_parse_sp(cmd) != IMAP_PARSE_OK || imap_parse_fetch(cmd, &j->f) != IMAP_PARSE_OK ||
	    imap_parse_end(cmd) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", cmd->error ? cmd->error : "invalid FETCH arguments");
		return;
	}
	if (j->f.vanished && !(s->enabled & IMAP_EN_QRESYNC)) {
		/* RFC 7162 §3.2.6: VANISHED only after ENABLE QRESYNC. */
		imap_bad(s, NULL, "VANISHED needs ENABLE QRESYNC first");
		return;
	}

	if (imap_view_resolve(s, &set, s->uid, &j->uids, &j->n) != 0)
		return; /* answered BAD */

	bool has_modseq = false;
	for (const struct imap_fetch_att *a = j->f.atts; a != NULL; a = a->next) {
		if (att_sets_seen(a))
			j->sets_seen = true;
		if (a->kind == IMAP_FETCH_MODSEQ)
			has_modseq = true;
	}
	/* §6.4.8: a UID FETCH response always carries UID; written first. */
	j->add_uid = s->uid;
	/* RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ. */
	j->add_modseq = j->f.changedsince_set && !has_modseq;
	/* Both are CONDSTORE enabling commands (§3.1). */
	if (has_modseq || j->f.changedsince_set)
		imap_condstore_enable(s);
	/* §3.2.6: the VANISHED (EARLIER) response precedes every FETCH. */
	if (j->f.vanished && imap_vanished_earlier(s, &set, j->f.changedsince) != STORE_OK) {
		imap_no(s, "SERVERBUG", "UID FETCH failed: the store could not be read");
		return;
	}

	if (j->sets_seen && !s->view.readonly && j->n > 0) {
		j->seen = imap_cmd_alloc(cmd, j->n * sizeof(*j->seen));
		if (j->seen == NULL) {
			imap_no(s, NULL, "Out of memory");
			return;
		}
	}
	s->cmd_state = j;
	fetch_run(s);
}
