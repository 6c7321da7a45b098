/*
 * fuzz_mime.c - libFuzzer target for the MIME parser and its serialised
 * form (store/mime.h).  The input is a message as it would be delivered.
 *
 * Every input is parsed; the tree is walked and checked against mime.h
 * (offsets inside the message, child counts, envelopes where promised),
 * serialised and loaded back, and the loaded tree must equal the parsed
 * one field by field.  Corrupted copies of the blob are loaded too: the
 * loader must refuse or accept them without reading out of bounds.  Part
 * bodies and header values go through the decoders (base64, quoted-
 * printable, RFC 2047 words, charsets, SEARCH's substring match).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/mime.h"

static void fail(const char *what)
{
	fprintf(stderr, "mime broke its contract: %s\n", what);
	abort();
}

static bool str_eq(struct mime_str a, struct mime_str b)
{
	if (!a.p || !b.p)
		return !a.p && !b.p;
	return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool params_eq(const struct mime_param *a, size_t na, const struct mime_param *b,
                      size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_eq(a[i].name, b[i].name) || !str_eq(a[i].value, b[i].value) ||
		    !str_eq(a[i].lang, b[i].lang) || a[i].flags != b[i].flags)
			return false;
	return true;
}

static bool env_eq(const struct mime_envelope *a, const struct mime_envelope *b)
{
	if (!a || !b)
		return !a && !b;
	if (!str_eq(a->date, b->date) || !str_eq(a->subject, b->subject) ||
	    !str_eq(a->in_reply_to, b->in_reply_to) || !str_eq(a->message_id, b->message_id))
		return false;
	for (int f = 0; f < MIME_ADDR_FIELDS; f++) {
		if (a->addr[f].n != b->addr[f].n)
			return false;
		for (size_t i = 0; i < a->addr[f].n; i++) {
			const struct mime_addr *x = &a->addr[f].v[i], *y = &b->addr[f].v[i];
			if (!str_eq(x->name, y->name) || !str_eq(x->adl, y->adl) ||
			    !str_eq(x->mailbox, y->mailbox) || !str_eq(x->host, y->host))
				return false;
		}
	}
	return true;
}

static bool part_eq(const struct mime_part *a, const struct mime_part *b)
{
	if (a->nchildren != b->nchildren || a->hdr_off != b->hdr_off ||
	    a->hdr_len != b->hdr_len || a->body_off != b->body_off ||
	    a->body_len != b->body_len || a->lines != b->lines || a->flags != b->flags ||
	    a->enc != b->enc || !str_eq(a->type, b->type) || !str_eq(a->subtype, b->subtype) ||
	    !params_eq(a->params, a->nparams, b->params, b->nparams) || !str_eq(a->id, b->id) ||
	    !str_eq(a->description, b->description) || !str_eq(a->encoding, b->encoding) ||
	    !str_eq(a->md5, b->md5) || !str_eq(a->location, b->location) ||
	    !str_eq(a->disposition, b->disposition) ||
	    !params_eq(a->disp_params, a->ndisp_params, b->disp_params, b->ndisp_params) ||
	    a->nlanguages != b->nlanguages || !env_eq(a->env, b->env))
		return false;
	for (size_t i = 0; i < a->nlanguages; i++)
		if (!str_eq(a->languages[i], b->languages[i]))
			return false;
	const struct mime_part *x = a->child, *y = b->child;
	for (; x && y; x = x->next, y = y->next)
		if (!part_eq(x, y))
			return false;
	return !x && !y;
}

static void check_str_in(struct mime_str s, const char *msg, size_t len)
{
	(void)msg;
	(void)len;
	if (s.p && s.len > 0)
		(void)*(volatile const char *)(s.p + s.len - 1); /* ASan checks it */
}

/* Walk the tree; returns the number of parts seen.  Only STRICT (a parsed
 * tree) checks the structure; a loaded damaged blob need only stay inside
 * the message and the limits. */
static size_t walk(const struct mime_part *p, const char *msg, size_t len, int depth,
                   bool strict)
{
	size_t n = 1, kids = 0;

	if (depth > MIME_MAX_DEPTH + 1)
		fail("tree deeper than MIME_MAX_DEPTH");
	if (p->hdr_off > len || p->hdr_len > len - p->hdr_off || p->body_off > len ||
	    p->body_len > len - p->body_off)
		fail("part outside the message");
	if (strict && p->body_off < p->hdr_off + p->hdr_len)
		fail("body before the end of its header");
	if (strict && (!p->type.p || !p->subtype.p))
		fail("part without a type");
	check_str_in(p->type, msg, len);
	for (size_t i = 0; i < p->nparams; i++) {
		check_str_in(p->params[i].name, msg, len);
		check_str_in(p->params[i].value, msg, len);
	}
	if (p->nparams > MIME_MAX_PARAMS)
		fail("too many parameters");
	for (const struct mime_part *c = p->child; c; c = c->next) {
		if (c->parent != p)
			fail("child with a wrong parent");
		if (strict && (c->hdr_off < p->body_off ||
		               c->body_off + c->body_len > p->body_off + p->body_len))
			fail("child outside its parent's body");
		kids++;
		n += walk(c, msg, len, depth + 1, strict);
	}
	if (kids != p->nchildren)
		fail("nchildren does not match the children");
	if (strict && p->env && kids != 1 && p->parent)
		fail("message/rfc822 part without exactly one child");
	if (p->env)
		for (int f = 0; f < MIME_ADDR_FIELDS; f++)
			if (p->env->addr[f].n > MIME_MAX_ADDRS)
				fail("too many addresses");
	return n;
}

static void decode_part(const struct mime_part *p, const char *msg)
{
	struct mime_buf b = { 0 }, u = { 0 };
	struct mime_str cs = mime_part_charset(p);

	if (mime_decode_body(&b, p->enc, msg + p->body_off, p->body_len) == 0 && cs.p)
		(void)mime_charset_to_utf8(&u, cs.p, cs.len, b.data ? b.data : "", b.len);
	if (u.data && b.data)
		(void)mime_search_match(u.data, u.len, b.data, b.len < 8 ? b.len : 8);
	free(b.data);
	free(u.data);
	(void)mime_param_get(p->params, p->nparams, "name");
	(void)mime_param_get(p->disp_params, p->ndisp_params, "filename");

	/* Header fields: unfold and decode each value. */
	const char *hdr = msg + p->hdr_off;
	size_t pos = 0, nfields = 0;
	struct mime_field f;
	while (mime_header_next(hdr, p->hdr_len, &pos, &f) == 1) {
		struct mime_buf v = { 0 }, d = { 0 };
		if (f.raw < hdr || f.raw + f.rawlen > hdr + p->hdr_len)
			fail("header field outside the header");
		if (mime_unfold(&v, f.value, f.value_len) == 0)
			(void)mime_decode_header(&d, v.data ? v.data : "", v.len);
		free(v.data);
		free(d.data);
		if (++nfields > 64)
			break;
	}
	(void)mime_header_find(hdr, p->hdr_len, "content-type", 0, &f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *msg = (const char *)data;
	mime_tree *t = mime_parse(msg, size);
	unsigned char *blob;
	size_t bloblen, nparts, ndecoded = 0;

	if (!t)
		return 0; /* out of memory only */
	const struct mime_part *root = mime_root(t);
	if (!root || root->parent || !mime_envelope(t))
		fail("no root or no top-level envelope");
	nparts = walk(root, msg, size, 0, true);
	if (nparts != mime_part_count(t))
		fail("mime_part_count does not match the tree");
	if (nparts > MIME_MAX_PARTS + 1)
		fail("more than MIME_MAX_PARTS parts");

	/* Part numbers, as FETCH BODY[1.2.3] would ask. */
	uint32_t path[4];
	for (size_t i = 0; i < 4; i++)
		path[i] = size > i ? (uint32_t)(data[i] % 4) : 1;
	for (size_t n = 0; n <= 4; n++)
		(void)mime_find_part(t, path, n);
	if (mime_find_part(t, path, 0) != root)
		fail("path of length 0 is not the root");

	for (const struct mime_part *p = root; p && ndecoded < 32; ndecoded++) {
		decode_part(p, msg);
		/* Depth first through the tree. */
		if (p->child) {
			p = p->child;
			continue;
		}
		while (p && !p->next)
			p = p->parent;
		if (p)
			p = p->next;
	}

	/* The serialised form round-trips exactly. */
	if (mime_serialize(t, &blob, &bloblen) == 0) {
		mime_tree *l = mime_load(blob, bloblen, msg, size);
		if (!l)
			fail("mime_load refused what mime_serialize wrote");
		if (mime_part_count(l) != nparts || !part_eq(root, mime_root(l)) ||
		    !env_eq(mime_envelope(t), mime_envelope(l)))
			fail("mime_load(mime_serialize(tree)) differs from tree");
		mime_free(l);
		/* Damaged blobs: refused or loaded, never a bad read. */
		for (size_t k = 0; k < 4 && bloblen > 0; k++) {
			size_t at = (size_t)(size > k ? data[size - 1 - k] : k) * 7919u % bloblen;
			unsigned char *copy = malloc(bloblen);
			if (!copy)
				abort();
			memcpy(copy, blob, bloblen);
			copy[at] ^= (unsigned char)(k == 0 ? 0x80 : (1u << k) | 1u);
			mime_tree *d = mime_load(copy, bloblen - (k == 3), msg, size);
			if (d)
				(void)walk(mime_root(d), msg, size, 0, false);
			mime_free(d);
			free(copy);
		}
		free(blob);
	}
	mime_free(t);

	/* The raw decoders on the raw input. */
	struct mime_buf b = { 0 };
	(void)mime_decode_base64(&b, msg, size);
	(void)mime_decode_qp(&b, msg, size);
	(void)mime_decode_header(&b, msg, size);
	free(b.data);
	return 0;
}
