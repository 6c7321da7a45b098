/*
 * msg.c - store_msg, a message as it is received (LMTP DATA, IMAP APPEND,
 * `onebox deliver`).  Bytes are normalised to CRLF line ends as they are
 * appended, and the line count and the header size are computed on the
 * way.  Sealing a finished message parses its MIME structure once (DESIGN
 * section 3, "Metadata at ingest"), keeping it serialised: the writer only
 * copies the blob.  The store seals a large message on its prepare thread,
 * off the loop, and a small one on the loop as it is submitted (store.c,
 * "the prepare thread"); either way before the writer sees it.  A message
 * is reference counted with atomics: the loop thread and the store's
 * threads (which hold a reference while applying a request) may drop
 * theirs in any order.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "store/mime.h"
#include "store/store.h"
#include "store/store_int.h"

struct store_msg {
	atomic_uint refs;
	char *buf;              /* normalised bytes, NUL-terminated when allocated */
	size_t len, cap;
	bool pending_cr;        /* the last input byte was a CR: LF may follow */
	bool finished;
	bool sealed;            /* MIME is set (store_msg_seal) */
	bool failed;            /* out of memory: unusable */
	bool header_found;
	size_t line_len;        /* octets since the last CRLF */
	uint64_t lines;
	uint64_t header_size;
	unsigned char *mime;    /* mime_serialize() of the bytes; NULL if none */
	size_t mime_len;
};

store_msg *store_msg_new(void)
{
	store_msg *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	atomic_init(&m->refs, 1);
	return m;
}

/* Make room for NEED more octets plus the NUL we keep after the data. */
static bool msg_reserve(store_msg *m, size_t need)
{
	if (m->cap - m->len > need)
		return true;
	if (need > SIZE_MAX / 2 - m->len)
		return false;
	size_t cap = m->cap ? m->cap : 4096;
	while (cap - m->len <= need)
		cap *= 2;
	char *p = realloc(m->buf, cap);
	if (!p)
		return false;
	m->buf = p;
	m->cap = cap;
	return true;
}

/* A CRLF was just written ending at offset END: count the line and note
 * the end of the header at the first empty line (RFC 5322 section 2.1). */
static void msg_line_end(store_msg *m, size_t end)
{
	m->lines++;
	if (!m->header_found && m->line_len == 0) {
		m->header_found = true;
		m->header_size = end;
	}
	m->line_len = 0;
}

/* Write a CRLF at O and count the line it ends. */
static char *msg_crlf(store_msg *m, char *o)
{
	*o++ = '\r';
	*o++ = '\n';
	msg_line_end(m, (size_t)(o - m->buf));
	return o;
}

/* The length of the run at P (at most LEN octets) with no CR and no LF.
 * A message is mostly such runs (lines of text), and this loop is what
 * every received octet passes through: sixteen octets a step where SSE2
 * is there (every x86-64), else eight, then one at a time for the tail. */
static size_t msg_plain_run(const char *p, size_t len)
{
	size_t i = 0;
#if defined(__SSE2__)
	const __m128i cr16 = _mm_set1_epi8('\r'), lf16 = _mm_set1_epi8('\n');
	for (; i + 16 <= len; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		unsigned hit = (unsigned)_mm_movemask_epi8(
		    _mm_or_si128(_mm_cmpeq_epi8(v, cr16), _mm_cmpeq_epi8(v, lf16)));
		if (hit)
			return i + (size_t)__builtin_ctz(hit);
	}
#endif
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	const uint64_t cr = ones * '\r', lf = ones * '\n';

	for (; i + 8 <= len; i += 8) {
		uint64_t v, a, b;
		memcpy(&v, p + i, 8);
		a = v ^ cr;
		b = v ^ lf;
		/* A zero byte in A or B (the classic test: it is exact for
		 * "any zero byte", which is all that is asked here). */
		if (((a - ones) & ~a & highs) | ((b - ones) & ~b & highs))
			break;
	}
	while (i < len && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

/*
 * Bare LF and bare CR both become CRLF (RFC 5322 section 2.3 forbids bare
 * ones, and IMAP serves exactly these octets).  A CR at the end of one
 * chunk is held until the next byte tells whether it is followed by LF.
 */
void store_msg_append(store_msg *m, const char *p, size_t len)
{
	if (!m || m->finished || m->failed || len == 0)
		return;
	/* Each input byte yields at most two octets, plus a held CR's two. */
	if (len > SIZE_MAX / 2 - 2 || !msg_reserve(m, 2 * len + 2)) {
		m->failed = true;
		return;
	}
	size_t i = 0;
	char *o = m->buf + m->len;
	if (m->pending_cr) {
		m->pending_cr = false;
		o = msg_crlf(m, o);
		if (p[0] == '\n')
			i = 1;
	}
	while (i < len) {
		size_t run = msg_plain_run(p + i, len - i);
		memcpy(o, p + i, run);
		o += run;
		m->line_len += run;
		i += run;
		if (i == len)
			break;
		if (p[i] == '\r' && i + 1 == len) {
			m->pending_cr = true;   /* is an LF next?  The next chunk says */
			break;
		}
		o = msg_crlf(m, o);
		/* A CR takes the LF after it along; a lone CR or LF is one. */
		i += (p[i] == '\r' && p[i + 1] == '\n') ? 2 : 1;
	}
	m->len = (size_t)(o - m->buf);
	m->buf[m->len] = '\0';
}

/* Parse and serialise the MIME structure.  A failure (out of memory) only
 * leaves the message without a blob: readers then parse the body
 * themselves, as for bodies stored before blobs existed. */
static void msg_parse_mime(store_msg *m)
{
	if (m->len > UINT32_MAX)
		return;         /* too large to be stored at all */
	mime_tree *tree = mime_parse(store_msg_data(m), m->len);
	if (!tree)
		return;
	if (mime_serialize(tree, &m->mime, &m->mime_len) != 0) {
		m->mime = NULL;
		m->mime_len = 0;
	}
	mime_free(tree);
}

size_t store_msg_finish(store_msg *m)
{
	if (!m)
		return 0;
	if (m->finished)
		return m->len;
	m->finished = true;
	if (m->failed)
		goto out;
	if (m->pending_cr) {
		m->pending_cr = false;
		if (!msg_reserve(m, 2)) {
			m->failed = true;
			goto out;
		}
		m->buf[m->len++] = '\r';
		m->buf[m->len++] = '\n';
		m->buf[m->len] = '\0';
		msg_line_end(m, m->len);
	}
	if (m->line_len > 0)
		m->lines++;     /* a last line without its CRLF still counts */
	if (!m->header_found)
		m->header_size = m->len;
out:
	return m->len;
}

/* Parse the MIME structure of a finished message, once. */
void store_msg_seal(store_msg *m)
{
	if (!m || !m->finished || m->sealed)
		return;
	m->sealed = true;
	if (!m->failed)
		msg_parse_mime(m);
}

size_t store_msg_unsealed(const store_msg *m)
{
	return m && !m->sealed ? m->len : 0;
}

size_t store_msg_size(const store_msg *m)
{
	return m ? m->len : 0;
}

const char *store_msg_data(const store_msg *m)
{
	return m && m->buf ? m->buf : "";
}

void store_msg_ref(store_msg *m)
{
	if (m)
		atomic_fetch_add(&m->refs, 1);
}

void store_msg_unref(store_msg *m)
{
	if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
		return;
	free(m->mime);
	free(m->buf);
	free(m);
}

bool store_msg_info_get(const store_msg *m, struct store_msg_info *out)
{
	if (!m || !m->sealed || m->failed)
		return false;
	out->data = store_msg_data(m);
	out->size = m->len;
	out->lines = m->lines;
	out->header_size = m->header_size;
	out->mime = m->mime;
	out->mime_len = m->mime ? m->mime_len : 0;
	return true;
}
