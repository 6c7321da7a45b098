/*
 * imap_mutf7.c - modified UTF-7 <-> UTF-8 for mailbox names.
 *
 * Modified UTF-7 (RFC 3501 section 5.1.3) writes printable US-ASCII as
 * itself, "&" as "&-", and everything else as UTF-16 in base64 (with ","
 * in place of "/") between "&" and "-".  We accept only the canonical form,
 * so that two different wire names can never map to one stored name.
 */
#include "protocols/imap/imap_mutf7.h"

#include <stdint.h>

static const char b64_alphabet[64] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static int is_printable_ascii(uint32_t c)
{
	return c >= 0x20 && c <= 0x7e;
}

/* Append code point CP as UTF-8; -1 if it does not fit. */
static int put_utf8(char *dst, size_t cap, size_t *n, uint32_t cp)
{
	unsigned char b[4];
	size_t k;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		k = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | (cp >> 18));
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (cap - *n < k + 1) /* keep room for the NUL */
		return -1;
	for (size_t i = 0; i < k; i++)
		dst[(*n)++] = (char)b[i];
	return 0;
}

/*
 * Decode one base64 run, S[*i] being the first octet after "&".  On return
 * *i is just past the closing "-".
 */
static int decode_run(const char *s, size_t len, size_t *i, char *dst,
		      size_t cap, size_t *n)
{
	uint32_t bits = 0, high = 0;
	unsigned nbits = 0;
	size_t start = *i, units = 0;

	for (;;) {
		if (*i >= len)
			return -1; /* "&" never closed */
		unsigned char c = (unsigned char)s[*i];
		if (c == '-')
			break;
		int v = b64_value(c);
		if (v < 0)
			return -1;
		(*i)++;
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t u = (bits >> nbits) & 0xffff;
		bits &= (1u << nbits) - 1;
		units++;
		if (high) {
			if (u < 0xdc00 || u > 0xdfff)
				return -1; /* high surrogate not followed by low */
			uint32_t cp = 0x10000 + ((high - 0xd800) << 10) +
				      (u - 0xdc00);
			high = 0;
			if (put_utf8(dst, cap, n, cp))
				return -1;
		} else if (u >= 0xd800 && u <= 0xdbff) {
			high = u;
		} else if (u >= 0xdc00 && u <= 0xdfff) {
			return -1; /* low surrogate first */
		} else {
			/* Printable ASCII must stand for itself (§5.1.3). */
			if (u == 0 || is_printable_ascii(u))
				return -1;
			if (put_utf8(dst, cap, n, u))
				return -1;
		}
	}
	/* Canonical padding: fewer than 6 bits left over, all of them zero. */
	if (*i == start || high || nbits >= 6 || bits != 0 || units == 0)
		return -1;
	(*i)++; /* the "-" */
	return 0;
}

int imap_mutf7_decode(const char *src, size_t len, char *dst, size_t dstcap,
		      size_t *dstlen)
{
	size_t i = 0, n = 0;
	int after_run = 0;

	if (dstcap == 0)
		return -1;
	while (i < len) {
		unsigned char c = (unsigned char)src[i];
		if (c != '&') {
			if (!is_printable_ascii(c) || dstcap - n < 2)
				return -1;
			dst[n++] = (char)c;
			i++;
			after_run = 0;
			continue;
		}
		if (i + 1 < len && src[i + 1] == '-') {
			if (dstcap - n < 2)
				return -1;
			dst[n++] = '&';
			i += 2;
			after_run = 0;
			continue;
		}
		/* "-&" straight after a run is a null shift: both runs should
		 * have been one (§5.1.3). */
		if (after_run)
			return -1;
		i++;
		if (decode_run(src, len, &i, dst, dstcap, &n))
			return -1;
		after_run = 1;
	}
	dst[n] = '\0';
	*dstlen = n;
	return 0;
}

/*
 * Read one UTF-8 character at S[*i]; returns the code point or -1 if the
 * sequence is malformed (RFC 3629 section 4).
 */
static int32_t next_utf8(const unsigned char *s, size_t len, size_t *i)
{
	unsigned char c = s[*i];
	uint32_t cp, min;
	size_t k;

	if (c < 0x80) {
		(*i)++;
		return c;
	} else if (c >= 0xc2 && c <= 0xdf) {
		cp = c & 0x1f;
		k = 1;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		cp = c & 0x0f;
		k = 2;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		cp = c & 0x07;
		k = 3;
		min = 0x10000;
	} else {
		return -1;
	}
	if (len - *i <= k)
		return -1;
	for (size_t j = 1; j <= k; j++) {
		unsigned char d = s[*i + j];
		if ((d & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (d & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*i += k + 1;
	return (int32_t)cp;
}

int imap_utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		int32_t cp = next_utf8(u, len, &i);
		if (cp <= 0)
			return 0;
	}
	return 1;
}

/* Flush the pending bits of a run and close it with "-". */
static int close_run(char *dst, size_t cap, size_t *n, uint32_t bits,
		     unsigned nbits)
{
	if (nbits > 0) {
		if (cap - *n < 2)
			return -1;
		dst[(*n)++] = b64_alphabet[(bits << (6 - nbits)) & 0x3f];
	}
	if (cap - *n < 2)
		return -1;
	dst[(*n)++] = '-';
	return 0;
}

int imap_mutf7_encode(const char *src, size_t len, char *dst, size_t dstcap,
		      size_t *dstlen)
{
	const unsigned char *u = (const unsigned char *)src;
	size_t i = 0, n = 0;
	uint32_t bits = 0;
	unsigned nbits = 0;
	int in_run = 0;

	if (dstcap == 0)
		return -1;
	while (i < len) {
		int32_t cp = next_utf8(u, len, &i);
		if (cp <= 0)
			return -1;
		if (is_printable_ascii((uint32_t)cp)) {
			if (in_run) {
				if (close_run(dst, dstcap, &n, bits, nbits))
					return -1;
				in_run = 0;
				bits = 0;
				nbits = 0;
			}
			if (dstcap - n < 3)
				return -1;
			dst[n++] = (char)cp;
			if (cp == '&')
				dst[n++] = '-';
			continue;
		}
		if (!in_run) {
			if (dstcap - n < 2)
				return -1;
			dst[n++] = '&';
			in_run = 1;
		}
		uint32_t units[2];
		size_t nu = 1;
		if (cp >= 0x10000) {
			uint32_t v = (uint32_t)cp - 0x10000;
			units[0] = 0xd800 | (v >> 10);
			units[1] = 0xdc00 | (v & 0x3ff);
			nu = 2;
		} else {
			units[0] = (uint32_t)cp;
		}
		for (size_t k = 0; k < nu; k++) {
			bits = (bits << 16) | units[k];
			nbits += 16;
			while (nbits >= 6) {
				nbits -= 6;
				if (dstcap - n < 2)
					return -1;
				dst[n++] = b64_alphabet[(bits >> nbits) & 0x3f];
			}
			bits &= (1u << nbits) - 1;
		}
	}
	if (in_run && close_run(dst, dstcap, &n, bits, nbits))
		return -1;
	dst[n] = '\0';
	*dstlen = n;
	return 0;
}
