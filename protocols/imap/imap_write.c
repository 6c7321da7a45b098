/*
 * imap_write.c - response formatting into a growable buffer.
 *
 * The one place that decides between atom, quoted string and literal, so
 * every response the front-end sends follows RFC 3501 section 4.3 the same
 * way.  Contracts are in imap_write.h.
 */
#include "protocols/imap/imap_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/imap/imap_mutf7.h"

void imap_wbuf_init(struct imap_wbuf *w)
{
	memset(w, 0, sizeof(*w));
}

void imap_wbuf_free(struct imap_wbuf *w)
{
	free(w->data);
	memset(w, 0, sizeof(*w));
}

void imap_wbuf_reset(struct imap_wbuf *w)
{
	w->len = 0;
	w->oom = false;
}

static bool reserve(struct imap_wbuf *w, size_t extra)
{
	if (w->oom)
		return false;
	if (extra > SIZE_MAX - w->len) {
		w->oom = true;
		return false;
	}
	size_t need = w->len + extra;
	if (need <= w->cap)
		return true;
	size_t cap = w->cap ? w->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	char *p = realloc(w->data, cap);
	if (p == NULL) {
		w->oom = true;
		return false;
	}
	w->data = p;
	w->cap = cap;
	return true;
}

void imap_write_bytes(struct imap_wbuf *w, const void *p, size_t len)
{
	if (len == 0 || !reserve(w, len))
		return;
	memcpy(w->data + w->len, p, len);
	w->len += len;
}

void imap_write_byte(struct imap_wbuf *w, char c)
{
	imap_write_bytes(w, &c, 1);
}

void imap_write_str(struct imap_wbuf *w, const char *s)
{
	imap_write_bytes(w, s, strlen(s));
}

void imap_write_crlf(struct imap_wbuf *w)
{
	imap_write_bytes(w, "\r\n", 2);
}

void imap_write_u64(struct imap_wbuf *w, uint64_t v)
{
	char tmp[24];
	size_t n = sizeof(tmp);

	do {
		tmp[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	imap_write_bytes(w, tmp + n, sizeof(tmp) - n);
}

void imap_write_nil(struct imap_wbuf *w)
{
	imap_write_bytes(w, "NIL", 3);
}

static void write_literal_head(struct imap_wbuf *w, const char *open,
			       size_t len)
{
	imap_write_str(w, open);
	imap_write_u64(w, len);
	imap_write_bytes(w, "}\r\n", 3);
}

void imap_write_literal(struct imap_wbuf *w, const void *p, size_t len)
{
	write_literal_head(w, "{", len);
	imap_write_bytes(w, p, len);
}

void imap_write_literal8(struct imap_wbuf *w, const void *p, size_t len)
{
	write_literal_head(w, "~{", len);
	imap_write_bytes(w, p, len);
}

/* Can P/LEN be a quoted string (RFC 3501 QUOTED-CHAR, or UTF-8 text when
 * UTF-8 is enabled, RFC 6855 section 3)? */
static bool quotable(const char *p, size_t len, unsigned flags)
{
	bool eight = false;

	if (len > IMAP_WRITE_QUOTED_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\0' || c == '\r' || c == '\n')
			return false;
		if (c >= 0x80)
			eight = true;
	}
	if (!eight)
		return true;
	return (flags & IMAP_WRITE_UTF8) && imap_utf8_valid(p, len);
}

static void write_quoted(struct imap_wbuf *w, const char *p, size_t len)
{
	size_t run = 0;

	imap_write_byte(w, '"');
	for (size_t i = 0; i < len; i++) {
		if (p[i] != '"' && p[i] != '\\')
			continue;
		imap_write_bytes(w, p + run, i - run);
		imap_write_byte(w, '\\');
		run = i;
	}
	imap_write_bytes(w, p + run, len - run);
	imap_write_byte(w, '"');
}

void imap_write_string(struct imap_wbuf *w, const char *p, size_t len,
		       unsigned flags)
{
	if (quotable(p, len, flags))
		write_quoted(w, p, len);
	else
		imap_write_literal(w, p, len);
}

static bool is_astring_atom(const char *p, size_t len)
{
	if (len == 0 || len > IMAP_WRITE_QUOTED_MAX)
		return false;
	if (len == 3 && strncasecmp(p, "NIL", 3) == 0)
		return false; /* would read back as nil in an nstring */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c <= 0x20 || c >= 0x7f)
			return false;
		switch (c) {
		case '(': case ')': case '{': case '%': case '*':
		case '"': case '\\':
			return false;
		default:
			break;
		}
	}
	return true;
}

void imap_write_astring(struct imap_wbuf *w, const char *p, size_t len,
			unsigned flags)
{
	if (is_astring_atom(p, len))
		imap_write_bytes(w, p, len);
	else
		imap_write_string(w, p, len, flags);
}

void imap_write_nstring(struct imap_wbuf *w, const char *p, size_t len,
			unsigned flags)
{
	if (p == NULL)
		imap_write_nil(w);
	else
		imap_write_string(w, p, len, flags);
}

void imap_write_mailbox(struct imap_wbuf *w, const char *name, size_t len,
			unsigned flags)
{
	if ((flags & IMAP_WRITE_UTF8) || len == 0) {
		imap_write_astring(w, name, len, flags);
		return;
	}
	size_t cap = IMAP_MUTF7_ENCODED_MAX(len), n;
	char *tmp = malloc(cap);
	if (tmp == NULL) {
		w->oom = true;
		return;
	}
	if (imap_mutf7_encode(name, len, tmp, cap, &n) == 0)
		imap_write_astring(w, tmp, n, flags);
	else
		imap_write_string(w, name, len, flags);
	free(tmp);
}

void imap_write_flag_list(struct imap_wbuf *w, const char *const *flags,
			  size_t n)
{
	imap_write_byte(w, '(');
	for (size_t i = 0; i < n; i++) {
		if (i)
			imap_write_byte(w, ' ');
		imap_write_str(w, flags[i]);
	}
	imap_write_byte(w, ')');
}

static void write_range(struct imap_wbuf *w, uint32_t lo, uint32_t hi)
{
	imap_write_u64(w, lo);
	if (hi != lo) {
		imap_write_byte(w, ':');
		imap_write_u64(w, hi);
	}
}

void imap_write_uid_set(struct imap_wbuf *w, const uint32_t *v, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t j = i;
		while (j + 1 < n && v[j] != UINT32_MAX && v[j + 1] == v[j] + 1)
			j++;
		if (i)
			imap_write_byte(w, ',');
		write_range(w, v[i], v[j]);
		i = j + 1;
	}
}

void imap_write_ranges(struct imap_wbuf *w, const struct imap_range *r,
		       size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			imap_write_byte(w, ',');
		write_range(w, r[i].lo, r[i].hi);
	}
}

static const char *fetch_plain_name(enum imap_fetch_kind k)
{
	switch (k) {
	case IMAP_FETCH_FLAGS: return "FLAGS";
	case IMAP_FETCH_INTERNALDATE: return "INTERNALDATE";
	case IMAP_FETCH_RFC822: return "RFC822";
	case IMAP_FETCH_RFC822_HEADER: return "RFC822.HEADER";
	case IMAP_FETCH_RFC822_SIZE: return "RFC822.SIZE";
	case IMAP_FETCH_RFC822_TEXT: return "RFC822.TEXT";
	case IMAP_FETCH_ENVELOPE: return "ENVELOPE";
	case IMAP_FETCH_BODY: return "BODY";
	case IMAP_FETCH_BODYSTRUCTURE: return "BODYSTRUCTURE";
	case IMAP_FETCH_UID: return "UID";
	case IMAP_FETCH_BODY_SECTION: return "BODY";
	case IMAP_FETCH_BINARY: return "BINARY";
	case IMAP_FETCH_BINARY_SIZE: return "BINARY.SIZE";
	case IMAP_FETCH_MODSEQ: return "MODSEQ";
	case IMAP_FETCH_SAVEDATE: return "SAVEDATE";
	case IMAP_FETCH_EMAILID: return "EMAILID";
	case IMAP_FETCH_THREADID: return "THREADID";
	}
	return "";
}

void imap_write_fetch_name(struct imap_wbuf *w,
			   const struct imap_fetch_att *att, unsigned flags)
{
	static const char *const text[] = {
		[IMAP_SECTION_ALL] = "",
		[IMAP_SECTION_HEADER] = "HEADER",
		[IMAP_SECTION_HEADER_FIELDS] = "HEADER.FIELDS",
		[IMAP_SECTION_HEADER_FIELDS_NOT] = "HEADER.FIELDS.NOT",
		[IMAP_SECTION_TEXT] = "TEXT",
		[IMAP_SECTION_MIME] = "MIME",
	};
	const struct imap_section *s = &att->section;

	imap_write_str(w, fetch_plain_name(att->kind));
	if (att->kind != IMAP_FETCH_BODY_SECTION &&
	    att->kind != IMAP_FETCH_BINARY &&
	    att->kind != IMAP_FETCH_BINARY_SIZE)
		return;
	imap_write_byte(w, '[');
	for (size_t i = 0; i < s->nparts; i++) {
		if (i)
			imap_write_byte(w, '.');
		imap_write_u64(w, s->part[i]);
	}
	if (s->text != IMAP_SECTION_ALL) {
		if (s->nparts)
			imap_write_byte(w, '.');
		imap_write_str(w, text[s->text]);
	}
	if (s->nfields) {
		imap_write_str(w, " (");
		for (size_t i = 0; i < s->nfields; i++) {
			if (i)
				imap_write_byte(w, ' ');
			imap_write_astring(w, s->fields[i].s, s->fields[i].len,
					   flags);
		}
		imap_write_byte(w, ')');
	}
	imap_write_byte(w, ']');
	if (att->partial && att->kind != IMAP_FETCH_BINARY_SIZE) {
		imap_write_byte(w, '<');
		imap_write_u64(w, att->origin);
		imap_write_byte(w, '>');
	}
}
