/*
 * mime_decode.c - the stateless helpers of mime.h: header field iteration
 * and unfolding, base64 / quoted-printable body decoding, charset
 * conversion to UTF-8 through iconv, RFC 2047 encoded words, and SEARCH's
 * case-insensitive substring match.  Nothing here knows the parse tree;
 * mime.c (the parser) and the front-ends both use these.
 */
#include "store/mime.h"

#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- buffer ----------------------------------------------------------- */

static int buf_reserve(struct mime_buf *b, size_t more)
{
	if (more <= b->cap - b->len)
		return 0;
	if (more > SIZE_MAX / 2 - b->len)
		return -1;
	size_t cap = b->cap ? b->cap : 64;
	while (cap - b->len < more)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d)
		return -1;
	b->data = d;
	b->cap = cap;
	return 0;
}

int mime_buf_put(struct mime_buf *b, const void *s, size_t len)
{
	if (len == 0)
		return 0;
	if (buf_reserve(b, len) < 0)
		return -1;
	memcpy(b->data + b->len, s, len);
	b->len += len;
	return 0;
}

static int buf_putc(struct mime_buf *b, char c)
{
	return mime_buf_put(b, &c, 1);
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* ---- header fields ---------------------------------------------------- */

/* Index just past the line that starts at POS (past its LF, or LEN). */
static size_t line_end(const char *s, size_t len, size_t pos)
{
	const char *nl = memchr(s + pos, '\n', len - pos);
	return nl ? (size_t)(nl - s) + 1 : len;
}

int mime_header_next(const char *hdr, size_t len, size_t *pos,
                     struct mime_field *f)
{
	size_t start = *pos;
	if (start >= len)
		return 0;
	size_t le = line_end(hdr, len, start);
	size_t content = le - start;
	if (content > 0 && hdr[le - 1] == '\n')
		content--;
	if (content > 0 && hdr[start + content - 1] == '\r')
		content--;
	if (content == 0)
		return 0; /* the blank line that ends the header */
	/* Continuation lines start with white space (RFC 5322 §2.2.3). */
	while (le < len && is_wsp(hdr[le]))
		le = line_end(hdr, len, le);

	size_t vend = le;
	if (vend > start && hdr[vend - 1] == '\n')
		vend--;
	if (vend > start && hdr[vend - 1] == '\r')
		vend--;

	memset(f, 0, sizeof(*f));
	f->raw = hdr + start;
	f->rawlen = le - start;
	const char *colon = is_wsp(hdr[start]) ? NULL
	                    : memchr(hdr + start, ':', content);
	if (colon) {
		size_t nl = (size_t)(colon - (hdr + start));
		while (nl > 0 && is_wsp(hdr[start + nl - 1]))
			nl--; /* obs-optional allows WSP before ':' (§4.5) */
		f->name = hdr + start;
		f->name_len = nl;
		f->value = colon + 1;
		f->value_len = vend - (size_t)(colon + 1 - hdr);
	} else {
		f->name = hdr + start;
		f->value = hdr + start;
		f->value_len = vend - start;
	}
	*pos = le;
	return 1;
}

int mime_header_find(const char *hdr, size_t len, const char *name,
                     size_t nth, struct mime_field *f)
{
	size_t pos = 0, nlen = strlen(name);
	while (mime_header_next(hdr, len, &pos, f)) {
		if (f->name_len == nlen && nlen > 0 &&
		    strncasecmp(f->name, name, nlen) == 0 && nth-- == 0)
			return 1;
	}
	return 0;
}

int mime_unfold(struct mime_buf *out, const char *s, size_t len)
{
	while (len > 0 && (is_wsp(s[0]) || s[0] == '\r' || s[0] == '\n')) {
		s++;
		len--;
	}
	while (len > 0 && (is_wsp(s[len - 1]) || s[len - 1] == '\r' ||
	                   s[len - 1] == '\n'))
		len--;
	size_t i = 0;
	while (i < len) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t j = nl ? (size_t)(nl - s) : len;
		size_t k = j;
		if (nl && k > i && s[k - 1] == '\r')
			k--;
		if (mime_buf_put(out, s + i, k - i) < 0)
			return -1;
		i = nl ? j + 1 : len;
	}
	return 0;
}

/* ---- transfer encodings ----------------------------------------------- */

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int mime_decode_base64(struct mime_buf *out, const char *s, size_t len)
{
	if (buf_reserve(out, len / 4 * 3 + 3) < 0)
		return -1;
	uint32_t acc = 0;
	int n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=') {
			/* End of a quantum: flush the octets it completes. */
			if (n == 2)
				out->data[out->len++] = (char)(acc >> 4);
			else if (n == 3) {
				out->data[out->len++] = (char)(acc >> 10);
				out->data[out->len++] = (char)(acc >> 2);
			}
			acc = 0;
			n = 0;
			continue;
		}
		int v = b64val((unsigned char)s[i]);
		if (v < 0)
			continue;
		acc = (acc << 6) | (uint32_t)v;
		if (++n == 4) {
			out->data[out->len++] = (char)(acc >> 16);
			out->data[out->len++] = (char)(acc >> 8);
			out->data[out->len++] = (char)acc;
			acc = 0;
			n = 0;
		}
	}
	if (n == 2)
		out->data[out->len++] = (char)(acc >> 4);
	else if (n == 3) {
		out->data[out->len++] = (char)(acc >> 10);
		out->data[out->len++] = (char)(acc >> 2);
	}
	return 0;
}

int mime_decode_qp(struct mime_buf *out, const char *s, size_t len)
{
	/* The output is at most the input, plus one octet for each bare LF,
	 * which comes out as CRLF. */
	size_t bare_lf = 0;
	for (size_t i = 0; i < len; i++)
		bare_lf += s[i] == '\n' && (i == 0 || s[i - 1] != '\r');
	if (buf_reserve(out, len + bare_lf) < 0)
		return -1;
	size_t i = 0;
	while (i < len) {
		size_t le = line_end(s, len, i);
		size_t e = le; /* end of line content */
		bool brk = false;
		if (e > i && s[e - 1] == '\n') {
			e--;
			brk = true;
			if (e > i && s[e - 1] == '\r')
				e--;
		}
		/* Rule 3: trailing white space is not part of the data. */
		while (e > i && is_wsp(s[e - 1]))
			e--;
		bool soft = false;
		for (size_t j = i; j < e; j++) {
			if (s[j] != '=') {
				out->data[out->len++] = s[j];
				continue;
			}
			if (j + 1 == e) {
				soft = true; /* rule 5: soft line break */
				break;
			}
			int hi = j + 2 < e ? hexval(s[j + 1]) : -1;
			int lo = j + 2 < e ? hexval(s[j + 2]) : -1;
			if (hi >= 0 && lo >= 0) {
				out->data[out->len++] = (char)(hi << 4 | lo);
				j += 2;
			} else {
				out->data[out->len++] = '=';
			}
		}
		if (brk && !soft) {
			out->data[out->len++] = '\r';
			out->data[out->len++] = '\n';
		}
		i = le;
	}
	return 0;
}

int mime_decode_body(struct mime_buf *out, enum mime_enc enc,
                     const char *s, size_t len)
{
	switch (enc) {
	case MIME_ENC_BASE64:
		return mime_decode_base64(out, s, len);
	case MIME_ENC_QP:
		return mime_decode_qp(out, s, len);
	default:
		return mime_buf_put(out, s, len);
	}
}

/* ---- charsets --------------------------------------------------------- */

static bool name_is(const char *s, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

int mime_charset_to_utf8(struct mime_buf *out, const char *charset,
                         size_t charset_len, const char *s, size_t len)
{
	if (name_is(charset, charset_len, "us-ascii") ||
	    name_is(charset, charset_len, "ascii") ||
	    name_is(charset, charset_len, "utf-8") ||
	    name_is(charset, charset_len, "utf8"))
		return mime_buf_put(out, s, len) < 0 ? -1 : 0;
	if (charset_len == 0 || charset_len > 64)
		return 1;
	char name[65];
	memcpy(name, charset, charset_len);
	name[charset_len] = '\0';
	iconv_t cd = iconv_open("UTF-8", name);
	if (cd == (iconv_t)-1)
		return 1;

	char *in = (char *)(uintptr_t)s; /* iconv's prototype is not const */
	size_t inleft = len;
	int rc = 0;
	while (inleft > 0) {
		if (buf_reserve(out, inleft * 2 + 16) < 0) {
			rc = -1;
			break;
		}
		char *o = out->data + out->len;
		size_t oleft = out->cap - out->len;
		size_t r = iconv(cd, &in, &inleft, &o, &oleft);
		out->len = (size_t)(o - out->data);
		if (r != (size_t)-1 || errno == E2BIG)
			continue;
		/* EILSEQ or EINVAL: replace one octet with U+FFFD, go on. */
		if (mime_buf_put(out, "\xEF\xBF\xBD", 3) < 0) {
			rc = -1;
			break;
		}
		in++;
		inleft--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	iconv_close(cd);
	return rc;
}

/* ---- RFC 2047 encoded words ------------------------------------------- */

struct eword {
	const char *cs, *text;
	size_t cslen, textlen, len; /* len: the whole =?...?= */
	char enc;
};

/* Recognise an encoded word at S (RFC 2047 §2): =?charset?B|Q?text?= with
 * no white space inside. */
static bool eword_at(const char *s, size_t len, struct eword *w)
{
	if (len < 8 || s[0] != '=' || s[1] != '?')
		return false;
	size_t i = 2;
	while (i < len && s[i] != '?' && !is_wsp(s[i]) && s[i] != '\r' &&
	       s[i] != '\n')
		i++;
	if (i + 2 >= len || s[i] != '?' || i == 2 || s[i + 2] != '?')
		return false;
	w->cs = s + 2;
	w->cslen = i - 2;
	const char *star = memchr(w->cs, '*', w->cslen);
	if (star)
		w->cslen = (size_t)(star - w->cs); /* RFC 2231 §5 language */
	w->enc = (char)(s[i + 1] | 0x20);
	if (w->enc != 'b' && w->enc != 'q')
		return false;
	size_t t = i + 3;
	size_t j = t;
	while (j + 1 < len && !(s[j] == '?' && s[j + 1] == '=')) {
		if (is_wsp(s[j]) || s[j] == '\r' || s[j] == '\n')
			return false;
		j++;
	}
	if (j + 1 >= len)
		return false;
	w->text = s + t;
	w->textlen = j - t;
	w->len = j + 2;
	return true;
}

static int eword_decode(struct mime_buf *out, const struct eword *w)
{
	if (w->enc == 'b')
		return mime_decode_base64(out, w->text, w->textlen);
	for (size_t i = 0; i < w->textlen; i++) {
		char c = w->text[i];
		int hi, lo;
		if (c == '_')
			c = ' ';
		else if (c == '=' && i + 2 < w->textlen &&
		         (hi = hexval(w->text[i + 1])) >= 0 &&
		         (lo = hexval(w->text[i + 2])) >= 0) {
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (buf_putc(out, c) < 0)
			return -1;
	}
	return 0;
}

int mime_decode_header(struct mime_buf *out, const char *s, size_t len)
{
	struct mime_buf pend = { 0 }; /* decoded octets of a run of words */
	const char *pcs = NULL;
	size_t pcslen = 0;
	int rc = 0;
	size_t i = 0;

#define FLUSH()                                                             \
	do {                                                                \
		if (pcs) {                                                  \
			int r_ = mime_charset_to_utf8(out, pcs, pcslen,     \
			                              pend.data, pend.len); \
			if (r_ < 0) { rc = -1; goto done; }                 \
			pcs = NULL;                                         \
			pend.len = 0;                                       \
		}                                                           \
	} while (0)

	while (i < len) {
		struct eword w;
		if (s[i] == '=' && eword_at(s + i, len - i, &w)) {
			/* Is the charset known?  Test by converting nothing. */
			struct mime_buf probe = { 0 };
			int known = mime_charset_to_utf8(&probe, w.cs, w.cslen, "", 0);
			free(probe.data);
			if (known != 0) {
				FLUSH();
				if (mime_buf_put(out, s + i, w.len) < 0) { rc = -1; goto done; }
				i += w.len;
				continue;
			}
			if (pcs && !(pcslen == w.cslen &&
			             strncasecmp(pcs, w.cs, pcslen) == 0))
				FLUSH();
			if (eword_decode(&pend, &w) < 0) { rc = -1; goto done; }
			pcs = w.cs;
			pcslen = w.cslen;
			i += w.len;
			/* §6.2: white space between adjacent encoded words is
			 * not displayed. */
			size_t j = i;
			while (j < len && (is_wsp(s[j]) || s[j] == '\r' || s[j] == '\n'))
				j++;
			struct eword nx;
			if (j > i && j < len && eword_at(s + j, len - j, &nx))
				i = j;
			continue;
		}
		FLUSH();
		if (buf_putc(out, s[i]) < 0) { rc = -1; goto done; }
		i++;
	}
	FLUSH();
#undef FLUSH
done:
	free(pend.data);
	return rc;
}

/* ---- SEARCH matching -------------------------------------------------- */

/* Decode one UTF-8 character at S; invalid octets decode to themselves
 * offset into a private range so they only ever match themselves. */
static uint32_t utf8_next(const unsigned char *s, size_t len, size_t *adv)
{
	unsigned char c = s[0];
	uint32_t cp;
	size_t n;
	if (c < 0x80) {
		*adv = 1;
		return c;
	} else if (c >= 0xC2 && c < 0xE0) {
		n = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c < 0xF0) {
		n = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c < 0xF5) {
		n = 4;
		cp = c & 0x07;
	} else {
		*adv = 1;
		return 0x110000u + c;
	}
	if (n > len) {
		*adv = 1;
		return 0x110000u + c;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*adv = 1;
			return 0x110000u + c;
		}
		cp = cp << 6 | (s[i] & 0x3F);
	}
	*adv = n;
	return cp;
}

static uint32_t fold(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c < 0xC0)
		return c;
	if (c <= 0xDE && c != 0xD7)
		return c + 32; /* Latin-1 capitals */
	if (c >= 0x100 && c <= 0x17F) {
		/* Latin Extended-A pairs capital/small, with a shift at
		 * 0x139..0x148 and 0x179..0x17E where capitals are odd. */
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
			return (c & 1) ? c + 1 : c;
		if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17F)
			return c;
		if (c == 0x178)
			return 0xFF; /* Ÿ */
		return (c & 1) ? c : c + 1;
	}
	if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
		return c + 32; /* Greek capitals */
	if (c >= 0x410 && c <= 0x42F)
		return c + 32; /* Cyrillic А..Я */
	if (c >= 0x400 && c <= 0x40F)
		return c + 80; /* Cyrillic Ѐ..Џ */
	return c;
}

bool mime_search_match(const char *hay, size_t haylen,
                       const char *needle, size_t needlelen)
{
	const unsigned char *h = (const unsigned char *)hay;
	const unsigned char *n = (const unsigned char *)needle;
	if (needlelen == 0)
		return true;
	size_t a0;
	uint32_t first = fold(utf8_next(n, needlelen, &a0));
	size_t i = 0;
	while (i < haylen) {
		size_t adv;
		uint32_t c = fold(utf8_next(h + i, haylen - i, &adv));
		if (c == first) {
			size_t hi = i + adv, ni = a0;
			while (ni < needlelen && hi < haylen) {
				size_t x, y;
				uint32_t nc = fold(utf8_next(n + ni, needlelen - ni, &x));
				uint32_t hc = fold(utf8_next(h + hi, haylen - hi, &y));
				if (nc != hc)
					break;
				ni += x;
				hi += y;
			}
			if (ni >= needlelen)
				return true;
		}
		i += adv;
	}
	return false;
}
