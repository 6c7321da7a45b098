/*
 * test_mime.c - unit tests of store/mime: the decoding helpers, the parse
 * of every message in tests/unit/mime-corpus/ compared with its hand-checked
 * .expected description (format in mime-corpus/README), serialise/load
 * round trips, hostile structure limits, and a fixed-seed mutation loop
 * over the corpus that must run clean under ASan/UBSan.
 *
 * Usage: test_mime [CORPUS_DIR]   (default tests/unit/mime-corpus)
 * MIME_CORPUS_WRITE=1 writes NAME.actual beside each NAME.eml that differs.
 */
#include "check.h"
#include "store/mime.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a text description of a tree ------------------------------------- */

static void out(struct mime_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void out(struct mime_buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		mime_buf_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void quote(struct mime_buf *b, const char *s, size_t len)
{
	mime_buf_put(b, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r')
			out(b, "\\r");
		else if (c == '\n')
			out(b, "\\n");
		else if (c == '\t')
			out(b, "\\t");
		else if (c == '"' || c == '\\')
			out(b, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			out(b, "\\x%02x", c);
		else
			mime_buf_put(b, &s[i], 1);
	}
	mime_buf_put(b, "\"", 1);
}

static void str(struct mime_buf *b, struct mime_str s)
{
	if (!s.p)
		out(b, "NIL");
	else
		quote(b, s.p, s.len);
}

/* Long spans are shown by their first and last 24 octets. */
static void excerpt(struct mime_buf *b, const char *s, size_t len)
{
	if (len <= 56) {
		quote(b, s, len);
		return;
	}
	quote(b, s, 24);
	out(b, "...");
	quote(b, s + len - 24, 24);
}

static void indent(struct mime_buf *b, int depth)
{
	for (int i = 0; i < depth; i++)
		out(b, "  ");
}

static const char *const addr_names[MIME_ADDR_FIELDS] = {
	"from", "sender", "reply-to", "to", "cc", "bcc",
};

static void dump_env(struct mime_buf *b, const struct mime_envelope *e,
                     int d)
{
	indent(b, d), out(b, "envelope\n");
	indent(b, d + 1), out(b, "date "), str(b, e->date), out(b, "\n");
	indent(b, d + 1), out(b, "subject "), str(b, e->subject), out(b, "\n");
	for (int f = 0; f < MIME_ADDR_FIELDS; f++) {
		indent(b, d + 1), out(b, "%s", addr_names[f]);
		if (e->addr[f].n == 0)
			out(b, " NIL");
		for (size_t i = 0; i < e->addr[f].n; i++) {
			const struct mime_addr *a = &e->addr[f].v[i];
			out(b, " (");
			str(b, a->name), out(b, " ");
			str(b, a->adl), out(b, " ");
			str(b, a->mailbox), out(b, " ");
			str(b, a->host), out(b, ")");
		}
		out(b, "\n");
	}
	indent(b, d + 1), out(b, "in-reply-to "), str(b, e->in_reply_to), out(b, "\n");
	indent(b, d + 1), out(b, "message-id "), str(b, e->message_id), out(b, "\n");
}

static void dump_params(struct mime_buf *b, const struct mime_param *p,
                        size_t n, int d)
{
	for (size_t i = 0; i < n; i++) {
		indent(b, d);
		out(b, "param%s ", (p[i].flags & MIME_PARAM_EXT) ? "*" : "");
		str(b, p[i].name), out(b, "="), str(b, p[i].value);
		if (p[i].lang.p)
			out(b, " lang="), str(b, p[i].lang);
		out(b, "\n");
	}
}

static const struct {
	unsigned bit;
	const char *name;
} flag_names[] = {
	{ MIME_PART_DEFAULT_TYPE, "default-type" },
	{ MIME_PART_SYNTHETIC, "synthetic" },
	{ MIME_PART_TRUNCATED, "truncated" },
	{ MIME_PART_NO_CLOSE, "no-close" },
};

static bool is_type(const struct mime_part *p, const char *t)
{
	return p->type.len == strlen(t) && memcmp(p->type.p, t, p->type.len) == 0;
}

/* The part's own lines.  NUM is its IMAP part number, or "-" for a
 * multipart that is the body of a message (it is that message's TEXT). */
static void dump_part(struct mime_buf *b, const char *msg,
                      const struct mime_part *p, const char *num, int d)
{
	indent(b, d);
	out(b, "part %s ", num);
	mime_buf_put(b, p->type.p, p->type.len);
	out(b, "/");
	mime_buf_put(b, p->subtype.p, p->subtype.len);
	for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
		if (p->flags & flag_names[i].bit)
			out(b, " %s", flag_names[i].name);
	out(b, "\n");
	indent(b, d + 1), out(b, "header %zu+%zu ", p->hdr_off, p->hdr_len);
	excerpt(b, msg + p->hdr_off, p->hdr_len), out(b, "\n");
	indent(b, d + 1), out(b, "body %zu+%zu lines %zu ", p->body_off,
	                      p->body_len, p->lines);
	excerpt(b, msg + p->body_off, p->body_len), out(b, "\n");
	dump_params(b, p->params, p->nparams, d + 1);
	if (p->encoding.p)
		indent(b, d + 1), out(b, "encoding "), str(b, p->encoding), out(b, "\n");
	if (p->id.p)
		indent(b, d + 1), out(b, "id "), str(b, p->id), out(b, "\n");
	if (p->description.p)
		indent(b, d + 1), out(b, "description "), str(b, p->description), out(b, "\n");
	if (p->md5.p)
		indent(b, d + 1), out(b, "md5 "), str(b, p->md5), out(b, "\n");
	if (p->disposition.p) {
		indent(b, d + 1), out(b, "disposition "), str(b, p->disposition), out(b, "\n");
		dump_params(b, p->disp_params, p->ndisp_params, d + 2);
	}
	if (p->nlanguages) {
		indent(b, d + 1), out(b, "language");
		for (size_t i = 0; i < p->nlanguages; i++)
			out(b, " "), str(b, p->languages[i]);
		out(b, "\n");
	}
	if (p->location.p)
		indent(b, d + 1), out(b, "location "), str(b, p->location), out(b, "\n");
}

/* The part, its envelope and its children.  PREFIX is the number the
 * children's numbers extend: a message/rfc822 part's own for the parts of
 * its message. */
static void dump_walk(struct mime_buf *b, const char *msg,
                      const struct mime_part *p, const char *prefix,
                      const char *num, int d);

static void dump_children(struct mime_buf *b, const char *msg,
                          const struct mime_part *p, const char *prefix, int d)
{
	char sub[256];
	int i = 1;
	for (const struct mime_part *c = p->child; c; c = c->next, i++) {
		snprintf(sub, sizeof(sub), "%s%s%d", prefix, *prefix ? "." : "", i);
		dump_walk(b, msg, c, sub, sub, d);
	}
}

static void dump_walk(struct mime_buf *b, const char *msg,
                      const struct mime_part *p, const char *prefix,
                      const char *num, int d)
{
	dump_part(b, msg, p, num, d);
	if (p->env)
		dump_env(b, p->env, d + 1);
	if (p->env && p->child) {
		const struct mime_part *c = p->child;
		char sub[256];
		snprintf(sub, sizeof(sub), "%s%s1", prefix, *prefix ? "." : "");
		if (is_type(c, "multipart")) {
			dump_walk(b, msg, c, prefix, "-", d + 1);
		} else {
			dump_walk(b, msg, c, sub, sub, d + 1);
		}
		return;
	}
	if (is_type(p, "multipart"))
		dump_children(b, msg, p, strcmp(num, "-") ? num : prefix, d + 1);
}

static void dump_tree(struct mime_buf *b, const mime_tree *t, const char *msg)
{
	const struct mime_part *r = mime_root(t);
	dump_env(b, mime_envelope(t), 0);
	if (is_type(r, "multipart"))
		dump_walk(b, msg, r, "", "-", 0);
	else
		dump_walk(b, msg, r, "1", "1", 0);
}

/* ---- part addressing checked against the walk ------------------------- */

static size_t parse_num(const char *s, uint32_t *path, size_t max)
{
	size_t n = 0;
	char *end;
	while (*s && n < max) {
		path[n++] = (uint32_t)strtoul(s, &end, 10);
		if (end == s)
			break;
		s = *end == '.' ? end + 1 : end;
	}
	return n;
}

static void check_find(const mime_tree *t, const struct mime_part *p,
                       const char *prefix, const char *num, const char *name)
{
	uint32_t path[MIME_MAX_DEPTH + 2];
	if (strcmp(num, "-")) {
		size_t n = parse_num(num, path, MIME_MAX_DEPTH + 2);
		if (mime_find_part(t, path, n) != p) {
			fprintf(stderr, "%s: part %s not found by number\n", name, num);
			failed++;
		}
	}
	char sub[512];
	if (p->env && p->child) {
		const struct mime_part *c = p->child;
		snprintf(sub, sizeof(sub), "%s%s1", prefix, *prefix ? "." : "");
		if (is_type(c, "multipart"))
			check_find(t, c, prefix, "-", name);
		else
			check_find(t, c, sub, sub, name);
		return;
	}
	int i = 1;
	const char *pre = strcmp(num, "-") ? num : prefix;
	for (const struct mime_part *c = p->child; c; c = c->next, i++) {
		snprintf(sub, sizeof(sub), "%s%s%d", pre, *pre ? "." : "", i);
		check_find(t, c, sub, sub, name);
	}
}

/* ---- corpus ----------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct mime_buf b = { 0 };
	char tmp[4096];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		mime_buf_put(&b, tmp, n);
	fclose(f);
	mime_buf_put(&b, "", 1);
	*len = b.len - 1;
	return b.data;
}

/* What the store does at ingest: bare LF becomes CRLF. */
static char *crlf(const char *s, size_t len, size_t *outlen)
{
	struct mime_buf b = { 0 };
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			mime_buf_put(&b, "\r", 1);
		mime_buf_put(&b, &s[i], 1);
	}
	mime_buf_put(&b, "", 1);
	*outlen = b.len - 1;
	return b.data;
}

/* Serialise, load, compare descriptions; also re-serialise the loaded
 * tree and compare blobs. */
static void check_roundtrip(const mime_tree *t, const char *msg, size_t len,
                            const char *name)
{
	struct mime_buf a = { 0 }, b = { 0 };
	unsigned char *blob = NULL, *blob2 = NULL;
	size_t bl = 0, bl2 = 0;
	dump_tree(&a, t, msg);
	if (mime_serialize(t, &blob, &bl) != 0) {
		fprintf(stderr, "%s: serialize failed\n", name);
		failed++;
		goto out;
	}
	mime_tree *u = mime_load(blob, bl, msg, len);
	if (!u) {
		fprintf(stderr, "%s: load failed\n", name);
		failed++;
		goto out;
	}
	dump_tree(&b, u, msg);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
		fprintf(stderr, "%s: loaded tree differs\n", name);
		failed++;
	}
	if (mime_serialize(u, &blob2, &bl2) != 0 || bl2 != bl ||
	    memcmp(blob, blob2, bl) != 0) {
		fprintf(stderr, "%s: re-serialised blob differs\n", name);
		failed++;
	}
	CHECK(mime_part_count(u) == mime_part_count(t));
	mime_free(u);
	/* a truncated blob never loads */
	if (bl > 1) {
		mime_tree *v = mime_load(blob, bl - 1, msg, len);
		CHECK(v == NULL);
		mime_free(v);
	}
out:
	free(a.data);
	free(b.data);
	free(blob);
	free(blob2);
}

struct corpus {
	char **names;
	char **msgs;
	size_t *lens;
	size_t n;
};

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_corpus(const char *dir, struct corpus *c)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "cannot open corpus %s\n", dir);
		failed++;
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l < 5 || strcmp(de->d_name + l - 4, ".eml") != 0)
			continue;
		c->names = realloc(c->names, (c->n + 1) * sizeof(char *));
		c->names[c->n++] = strndup(de->d_name, l - 4);
	}
	closedir(d);
	if (c->n)
		qsort(c->names, c->n, sizeof(char *), cmpstr);
	c->msgs = calloc(c->n, sizeof(char *));
	c->lens = calloc(c->n, sizeof(size_t));
	bool write = getenv("MIME_CORPUS_WRITE") != NULL;

	for (size_t i = 0; i < c->n; i++) {
		char path[1024];
		size_t rawlen, explen;
		snprintf(path, sizeof(path), "%s/%s.eml", dir, c->names[i]);
		char *raw = read_file(path, &rawlen);
		if (!raw) {
			failed++;
			continue;
		}
		c->msgs[i] = crlf(raw, rawlen, &c->lens[i]);
		free(raw);
		const char *msg = c->msgs[i];
		mime_tree *t = mime_parse(msg, c->lens[i]);
		if (!t) {
			fprintf(stderr, "%s: parse failed\n", c->names[i]);
			failed++;
			continue;
		}
		struct mime_buf got = { 0 };
		dump_tree(&got, t, msg);
		snprintf(path, sizeof(path), "%s/%s.expected", dir, c->names[i]);
		char *exp = read_file(path, &explen);
		if (!exp || explen != got.len || memcmp(exp, got.data, got.len)) {
			fprintf(stderr, "%s: differs from %s.expected\n",
			        c->names[i], c->names[i]);
			failed++;
			if (write) {
				snprintf(path, sizeof(path), "%s/%s.actual", dir,
				         c->names[i]);
				FILE *f = fopen(path, "wb");
				if (f) {
					fwrite(got.data, 1, got.len, f);
					fclose(f);
				}
			}
		}
		free(exp);
		free(got.data);
		const struct mime_part *r = mime_root(t);
		check_find(t, r, is_type(r, "multipart") ? "" : "1",
		           is_type(r, "multipart") ? "-" : "1", c->names[i]);
		check_roundtrip(t, msg, c->lens[i], c->names[i]);
		mime_free(t);
	}
	printf("corpus: %zu messages\n", c->n);
	CHECK(c->n >= 40);
}

/* ---- helpers ---------------------------------------------------------- */

static bool dec_eq(int (*fn)(struct mime_buf *, const char *, size_t),
                   const char *in, const char *want)
{
	struct mime_buf b = { 0 };
	int rc = fn(&b, in, strlen(in));
	bool ok = rc == 0 && b.len == strlen(want) &&
	          (b.len == 0 || memcmp(b.data, want, b.len) == 0);
	if (!ok)
		fprintf(stderr, "decode %s: got %.*s want %s\n", in, (int)b.len,
		        b.data ? b.data : "", want);
	free(b.data);
	return ok;
}

static void test_helpers(void)
{
	/* base64: junk and line breaks skipped, padding, partial quantum */
	CHECK(dec_eq(mime_decode_base64, "aGVs\r\nbG8=", "hello"));
	CHECK(dec_eq(mime_decode_base64, "aGVsbG8", "hello"));
	CHECK(dec_eq(mime_decode_base64, "a G!V*sbA==d29y", "hellwor"));
	CHECK(dec_eq(mime_decode_base64, "", ""));
	/* quoted-printable (RFC 2045 §6.7) */
	CHECK(dec_eq(mime_decode_qp, "caf=C3=A9 =\r\nau lait  \r\nx", "caf\xC3\xA9 au lait\r\nx"));
	CHECK(dec_eq(mime_decode_qp, "a=3d=3Db =zz =", "a==b =zz "));
	CHECK(dec_eq(mime_decode_qp, "soft= \t\r\nbreak", "softbreak"));
	/* RFC 2047: adjacent words joined, space between them dropped, an
	 * unknown charset left raw, a split UTF-8 character rejoined */
	CHECK(dec_eq(mime_decode_header, "=?UTF-8?B?w6k=?= =?utf-8?Q?t=C3=A9_x?=", "\xC3\xA9t\xC3\xA9 x"));
	CHECK(dec_eq(mime_decode_header, "a =?iso-8859-1?q?caf=E9?= b", "a caf\xC3\xA9 b"));
	CHECK(dec_eq(mime_decode_header, "=?x-nope?Q?abc?= d", "=?x-nope?Q?abc?= d"));
	CHECK(dec_eq(mime_decode_header, "=?utf-8?B?4oI=?= =?utf-8?B?rA==?=", "\xE2\x82\xAC"));
	CHECK(dec_eq(mime_decode_header, "=?utf-8*en?Q?hi?=", "hi"));
	CHECK(dec_eq(mime_decode_header, "=?utf-8?Q?a b?=", "=?utf-8?Q?a b?="));
	CHECK(dec_eq(mime_decode_header, "=?utf-8?Q?a?=  plain  =?utf-8?Q?b?=", "a  plain  b"));
	CHECK(dec_eq(mime_unfold, " a\r\n b\r\n\tc \r\n", "a b\tc"));

	struct mime_buf b = { 0 };
	CHECK(mime_charset_to_utf8(&b, "ISO-8859-1", 10, "\xE9", 1) == 0);
	CHECK(b.len == 2 && memcmp(b.data, "\xC3\xA9", 2) == 0);
	b.len = 0;
	CHECK(mime_charset_to_utf8(&b, "no-such-charset", 15, "x", 1) == 1);
	CHECK(b.len == 0);
	CHECK(mime_charset_to_utf8(&b, "utf-8", 5, "ok", 2) == 0 && b.len == 2);
	free(b.data);

	/* SEARCH matching */
	CHECK(mime_search_match("Hello World", 11, "wORLD", 5));
	CHECK(!mime_search_match("Hello", 5, "hellox", 6));
	CHECK(mime_search_match("x", 1, "", 0));
	CHECK(mime_search_match("CAF\xC3\x89!", 6, "caf\xC3\xA9", 5));
	CHECK(mime_search_match("\xD0\x9F\xD0\xA0\xD0\x98", 6, "\xD0\xBF\xD1\x80", 4)); /* ПР vs пр */
	CHECK(mime_search_match("ab\xFF" "cd", 5, "\xFF" "C", 2));
	CHECK(!mime_search_match("abc", 3, "\xC3\xA9", 2));

	/* header lookup */
	const char *h = "From: a\r\nX-Test : one\r\n two\r\nx-test: 2\r\nbad line\r\n\r\nbody";
	struct mime_field f;
	CHECK(mime_header_find(h, strlen(h), "x-test", 0, &f));
	CHECK(f.value_len == 10 && memcmp(f.value, " one\r\n two", 10) == 0);
	CHECK(f.rawlen == 20);
	CHECK(mime_header_find(h, strlen(h), "X-TEST", 1, &f) && f.value_len == 2);
	CHECK(!mime_header_find(h, strlen(h), "x-test", 2, &f));
	CHECK(!mime_header_find(h, strlen(h), "body", 0, &f));
}

/* ---- hostile structure ------------------------------------------------ */

static void test_limits(void)
{
	/* 1000 nested multiparts: cut at MIME_MAX_DEPTH */
	struct mime_buf m = { 0 };
	for (int i = 0; i < 1000; i++) {
		out(&m, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
	}
	out(&m, "\r\ninner\r\n");
	mime_tree *t = mime_parse(m.data, m.len);
	CHECK(t != NULL);
	if (t) {
		const struct mime_part *p = mime_root(t);
		int depth = 0;
		while (p->child) {
			p = p->child;
			depth++;
		}
		CHECK(depth == MIME_MAX_DEPTH);
		CHECK(p->flags & MIME_PART_TRUNCATED);
		check_roundtrip(t, m.data, m.len, "deep");
		mime_free(t);
	}
	/* 1000 nested message/rfc822 */
	m.len = 0;
	for (int i = 0; i < 1000; i++)
		out(&m, "Subject: %d\r\nContent-Type: message/rfc822\r\n\r\n", i);
	t = mime_parse(m.data, m.len);
	CHECK(t != NULL);
	if (t) {
		CHECK(mime_part_count(t) == MIME_MAX_DEPTH + 1);
		check_roundtrip(t, m.data, m.len, "deep822");
		mime_free(t);
	}
	/* 30000 parts: cut at MIME_MAX_PARTS */
	m.len = 0;
	out(&m, "Content-Type: multipart/mixed; boundary=x\r\n\r\n");
	for (int i = 0; i < 30000; i++)
		out(&m, "--x\r\n\r\n%d\r\n", i);
	out(&m, "--x--\r\n");
	t = mime_parse(m.data, m.len);
	CHECK(t != NULL);
	if (t) {
		CHECK(mime_part_count(t) == MIME_MAX_PARTS);
		CHECK(mime_root(t)->flags & MIME_PART_TRUNCATED);
		check_roundtrip(t, m.data, m.len, "wide");
		mime_free(t);
	}
	/* many parameters and addresses */
	m.len = 0;
	out(&m, "To: ");
	for (int i = 0; i < 6000; i++)
		out(&m, "g%d:;,", i);
	out(&m, "\r\nContent-Type: text/plain");
	for (int i = 0; i < 1000; i++)
		out(&m, "; p*%d*=%%41", i);
	out(&m, "\r\n\r\n");
	t = mime_parse(m.data, m.len);
	CHECK(t != NULL);
	if (t) {
		CHECK(mime_envelope(t)->addr[MIME_TO].n == MIME_MAX_ADDRS);
		CHECK(mime_root(t)->nparams == 1);
		check_roundtrip(t, m.data, m.len, "wideparams");
		mime_free(t);
	}
	free(m.data);
}

/* ---- mutation loop ---------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static const char *const snippets[] = {
	"\r\n", "\r\n\r\n", "--", "\r\n--b\r\n", "\r\n--b--\r\n", ";", "\"",
	"(", ")", "=?utf-8?B?", "?=", "*0*=", "''", "%", "<", ">", "@", ":",
	",", "Content-Type: multipart/mixed; boundary=b\r\n",
	"Content-Type: message/rfc822\r\n", "\r\n ", "\\", "\n", "\r",
	"Content-Type: multipart/digest; boundary=\"b\"\r\n\r\n--b\r\n\r\n",
};

static void mutate(struct mime_buf *m)
{
	int ops = 1 + (int)(rnd() % 8);
	for (int k = 0; k < ops; k++) {
		size_t pos = m->len ? (size_t)(rnd() % (m->len + 1)) : 0;
		switch (rnd() % 5) {
		case 0: /* flip a byte */
			if (m->len)
				m->data[pos % m->len] = (char)rnd();
			break;
		case 1: { /* delete a range */
			size_t n = (size_t)(rnd() % 64);
			if (pos + n > m->len)
				n = m->len - pos;
			memmove(m->data + pos, m->data + pos + n, m->len - pos - n);
			m->len -= n;
			break;
		}
		case 2: { /* insert a snippet */
			const char *s = snippets[rnd() % (sizeof(snippets) / sizeof(snippets[0]))];
			size_t n = strlen(s);
			mime_buf_put(m, s, n); /* grow */
			memmove(m->data + pos + n, m->data + pos, m->len - n - pos);
			memcpy(m->data + pos, s, n);
			break;
		}
		case 3: /* truncate */
			m->len = pos;
			break;
		default: { /* duplicate a range */
			size_t n = (size_t)(rnd() % 256);
			if (pos + n > m->len)
				n = m->len - pos;
			char *tmp = malloc(n + 1);
			memcpy(tmp, m->data + pos, n);
			mime_buf_put(m, tmp, n);
			memmove(m->data + pos + n, m->data + pos, m->len - 2 * n - pos);
			memcpy(m->data + pos, tmp, n);
			free(tmp);
			break;
		}
		}
	}
}

static void test_mutations(const struct corpus *c, int rounds)
{
	if (c->n == 0)
		return;
	for (int r = 0; r < rounds; r++) {
		size_t i = (size_t)(rnd() % c->n);
		struct mime_buf m = { 0 };
		mime_buf_put(&m, c->msgs[i], c->lens[i]);
		mutate(&m);
		mime_buf_put(&m, "", 1);
		m.len--;
		/* parse an exact-size copy so ASan sees any overread */
		char *msg = malloc(m.len ? m.len : 1);
		memcpy(msg, m.data, m.len);
		mime_tree *t = mime_parse(msg, m.len);
		CHECK(t != NULL);
		if (!t) {
			free(msg);
			free(m.data);
			continue;
		}
		CHECK(mime_part_count(t) <= MIME_MAX_PARTS);
		check_roundtrip(t, msg, m.len, "mutant");
		const struct mime_part *r0 = mime_root(t);
		check_find(t, r0, is_type(r0, "multipart") ? "" : "1",
		           is_type(r0, "multipart") ? "-" : "1", "mutant");
		/* decoders over every leaf */
		for (const struct mime_part *p = r0; p;) {
			struct mime_buf d = { 0 };
			mime_decode_body(&d, p->enc, msg + p->body_off, p->body_len);
			mime_decode_header(&d, msg + p->hdr_off, p->hdr_len);
			mime_search_match(msg + p->body_off, p->body_len, "b\xC3\xA9", 3);
			free(d.data);
			if (p->child) {
				p = p->child;
				continue;
			}
			while (p && !p->next)
				p = p->parent;
			if (p)
				p = p->next;
		}
		/* a damaged blob loads or is refused, never crashes */
		unsigned char *blob;
		size_t bl;
		if (mime_serialize(t, &blob, &bl) == 0) {
			for (int k = 0; k < 4; k++) {
				unsigned char *dam = malloc(bl);
				memcpy(dam, blob, bl);
				int flips = 1 + (int)(rnd() % 3);
				for (int f = 0; f < flips; f++)
					dam[rnd() % bl] = (unsigned char)rnd();
				mime_tree *u = mime_load(dam, bl, msg, m.len);
				mime_free(u);
				free(dam);
			}
			free(blob);
		}
		mime_free(t);
		free(msg);
		free(m.data);
	}
	printf("mutations: %d rounds\n", rounds);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "tests/unit/mime-corpus";
	struct corpus c = { 0 };
	test_helpers();
	test_limits();
	run_corpus(dir, &c);
	test_mutations(&c, 20000);
	for (size_t i = 0; i < c.n; i++) {
		free(c.names[i]);
		free(c.msgs[i]);
	}
	free(c.names);
	free(c.msgs);
	free(c.lens);
	return check_summary();
}
