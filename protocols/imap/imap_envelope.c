/*
 * imap_envelope.c - ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2, §9)
 * formatted from the MIME tree the store parsed at ingest (store/mime.h).
 *
 * Nothing here reads the store or parses a message: the tree already holds
 * every value, unfolded and with the address lists split.  This file only
 * decides the IMAP spelling: NIL versus "", the defaults RFC 3501 asks for
 * (Sender and Reply-To fall back to From), and the conventions the major
 * servers share (types and parameter names upper-cased, a text part without
 * a charset shown with ("CHARSET" "us-ascii")).
 */
#include "protocols/imap/imap_int.h"

#include <stdlib.h>
#include <string.h>

#include "store/mime.h"

static void write_nstr(struct imap_wbuf *w, struct mime_str v, unsigned wflags)
{
	imap_write_nstring(w, v.p, v.len, wflags);
}

static bool is_quotable_ascii(const char *p, size_t len)
{
	if (len > IMAP_WRITE_QUOTED_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c > 0x7e)
			return false;
	}
	return true;
}

/* A token (media type, subtype, encoding, parameter name, disposition type)
 * as a quoted string in upper case.  Tokens come from the message: one
 * that is not plain ASCII is written as it is. */
static void write_upper(struct imap_wbuf *w, const char *p, size_t len, unsigned wflags)
{
	if (!is_quotable_ascii(p, len)) {
		imap_write_string(w, p, len, wflags);
		return;
	}
	imap_write_byte(w, '"');
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c == '"' || c == '\\')
			imap_write_byte(w, '\\');
		imap_write_byte(w, c);
	}
	imap_write_byte(w, '"');
}

static void write_upper_str(struct imap_wbuf *w, struct mime_str v, unsigned wflags)
{
	if (v.p == NULL)
		imap_write_nil(w);
	else
		write_upper(w, v.p, v.len, wflags);
}

static bool str_is(struct mime_str v, const char *lit)
{
	size_t n = strlen(lit);
	return v.p != NULL && v.len == n && memcmp(v.p, lit, n) == 0;
}

static bool is_ascii(struct mime_str v)
{
	for (size_t i = 0; i < v.len; i++)
		if ((unsigned char)v.p[i] >= 0x80)
			return false;
	return true;
}

/* RFC 2231 §7 attribute-char: what may stay unescaped in an extended value. */
static bool is_attr_char(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$&+-.^_`|~", c) != NULL;
}

/*
 * One parameter.  The parser has already joined RFC 2231 continuations and
 * decoded extended values to UTF-8.  IMAP4rev1 strings are 7-bit, so a
 * decoded value that is not ASCII, or that carries a language tag, goes
 * back out as one extended parameter (name*=utf-8'lang'%XX, RFC 2231 §4),
 * which clients decode; once UTF-8 is enabled (RFC 6855) a value without a
 * language is written as UTF-8 text instead.
 */
static void write_param(struct imap_wbuf *w, const struct mime_param *pm, unsigned wflags)
{
	bool has_lang = pm->lang.p != NULL && pm->lang.len > 0;
	bool ext = (pm->flags & MIME_PARAM_EXT) &&
	           (has_lang || (!is_ascii(pm->value) && !(wflags & IMAP_WRITE_UTF8)));

	if (!ext) {
		write_upper(w, pm->name.p, pm->name.len, wflags);
		imap_write_byte(w, ' ');
		imap_write_string(w, pm->value.p ? pm->value.p : "", pm->value.len, wflags);
		return;
	}

	struct mime_buf b = { 0 };
	mime_buf_put(&b, pm->name.p, pm->name.len);
	mime_buf_put(&b, "*", 1);
	write_upper(w, b.data ? b.data : "", b.len, wflags);
	imap_write_byte(w, ' ');
	b.len = 0;
	mime_buf_put(&b, "utf-8'", 6);
	if (has_lang)
		mime_buf_put(&b, pm->lang.p, pm->lang.len);
	mime_buf_put(&b, "'", 1);
	for (size_t i = 0; i < pm->value.len; i++) {
		unsigned char c = (unsigned char)pm->value.p[i];
		if (is_attr_char(c)) {
			mime_buf_put(&b, &c, 1);
		} else {
			static const char hex[] = "0123456789ABCDEF";
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			mime_buf_put(&b, e, 3);
		}
	}
	imap_write_string(w, b.data ? b.data : "", b.len, wflags);
	free(b.data);
}

/* body-fld-param: NIL or ("NAME" "value" ...).  A text part without a
 * charset gets ("CHARSET" "us-ascii"), its RFC 2046 §4.1.2 default, first. */
static void write_params(struct imap_wbuf *w, const struct mime_param *pv, size_t n,
                         bool default_charset, unsigned wflags)
{
	if (default_charset && mime_param_get(pv, n, "charset") != NULL)
		default_charset = false;
	if (n == 0 && !default_charset) {
		imap_write_nil(w);
		return;
	}
	imap_write_byte(w, '(');
	bool sep = false;
	if (default_charset) {
		imap_write_str(w, "\"CHARSET\" \"us-ascii\"");
		sep = true;
	}
	for (size_t i = 0; i < n; i++) {
		if (sep)
			imap_write_byte(w, ' ');
		write_param(w, &pv[i], wflags);
		sep = true;
	}
	imap_write_byte(w, ')');
}

/* The extension fields shared by both kinds of body after md5 / params:
 * body-fld-dsp SP body-fld-lang SP body-fld-loc. */
static void write_dsp_lang_loc(struct imap_wbuf *w, const struct mime_part *p, unsigned wflags)
{
	if (p->disposition.p == NULL) {
		imap_write_nil(w);
	} else {
		imap_write_byte(w, '(');
		write_upper(w, p->disposition.p, p->disposition.len, wflags);
		imap_write_byte(w, ' ');
		write_params(w, p->disp_params, p->ndisp_params, false, wflags);
		imap_write_byte(w, ')');
	}
	imap_write_byte(w, ' ');
	/* body-fld-lang = nstring / "(" string *(SP string) ")" */
	if (p->nlanguages == 0) {
		imap_write_nil(w);
	} else if (p->nlanguages == 1) {
		write_nstr(w, p->languages[0], wflags);
	} else {
		imap_write_byte(w, '(');
		for (size_t i = 0; i < p->nlanguages; i++) {
			if (i)
				imap_write_byte(w, ' ');
			imap_write_string(w, p->languages[i].p, p->languages[i].len, wflags);
		}
		imap_write_byte(w, ')');
	}
	imap_write_byte(w, ' ');
	write_nstr(w, p->location, wflags);
}

/* address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")";
 * a group start has a NIL host, its end all NILs (RFC 3501 §7.4.2). */
static void write_addrs(struct imap_wbuf *w, const struct mime_addr_list *l, unsigned wflags)
{
	if (l->n == 0) {
		imap_write_nil(w);
		return;
	}
	imap_write_byte(w, '(');
	for (size_t i = 0; i < l->n; i++) {
		const struct mime_addr *a = &l->v[i];
		imap_write_byte(w, '(');
		write_nstr(w, a->name, wflags);
		imap_write_byte(w, ' ');
		write_nstr(w, a->adl, wflags);
		imap_write_byte(w, ' ');
		write_nstr(w, a->mailbox, wflags);
		imap_write_byte(w, ' ');
		write_nstr(w, a->host, wflags);
		imap_write_byte(w, ')');
	}
	imap_write_byte(w, ')');
}

void imap_write_envelope(struct imap_wbuf *w, const struct mime_envelope *env, unsigned wflags)
{
	const struct mime_addr_list *a = env->addr;

	imap_write_byte(w, '(');
	write_nstr(w, env->date, wflags);
	imap_write_byte(w, ' ');
	write_nstr(w, env->subject, wflags);
	imap_write_byte(w, ' ');
	write_addrs(w, &a[MIME_FROM], wflags);
	imap_write_byte(w, ' ');
	/* "If the Sender or Reply-To lines are absent in the [RFC-2822]
	 * header, or are present but empty, the server sets the
	 * corresponding member of the envelope to be the same value as the
	 * from member" (RFC 3501 §7.4.2). */
	write_addrs(w, a[MIME_SENDER].n ? &a[MIME_SENDER] : &a[MIME_FROM], wflags);
	imap_write_byte(w, ' ');
	write_addrs(w, a[MIME_REPLY_TO].n ? &a[MIME_REPLY_TO] : &a[MIME_FROM], wflags);
	imap_write_byte(w, ' ');
	write_addrs(w, &a[MIME_TO], wflags);
	imap_write_byte(w, ' ');
	write_addrs(w, &a[MIME_CC], wflags);
	imap_write_byte(w, ' ');
	write_addrs(w, &a[MIME_BCC], wflags);
	imap_write_byte(w, ' ');
	write_nstr(w, env->in_reply_to, wflags);
	imap_write_byte(w, ' ');
	write_nstr(w, env->message_id, wflags);
	imap_write_byte(w, ')');
}

void imap_write_bodystructure(struct imap_wbuf *w, const struct mime_part *p,
                              bool extended, unsigned wflags)
{
	imap_write_byte(w, '(');

	if (str_is(p->type, "multipart")) {
		/* body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]:
		 * the children follow each other without a space. */
		for (const struct mime_part *c = p->child; c != NULL; c = c->next)
			imap_write_bodystructure(w, c, extended, wflags);
		imap_write_byte(w, ' ');
		write_upper_str(w, p->subtype, wflags);
		if (extended) {
			imap_write_byte(w, ' ');
			write_params(w, p->params, p->nparams, false, wflags);
			imap_write_byte(w, ' ');
			write_dsp_lang_loc(w, p, wflags);
		}
		imap_write_byte(w, ')');
		return;
	}

	bool text = str_is(p->type, "text");
	bool msg = str_is(p->type, "message") && str_is(p->subtype, "rfc822") &&
	           p->env != NULL && p->child != NULL;

	/* body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP
	 * body-fld-enc SP body-fld-octets */
	write_upper_str(w, p->type, wflags);
	imap_write_byte(w, ' ');
	write_upper_str(w, p->subtype, wflags);
	imap_write_byte(w, ' ');
	write_params(w, p->params, p->nparams, text, wflags);
	imap_write_byte(w, ' ');
	write_nstr(w, p->id, wflags);
	imap_write_byte(w, ' ');
	write_nstr(w, p->description, wflags);
	imap_write_byte(w, ' ');
	if (p->encoding.p != NULL && p->encoding.len > 0)
		write_upper(w, p->encoding.p, p->encoding.len, wflags);
	else
		imap_write_str(w, "\"7BIT\"");
	imap_write_byte(w, ' ');
	imap_write_u64(w, p->body_len);

	if (msg) {
		/* body-type-msg: ... SP envelope SP body SP body-fld-lines */
		imap_write_byte(w, ' ');
		imap_write_envelope(w, p->env, wflags);
		imap_write_byte(w, ' ');
		imap_write_bodystructure(w, p->child, extended, wflags);
		imap_write_byte(w, ' ');
		imap_write_u64(w, p->lines);
	} else if (text) {
		imap_write_byte(w, ' ');
		imap_write_u64(w, p->lines);
	}

	if (extended) {
		/* body-ext-1part = body-fld-md5 SP body-fld-dsp SP body-fld-lang
		 * SP body-fld-loc: always all four, as the major servers do. */
		imap_write_byte(w, ' ');
		write_nstr(w, p->md5, wflags);
		imap_write_byte(w, ' ');
		write_dsp_lang_loc(w, p, wflags);
	}
	imap_write_byte(w, ')');
}
