/*
 * mime.c - the MIME parse tree: building it from a message (mime_parse),
 * part addressing, and the structured header fields it is made of:
 * Content-Type/-Disposition parameters with RFC 2231, address lists with
 * groups and obsolete routes, envelopes.  Everything a tree holds lives in
 * one arena freed at once.  The serialised form (mime_serialize,
 * mime_load) is at the end, beside the tree it must know; the stateless
 * decoders are in mime_decode.c.
 */
#include "store/mime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mime_tree {
	const char *msg;
	size_t msglen;
	struct mime_chunk *chunks;
	struct mime_part *root;
	struct mime_envelope env;
	size_t nparts;
	bool oom; /* an allocation failed: the whole operation fails */
};

/* ---- arena ------------------------------------------------------------ */

struct mime_chunk {
	struct mime_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

static void *mime_arena_alloc(mime_tree *t, size_t size)
{
	size = (size + 15) & ~(size_t)15;
	if (size == 0)
		size = 16;
	struct mime_chunk *c = t->chunks;
	if (!c || c->cap - c->used < size) {
		size_t cap = size > 8192 ? size : 8192;
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = t->chunks;
		t->chunks = c;
	}
	void *p = (char *)c->data + c->used;
	c->used += size;
	memset(p, 0, size);
	return p;
}

static mime_tree *mime_tree_new(const char *msg, size_t len)
{
	mime_tree *t = calloc(1, sizeof(*t));
	if (t) {
		t->msg = msg;
		t->msglen = len;
	}
	return t;
}

void mime_free(mime_tree *t)
{
	if (!t)
		return;
	struct mime_chunk *c = t->chunks;
	while (c) {
		struct mime_chunk *n = c->next;
		free(c);
		c = n;
	}
	free(t);
}

/* A string for the tree: S itself when it lies in the message (so the
 * serialised form stores an offset), else a copy in the arena. */
static struct mime_str keep(mime_tree *t, const char *s, size_t len)
{
	if (!s)
		s = "";
	struct mime_str r = { s, len };
	if (s >= t->msg && s <= t->msg + t->msglen &&
	    len <= (size_t)(t->msg + t->msglen - s))
		return r;
	char *d = mime_arena_alloc(t, len + 1);
	if (!d) {
		t->oom = true;
		r.p = "";
		r.len = 0;
		return r;
	}
	memcpy(d, s, len);
	r.p = d;
	return r;
}

static struct mime_str lower(mime_tree *t, const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && !(s[i] >= 'A' && s[i] <= 'Z'))
		i++;
	if (i == len)
		return keep(t, s, len);
	char *d = mime_arena_alloc(t, len + 1);
	if (!d) {
		t->oom = true;
		return (struct mime_str){ "", 0 };
	}
	for (i = 0; i < len; i++)
		d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	return (struct mime_str){ d, len };
}

static struct mime_str lit(const char *s)
{
	return (struct mime_str){ s, strlen(s) };
}

static bool str_is(struct mime_str s, const char *l)
{
	return s.p && s.len == strlen(l) && memcmp(s.p, l, s.len) == 0;
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

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* An unfolded, trimmed header value.  Unfolding only copies when the
 * value really was folded. */
static struct mime_str unfolded(mime_tree *t, const char *v, size_t len)
{
	while (len > 0 && is_wsp(v[0])) {
		v++;
		len--;
	}
	while (len > 0 && is_wsp(v[len - 1]))
		len--;
	if (!memchr(v, '\n', len) && !memchr(v, '\r', len))
		return keep(t, v, len);
	struct mime_buf b = { 0 };
	if (mime_unfold(&b, v, len) < 0)
		t->oom = true;
	struct mime_str r = keep(t, b.data ? b.data : "", b.len);
	free(b.data);
	return r;
}

/* ---- structured-field lexing (RFC 5322 §3.2.2, RFC 2045 §5.1) --------- */

/* Skip white space and (nested) comments.  If COMMENT is given, the text
 * of the first comment seen is stored there. */
static size_t skip_cfws(const char *s, size_t e, size_t p,
                        struct mime_str *comment)
{
	for (;;) {
		while (p < e && is_wsp(s[p]))
			p++;
		if (p >= e || s[p] != '(')
			return p;
		size_t start = ++p;
		int depth = 1;
		while (p < e && depth > 0) {
			if (s[p] == '\\' && p + 1 < e)
				p++;
			else if (s[p] == '(')
				depth++;
			else if (s[p] == ')')
				depth--;
			p++;
		}
		if (comment && !comment->p) {
			comment->p = s + start;
			comment->len = p - start - (depth == 0);
		}
	}
}

/* RFC 2045 token characters; 8-bit octets are tolerated. */
static bool is_tchar(char c)
{
	if ((unsigned char)c <= ' ' || c == 0x7f)
		return false;
	return !strchr("()<>@,;:\\\"/[]?=", c);
}

/* A quoted string starting at S[P] == '"'.  Returns the position after
 * it (an unterminated one runs to E) and its content, quoted-pairs
 * resolved. */
static size_t quoted(mime_tree *t, const char *s, size_t e, size_t p,
                     struct mime_str *out)
{
	size_t start = ++p;
	bool esc = false;
	while (p < e && s[p] != '"') {
		if (s[p] == '\\' && p + 1 < e) {
			esc = true;
			p++;
		}
		p++;
	}
	size_t end = p;
	if (p < e)
		p++;
	if (!esc) {
		*out = keep(t, s + start, end - start);
		return p;
	}
	char *d = mime_arena_alloc(t, end - start + 1);
	if (!d) {
		t->oom = true;
		*out = lit("");
		return p;
	}
	size_t n = 0;
	for (size_t i = start; i < end; i++) {
		if (s[i] == '\\' && i + 1 < end)
			i++;
		d[n++] = s[i];
	}
	*out = (struct mime_str){ d, n };
	return p;
}

/* ---- parameters and RFC 2231 ------------------------------------------ */

struct rawparam {
	struct mime_str attr, base, value;
	int section; /* -1: none */
	bool ext, used;
};

/* Split "name*3*" into base "name", section 3, extended. */
static void split_attr(struct rawparam *r)
{
	const char *a = r->attr.p;
	size_t n = r->attr.len;
	r->section = -1;
	r->ext = false;
	if (n > 1 && a[n - 1] == '*') {
		r->ext = true;
		n--;
	}
	size_t d = n;
	while (d > 0 && a[d - 1] >= '0' && a[d - 1] <= '9')
		d--;
	if (d < n && d > 1 && a[d - 1] == '*' && n - d <= 4) {
		int v = 0;
		for (size_t i = d; i < n; i++)
			v = v * 10 + (a[i] - '0');
		r->section = v;
		n = d - 1;
	}
	r->base = (struct mime_str){ a, n };
}

static bool attr_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && !strchr("*'%()<>@,;:\\\"/[]?=", c);
}

/* Join the RFC 2231 segments of the parameter named like RAW[I] into one
 * parameter (§3 continuations, §4 charset and language). */
static bool join_2231(mime_tree *t, struct rawparam *raw, size_t n,
                      size_t first, struct mime_param *outp)
{
	struct mime_param out = { 0 };
	struct mime_str base = raw[first].base;
	struct mime_buf v = { 0 };
	struct mime_str cs = { 0 }, lang = { 0 };
	bool any_ext = false, any_seg = false;

	for (int sec = 0;; sec++) {
		struct rawparam *seg = NULL;
		for (size_t j = 0; j < n && !seg; j++) {
			struct rawparam *r = &raw[j];
			if (r->base.len != base.len ||
			    memcmp(r->base.p, base.p, base.len) != 0)
				continue;
			if (r->section == sec || (sec == 0 && r->section < 0 && r->ext))
				seg = r;
		}
		if (!seg)
			break;
		any_seg = true;
		const char *s = seg->value.p;
		size_t len = seg->value.len;
		if (seg->ext) {
			any_ext = true;
			if (sec == 0) {
				/* charset'language'value; tolerate the
				 * quotes missing. */
				const char *q1 = memchr(s, '\'', len);
				const char *q2 = q1 ? memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - s)) : NULL;
				if (q2) {
					cs = (struct mime_str){ s, (size_t)(q1 - s) };
					if (q2 > q1 + 1)
						lang = keep(t, q1 + 1, (size_t)(q2 - q1 - 1));
					len -= (size_t)(q2 + 1 - s);
					s = q2 + 1;
				}
			}
			for (size_t i = 0; i < len; i++) {
				char c = s[i];
				int hi = i + 2 < len ? hexval(s[i + 1]) : -1;
				int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
				if (c == '%' && hi >= 0 && lo >= 0) {
					c = (char)(hi << 4 | lo);
					i += 2;
				}
				if (mime_buf_put(&v, &c, 1) < 0)
					t->oom = true;
			}
		} else if (mime_buf_put(&v, s, len) < 0) {
			t->oom = true;
		}
		if (sec == 0 && seg->section < 0)
			break; /* name*= stands alone */
	}
	if (!any_seg) {
		free(v.data);
		return false;
	}

	out.name = base;
	if (!any_ext) {
		out.value = keep(t, v.data ? v.data : "", v.len);
	} else if (cs.len == 0) {
		out.value = keep(t, v.data ? v.data : "", v.len);
		out.lang = lang;
		out.flags = MIME_PARAM_EXT;
	} else {
		struct mime_buf u = { 0 };
		int rc = mime_charset_to_utf8(&u, cs.p, cs.len,
		                              v.data ? v.data : "", v.len);
		if (rc == 0) {
			out.value = keep(t, u.data ? u.data : "", u.len);
			out.lang = lang;
			out.flags = MIME_PARAM_EXT;
		} else {
			/* Unknown charset: keep it encoded, as name*=. */
			u.len = 0;
			static const char hex[] = "0123456789ABCDEF";
			int e = mime_buf_put(&u, cs.p, cs.len);
			e |= mime_buf_put(&u, "'", 1);
			if (lang.p)
				e |= mime_buf_put(&u, lang.p, lang.len);
			e |= mime_buf_put(&u, "'", 1);
			for (size_t i = 0; i < v.len; i++) {
				unsigned char c = (unsigned char)v.data[i];
				char pct[3] = { '%', hex[c >> 4], hex[c & 15] };
				e |= attr_char(c) ? mime_buf_put(&u, &c, 1)
				                  : mime_buf_put(&u, pct, 3);
			}
			if (e)
				t->oom = true;
			out.value = keep(t, u.data ? u.data : "", u.len);
			char *nm = mime_arena_alloc(t, base.len + 2);
			if (nm) {
				memcpy(nm, base.p, base.len);
				nm[base.len] = '*';
				out.name = (struct mime_str){ nm, base.len + 1 };
			} else {
				t->oom = true;
			}
		}
		free(u.data);
	}
	free(v.data);
	*outp = out;
	return true;
}

/* Parse ";attr=value" parameters in S[P..E) into an arena array. */
static void parse_params(mime_tree *t, const char *s, size_t e, size_t p,
                         struct mime_param **outp, size_t *outn)
{
	size_t cap = 0;
	for (size_t i = p; i < e; i++)
		cap += s[i] == ';';
	if (cap > MIME_MAX_PARAMS)
		cap = MIME_MAX_PARAMS;
	*outp = NULL;
	*outn = 0;
	if (cap == 0)
		return;
	struct rawparam *raw = calloc(cap, sizeof(*raw));
	if (!raw) {
		t->oom = true;
		return;
	}
	size_t n = 0;
	while (p < e && n < cap) {
		p = skip_cfws(s, e, p, NULL);
		if (p >= e)
			break;
		if (s[p] == ';') {
			p++;
			continue;
		}
		size_t a = p;
		while (p < e && is_tchar(s[p]))
			p++;
		size_t alen = p - a;
		p = skip_cfws(s, e, p, NULL);
		if (alen == 0 || p >= e || s[p] != '=') {
			/* Junk: resume after the next ';' outside quotes. */
			while (p < e && s[p] != ';') {
				if (s[p] == '"') {
					struct mime_str junk;
					p = quoted(t, s, e, p, &junk);
				} else {
					p++;
				}
			}
			continue;
		}
		p = skip_cfws(s, e, p + 1, NULL);
		struct mime_str val;
		if (p < e && s[p] == '"') {
			p = quoted(t, s, e, p, &val);
		} else {
			/* Tolerant token: real boundaries use '=', '/', '?'
			 * unquoted ("----=_Part_1"). */
			size_t v = p;
			while (p < e && s[p] != ';' && !is_wsp(s[p]) &&
			       s[p] != '(' && s[p] != '"')
				p++;
			val = keep(t, s + v, p - v);
		}
		raw[n].attr = lower(t, s + a, alen);
		raw[n].value = val;
		split_attr(&raw[n]);
		n++;
	}

	struct mime_param *out = mime_arena_alloc(t, n * sizeof(*out) + 1);
	if (!out) {
		t->oom = true;
		free(raw);
		return;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (raw[i].used)
			continue;
		struct mime_str base = raw[i].base;
		bool has2231 = false;
		size_t plain = n;
		for (size_t j = i; j < n; j++) {
			if (raw[j].base.len != base.len ||
			    memcmp(raw[j].base.p, base.p, base.len) != 0)
				continue;
			raw[j].used = true;
			if (raw[j].ext || raw[j].section >= 0)
				has2231 = true;
			else if (plain == n)
				plain = j;
		}
		struct mime_param pm = { 0 };
		if (has2231 && join_2231(t, raw, n, i, &pm))
			out[m++] = pm;
		else if (plain < n)
			out[m++] = (struct mime_param){ .name = raw[plain].attr,
			                                .value = raw[plain].value };
	}
	free(raw);
	*outp = out;
	*outn = m;
}

const struct mime_param *mime_param_get(const struct mime_param *params,
                                        size_t n, const char *name)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < n; i++)
		if (params[i].name.len == l &&
		    strncasecmp(params[i].name.p, name, l) == 0)
			return &params[i];
	return NULL;
}

/* ---- address lists (RFC 5322 §3.4, obsolete forms §4.4) --------------- */

enum tok_kind { TK_END, TK_ATOM, TK_QS, TK_DLIT, TK_SPECIAL };

struct lexer {
	mime_tree *t;
	const char *s;
	size_t e, p;
	struct mime_str comment;
	/* current token */
	enum tok_kind kind;
	char c;
	struct mime_str text;  /* content (quoted string unescaped) */
	size_t start, end;     /* raw extent */
};

static bool is_special(char c)
{
	return strchr("()<>[]:;@\\,\"", c) != NULL;
}

static void lex(struct lexer *lx)
{
	lx->p = skip_cfws(lx->s, lx->e, lx->p, &lx->comment);
	lx->start = lx->p;
	if (lx->p >= lx->e) {
		lx->kind = TK_END;
		lx->end = lx->p;
		return;
	}
	char c = lx->s[lx->p];
	if (c == '"') {
		lx->kind = TK_QS;
		lx->p = quoted(lx->t, lx->s, lx->e, lx->p, &lx->text);
	} else if (c == '[') {
		size_t a = lx->p++;
		while (lx->p < lx->e && lx->s[lx->p] != ']') {
			if (lx->s[lx->p] == '\\' && lx->p + 1 < lx->e)
				lx->p++;
			lx->p++;
		}
		if (lx->p < lx->e)
			lx->p++;
		lx->kind = TK_DLIT;
		lx->text = (struct mime_str){ lx->s + a, lx->p - a };
	} else if (is_special(c)) {
		lx->kind = TK_SPECIAL;
		lx->c = c;
		lx->p++;
	} else {
		size_t a = lx->p;
		while (lx->p < lx->e && !is_wsp(lx->s[lx->p]) &&
		       !is_special(lx->s[lx->p]))
			lx->p++;
		lx->kind = TK_ATOM;
		lx->text = (struct mime_str){ lx->s + a, lx->p - a };
	}
	lx->end = lx->p;
}

static bool at(const struct lexer *lx, char c)
{
	return lx->kind == TK_SPECIAL && lx->c == c;
}

struct addrvec {
	struct mime_addr *v;
	size_t n, cap;
	bool oom;
};

static void addr_push(struct addrvec *av, struct mime_addr a)
{
	if (av->n >= MIME_MAX_ADDRS)
		return;
	if (av->n == av->cap) {
		size_t cap = av->cap ? av->cap * 2 : 8;
		struct mime_addr *v = realloc(av->v, cap * sizeof(*v));
		if (!v) {
			av->oom = true;
			return;
		}
		av->v = v;
		av->cap = cap;
	}
	av->v[av->n++] = a;
}

/* Words of a phrase or local part, collected with their raw extent so
 * that a value equal to the raw text is stored by reference. */
struct words {
	struct mime_buf b;
	size_t start, end, count;
};

static void words_add(struct lexer *lx, struct words *w, bool spaced)
{
	if (w->count == 0)
		w->start = lx->start;
	else if (spaced && mime_buf_put(&w->b, " ", 1) < 0)
		lx->t->oom = true;
	if (mime_buf_put(&w->b, lx->text.p, lx->text.len) < 0)
		lx->t->oom = true;
	w->end = lx->end;
	w->count++;
}

static struct mime_str words_str(struct lexer *lx, struct words *w)
{
	if (w->count == 0 || w->b.len == 0)
		return lit("");
	if (w->end - w->start == w->b.len &&
	    memcmp(lx->s + w->start, w->b.data, w->b.len) == 0)
		return keep(lx->t, lx->s + w->start, w->b.len);
	return keep(lx->t, w->b.data, w->b.len);
}

static void words_free(struct words *w)
{
	free(w->b.data);
	memset(w, 0, sizeof(*w));
}

/* Domain: atoms and domain literals up to a special other than '.'. */
static struct mime_str domain(struct lexer *lx)
{
	struct words w = { 0 };
	while (lx->kind == TK_ATOM || lx->kind == TK_DLIT) {
		words_add(lx, &w, false);
		lex(lx);
	}
	struct mime_str r = words_str(lx, &w);
	words_free(&w);
	return r;
}

static void skip_to_separator(struct lexer *lx)
{
	while (lx->kind != TK_END && !at(lx, ',') && !at(lx, ';'))
		lex(lx);
}

static void parse_address(struct lexer *lx, struct addrvec *av, bool in_group)
{
	struct words phrase = { 0 }, local = { 0 };
	lx->comment = (struct mime_str){ 0 };
	while (lx->kind == TK_ATOM || lx->kind == TK_QS || lx->kind == TK_DLIT) {
		words_add(lx, &phrase, true);
		/* A local part is its words unspaced ("a"."b" or a.b). */
		words_add(lx, &local, false);
		lex(lx);
	}
	struct mime_addr a = { 0 };
	if (at(lx, ':') && !in_group) {
		/* group = display-name ":" [group-list] ";" (§3.4) */
		a.mailbox = words_str(lx, &phrase);
		addr_push(av, a);
		lex(lx);
		for (;;) {
			while (at(lx, ','))
				lex(lx);
			if (lx->kind == TK_END || at(lx, ';'))
				break;
			size_t before = lx->start;
			parse_address(lx, av, true);
			if (lx->start == before && lx->kind != TK_END)
				lex(lx); /* no progress on junk */
		}
		if (at(lx, ';'))
			lex(lx);
		addr_push(av, (struct mime_addr){ 0 });
	} else if (at(lx, '<')) {
		if (phrase.count)
			a.name = words_str(lx, &phrase);
		lex(lx);
		/* obs-route: "@a,@b:" before the addr-spec (§4.4) */
		struct mime_buf adl = { 0 };
		while (at(lx, '@') || at(lx, ',')) {
			bool isat = at(lx, '@');
			lex(lx);
			if (isat) {
				struct mime_str d = domain(lx);
				if ((adl.len && mime_buf_put(&adl, ",", 1) < 0) ||
				    mime_buf_put(&adl, "@", 1) < 0 ||
				    mime_buf_put(&adl, d.p, d.len) < 0)
					lx->t->oom = true;
			}
		}
		if (adl.len) {
			a.adl = keep(lx->t, adl.data, adl.len);
			if (at(lx, ':'))
				lex(lx);
		}
		free(adl.data);
		struct words lp = { 0 };
		while (lx->kind == TK_ATOM || lx->kind == TK_QS) {
			words_add(lx, &lp, false);
			lex(lx);
		}
		a.mailbox = words_str(lx, &lp);
		words_free(&lp);
		if (at(lx, '@')) {
			lex(lx);
			a.host = domain(lx);
		} else {
			a.host = lit("");
		}
		while (lx->kind != TK_END && !at(lx, '>') && !at(lx, ',') &&
		       !at(lx, ';'))
			lex(lx);
		if (at(lx, '>'))
			lex(lx);
		addr_push(av, a);
		skip_to_separator(lx);
	} else if (at(lx, '@') && local.count) {
		/* addr-spec; an old-style "(Full Name)" comment names it */
		a.mailbox = words_str(lx, &local);
		lex(lx);
		a.host = domain(lx);
		skip_to_separator(lx);
		if (lx->comment.p) {
			struct mime_str c = lx->comment;
			a.name = unfolded(lx->t, c.p, c.len);
		}
		addr_push(av, a);
	} else if (phrase.count) {
		/* A lone word or phrase: a mailbox without a host. */
		a.mailbox = words_str(lx, &phrase);
		a.host = lit("");
		addr_push(av, a);
		skip_to_separator(lx);
	}
	words_free(&phrase);
	words_free(&local);
}

static void parse_addresses(mime_tree *t, struct mime_str v,
                            struct mime_addr_list *out)
{
	struct lexer lx = { .t = t, .s = v.p, .e = v.len };
	struct addrvec av = { 0 };
	lex(&lx);
	while (lx.kind != TK_END) {
		if (at(&lx, ',') || at(&lx, ';') || at(&lx, '>') || at(&lx, ':') ||
		    at(&lx, ')') || at(&lx, ']') || at(&lx, '\\')) {
			lex(&lx);
			continue;
		}
		size_t before = lx.start;
		parse_address(&lx, &av, false);
		if (lx.start == before && lx.kind != TK_END)
			lex(&lx);
	}
	if (av.oom)
		t->oom = true;
	out->n = 0;
	out->v = NULL;
	if (av.n) {
		out->v = mime_arena_alloc(t, av.n * sizeof(*out->v));
		if (out->v) {
			memcpy(out->v, av.v, av.n * sizeof(*out->v));
			out->n = av.n;
		} else {
			t->oom = true;
		}
	}
	free(av.v);
}

/* ---- envelope ------------------------------------------------------- */

static const struct {
	const char *name;
	int addr;      /* enum mime_addr_field, or -1 for a string */
	size_t off;    /* of the string in struct mime_envelope */
} env_fields[] = {
	{ "date", -1, offsetof(struct mime_envelope, date) },
	{ "subject", -1, offsetof(struct mime_envelope, subject) },
	{ "in-reply-to", -1, offsetof(struct mime_envelope, in_reply_to) },
	{ "message-id", -1, offsetof(struct mime_envelope, message_id) },
	{ "from", MIME_FROM, 0 },
	{ "sender", MIME_SENDER, 0 },
	{ "reply-to", MIME_REPLY_TO, 0 },
	{ "to", MIME_TO, 0 },
	{ "cc", MIME_CC, 0 },
	{ "bcc", MIME_BCC, 0 },
};
#define N_ENV_FIELDS (sizeof(env_fields) / sizeof(env_fields[0]))

static bool name_eq(const struct mime_field *f, const char *name)
{
	size_t l = strlen(name);
	return f->name_len == l && strncasecmp(f->name, name, l) == 0;
}

/* The first occurrence of each field counts (RFC 5322 §3.6 allows only
 * one; duplicates are a sender's error, and the first is what most
 * servers show). */
static void parse_envelope(mime_tree *t, const char *hdr, size_t len,
                           struct mime_envelope *env)
{
	bool seen[N_ENV_FIELDS] = { false };
	struct mime_field f;
	size_t pos = 0;
	while (mime_header_next(hdr, len, &pos, &f)) {
		for (size_t i = 0; i < N_ENV_FIELDS; i++) {
			if (seen[i] || !name_eq(&f, env_fields[i].name))
				continue;
			seen[i] = true;
			struct mime_str v = unfolded(t, f.value, f.value_len);
			if (env_fields[i].addr < 0)
				*(struct mime_str *)((char *)env + env_fields[i].off) = v;
			else
				parse_addresses(t, v, &env->addr[env_fields[i].addr]);
			break;
		}
	}
}

/* ---- MIME header fields of a part ------------------------------------- */

static const struct {
	const char *name;
	enum mime_enc enc;
} encodings[] = {
	{ "7bit", MIME_ENC_7BIT },     { "8bit", MIME_ENC_8BIT },
	{ "binary", MIME_ENC_BINARY }, { "quoted-printable", MIME_ENC_QP },
	{ "base64", MIME_ENC_BASE64 },
};

enum { F_TYPE, F_CTE, F_ID, F_DESC, F_MD5, F_DISP, F_LANG, F_LOC, F_N };
static const char *const mime_field_names[F_N] = {
	"content-type", "content-transfer-encoding", "content-id",
	"content-description", "content-md5", "content-disposition",
	"content-language", "content-location",
};

/* Parse "type/subtype; params".  Returns false if it is not valid. */
static bool parse_content_type(mime_tree *t, struct mime_part *pt,
                               struct mime_str v)
{
	const char *s = v.p;
	size_t e = v.len, p = skip_cfws(s, e, 0, NULL), a = p;
	while (p < e && is_tchar(s[p]))
		p++;
	size_t alen = p - a;
	p = skip_cfws(s, e, p, NULL);
	if (alen == 0 || p >= e || s[p] != '/')
		return false;
	p = skip_cfws(s, e, p + 1, NULL);
	size_t b = p;
	while (p < e && is_tchar(s[p]))
		p++;
	if (p == b)
		return false;
	pt->type = lower(t, s + a, alen);
	pt->subtype = lower(t, s + b, p - b);
	parse_params(t, s, e, p, &pt->params, &pt->nparams);
	return true;
}

static void set_default_type(struct mime_part *pt, bool digest)
{
	static struct mime_param ascii = { { "charset", 7 }, { "us-ascii", 8 },
	                                   { NULL, 0 }, 0 };
	pt->flags |= MIME_PART_DEFAULT_TYPE;
	pt->params = NULL;
	pt->nparams = 0;
	if (digest) {
		/* RFC 2046 §5.1.5 */
		pt->type = lit("message");
		pt->subtype = lit("rfc822");
		return;
	}
	/* RFC 2045 §5.2 */
	pt->type = lit("text");
	pt->subtype = lit("plain");
	pt->params = &ascii;
	pt->nparams = 1;
}

static void parse_part_fields(mime_tree *t, struct mime_part *pt, bool digest)
{
	struct mime_str fv[F_N] = { { 0 } };
	struct mime_field f;
	size_t pos = 0;
	const char *hdr = t->msg + pt->hdr_off;
	while (mime_header_next(hdr, pt->hdr_len, &pos, &f)) {
		if (f.name_len < 8 || strncasecmp(f.name, "content-", 8) != 0)
			continue;
		for (int i = 0; i < F_N; i++)
			if (!fv[i].p && name_eq(&f, mime_field_names[i]))
				fv[i] = unfolded(t, f.value, f.value_len);
	}

	if (!fv[F_TYPE].p || !parse_content_type(t, pt, fv[F_TYPE]))
		set_default_type(pt, digest);
	const struct mime_param *bd = mime_param_get(pt->params, pt->nparams,
	                                             "boundary");
	if (str_is(pt->type, "multipart") && (!bd || bd->value.len == 0)) {
		/* A multipart without a boundary cannot be split: it is an
		 * invalid Content-Type, so the default applies (§5.2). */
		set_default_type(pt, false);
	}

	pt->enc = MIME_ENC_7BIT;
	if (fv[F_CTE].p) {
		struct mime_str v = fv[F_CTE];
		size_t p = skip_cfws(v.p, v.len, 0, NULL), a = p;
		while (p < v.len && is_tchar(v.p[p]))
			p++;
		if (p > a) {
			pt->encoding = lower(t, v.p + a, p - a);
			pt->enc = MIME_ENC_OTHER;
			for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++)
				if (str_is(pt->encoding, encodings[i].name))
					pt->enc = encodings[i].enc;
		}
	}
	pt->id = fv[F_ID];
	pt->description = fv[F_DESC];
	pt->md5 = fv[F_MD5];
	if (fv[F_LOC].p) {
		/* RFC 2557 §4.4.1: a URI has no white space; folding
		 * white space inside it is removed.  Quotes are tolerated. */
		struct mime_str v = fv[F_LOC];
		if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
			v.p++;
			v.len -= 2;
		}
		if (memchr(v.p, ' ', v.len) || memchr(v.p, '\t', v.len)) {
			char *d = mime_arena_alloc(t, v.len + 1);
			size_t n = 0;
			for (size_t i = 0; d && i < v.len; i++)
				if (!is_wsp(v.p[i]))
					d[n++] = v.p[i];
			if (!d)
				t->oom = true;
			v = (struct mime_str){ d ? d : "", n };
		}
		pt->location = v;
	}

	if (fv[F_DISP].p) {
		struct mime_str v = fv[F_DISP];
		size_t p = skip_cfws(v.p, v.len, 0, NULL), a = p;
		while (p < v.len && is_tchar(v.p[p]))
			p++;
		if (p > a) {
			pt->disposition = lower(t, v.p + a, p - a);
			parse_params(t, v.p, v.len, p, &pt->disp_params,
			             &pt->ndisp_params);
		}
	}

	if (fv[F_LANG].p) {
		/* RFC 3282: Language-Tag *("," Language-Tag), with CFWS */
		struct mime_str v = fv[F_LANG];
		size_t cap = 1;
		for (size_t i = 0; i < v.len; i++)
			cap += v.p[i] == ',';
		if (cap > MIME_MAX_PARAMS)
			cap = MIME_MAX_PARAMS;
		pt->languages = mime_arena_alloc(t, cap * sizeof(struct mime_str));
		if (!pt->languages)
			t->oom = true;
		size_t p = 0;
		while (pt->languages && p < v.len && pt->nlanguages < cap) {
			p = skip_cfws(v.p, v.len, p, NULL);
			size_t a = p;
			while (p < v.len && v.p[p] != ',' && !is_wsp(v.p[p]) &&
			       v.p[p] != '(')
				p++;
			if (p > a)
				pt->languages[pt->nlanguages++] = keep(t, v.p + a, p - a);
			p = skip_cfws(v.p, v.len, p, NULL);
			if (p < v.len && v.p[p] == ',')
				p++;
			else if (p < v.len && p == a)
				p++;
		}
	}
}

/* ---- the part tree ---------------------------------------------------- */

static size_t count_lines(const char *s, size_t len)
{
	size_t n = 0;
	const char *p = s, *e = s + len;
	while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
		n++;
		p++;
	}
	if (len > 0 && s[len - 1] != '\n')
		n++;
	return n;
}

/* Split a part's octets [START, END) into header and body. */
static void split_header(mime_tree *t, struct mime_part *pt, size_t start,
                         size_t end)
{
	const char *h = t->msg + start;
	size_t len = end - start, pos = 0;
	struct mime_field f;
	while (mime_header_next(h, len, &pos, &f))
		;
	if (pos < len) {
		/* the blank line belongs to the header (RFC 3501 §6.4.5) */
		const char *nl = memchr(h + pos, '\n', len - pos);
		pos = nl ? (size_t)(nl - h) + 1 : len;
	}
	pt->hdr_off = start;
	pt->hdr_len = pos;
	pt->body_off = start + pos;
	pt->body_len = len - pos;
}

static struct mime_part *new_part(mime_tree *t, struct mime_part *parent)
{
	struct mime_part *p = mime_arena_alloc(t, sizeof(*p));
	if (!p) {
		t->oom = true;
		return NULL;
	}
	p->parent = parent;
	t->nparts++;
	return p;
}

static void add_child(struct mime_part *parent, struct mime_part *c,
                      struct mime_part **last)
{
	if (*last)
		(*last)->next = c;
	else
		parent->child = c;
	*last = c;
	parent->nchildren++;
}

static void make_opaque(struct mime_part *pt)
{
	pt->type = lit("application");
	pt->subtype = lit("octet-stream");
	pt->flags |= MIME_PART_TRUNCATED;
	pt->child = NULL;
	pt->nchildren = 0;
	pt->env = NULL;
}

/* Is the line at S[P..E) a delimiter for boundary B?  RFC 2046 §5.1.1:
 * "--" boundary, then "--" for the close-delimiter, then transport padding
 * (white space) before the line end.  Sets *CLOSE and *NEXT (the start of
 * the line after). */
static bool delimiter_at(const char *s, size_t p, size_t e,
                         struct mime_str b, bool *close, size_t *next)
{
	if (e - p < 2 + b.len || s[p] != '-' || s[p + 1] != '-' ||
	    memcmp(s + p + 2, b.p, b.len) != 0)
		return false;
	size_t q = p + 2 + b.len;
	*close = false;
	if (e - q >= 2 && s[q] == '-' && s[q + 1] == '-') {
		*close = true;
		q += 2;
	}
	while (q < e && (s[q] == ' ' || s[q] == '\t' || s[q] == '\r'))
		q++;
	if (q < e && s[q] != '\n')
		return false;
	*next = q < e ? q + 1 : e;
	return true;
}

static void parse_part(mime_tree *t, struct mime_part *pt, size_t start,
                       size_t end, int depth, bool digest);

static void parse_multipart(mime_tree *t, struct mime_part *pt, int depth)
{
	const struct mime_param *bp = mime_param_get(pt->params, pt->nparams,
	                                             "boundary");
	struct mime_str b = bp->value;
	const char *s = t->msg;
	size_t e = pt->body_off + pt->body_len;
	size_t p = pt->body_off;
	size_t part_start = 0;
	bool in_part = false, closed = false, cut = false;
	bool sub_digest = str_is(pt->subtype, "digest");
	struct mime_part *last = NULL;

	while (p < e && !closed) {
		bool close;
		size_t next;
		const char *nl = memchr(s + p, '\n', e - p);
		size_t le = nl ? (size_t)(nl - s) + 1 : e;
		if (s[p] == '-' && delimiter_at(s, p, le, b, &close, &next)) {
			if (in_part) {
				/* The CRLF before the delimiter is part of it. */
				size_t pe = p;
				if (pe > part_start && s[pe - 1] == '\n')
					pe--;
				if (pe > part_start && s[pe - 1] == '\r')
					pe--;
				if (t->nparts >= MIME_MAX_PARTS) {
					cut = true;
					break;
				}
				struct mime_part *c = new_part(t, pt);
				if (!c)
					return;
				add_child(pt, c, &last);
				parse_part(t, c, part_start, pe, depth + 1, sub_digest);
			}
			in_part = !close;
			closed = close;
			part_start = next;
			p = next;
			continue;
		}
		p = le;
	}
	if (in_part && !cut) {
		/* No close-delimiter: the last part ends with the enclosing
		 * data (RFC 2046 §5.1.1). */
		pt->flags |= MIME_PART_NO_CLOSE;
		if (t->nparts >= MIME_MAX_PARTS) {
			cut = true;
		} else {
			struct mime_part *c = new_part(t, pt);
			if (!c)
				return;
			add_child(pt, c, &last);
			parse_part(t, c, part_start, e, depth + 1, sub_digest);
		}
	}
	if (cut)
		pt->flags |= MIME_PART_TRUNCATED;
	if (pt->nchildren > 0)
		return;
	if (cut || t->nparts >= MIME_MAX_PARTS) {
		make_opaque(pt);
		return;
	}
	/* No delimiter at all: one empty text/plain part, as Dovecot does,
	 * since a multipart must have a part (RFC 3501 body-type-mpart). */
	struct mime_part *c = new_part(t, pt);
	if (!c)
		return;
	add_child(pt, c, &last);
	c->hdr_off = c->body_off = e;
	c->enc = MIME_ENC_7BIT;
	set_default_type(c, false);
	c->flags |= MIME_PART_SYNTHETIC;
}

static void parse_part(mime_tree *t, struct mime_part *pt, size_t start,
                       size_t end, int depth, bool digest)
{
	split_header(t, pt, start, end);
	parse_part_fields(t, pt, digest);
	pt->lines = count_lines(t->msg + pt->body_off, pt->body_len);
	if (t->oom)
		return;

	bool multi = str_is(pt->type, "multipart");
	bool rfc822 = str_is(pt->type, "message") && str_is(pt->subtype, "rfc822");
	if (rfc822 && pt->enc != MIME_ENC_7BIT && pt->enc != MIME_ENC_8BIT &&
	    pt->enc != MIME_ENC_BINARY) {
		/* RFC 2046 §5.2.1 forbids encoding message/rfc822; we do
		 * not decode it to find a structure inside. */
		make_opaque(pt);
		pt->flags &= ~(unsigned)MIME_PART_TRUNCATED;
		return;
	}
	if (!multi && !rfc822)
		return;
	if (depth + 1 > MIME_MAX_DEPTH ||
	    (rfc822 && t->nparts >= MIME_MAX_PARTS)) {
		make_opaque(pt);
		return;
	}
	if (multi) {
		parse_multipart(t, pt, depth);
		return;
	}
	struct mime_part *c = new_part(t, pt);
	pt->env = mime_arena_alloc(t, sizeof(*pt->env));
	if (!c || !pt->env) {
		t->oom = true;
		return;
	}
	pt->child = c;
	pt->nchildren = 1;
	parse_part(t, c, pt->body_off, pt->body_off + pt->body_len, depth + 1,
	           false);
	parse_envelope(t, t->msg + c->hdr_off, c->hdr_len, pt->env);
}

mime_tree *mime_parse(const char *msg, size_t len)
{
	mime_tree *t = mime_tree_new(msg, len);
	if (!t)
		return NULL;
	t->root = new_part(t, NULL);
	if (t->root) {
		parse_part(t, t->root, 0, len, 0, false);
		parse_envelope(t, msg, t->root->hdr_len, &t->env);
	}
	if (t->oom) {
		mime_free(t);
		return NULL;
	}
	return t;
}

const struct mime_part *mime_root(const mime_tree *t)
{
	return t->root;
}

const struct mime_envelope *mime_envelope(const mime_tree *t)
{
	return &t->env;
}

size_t mime_part_count(const mime_tree *t)
{
	return t->nparts;
}

static const struct mime_part *nth_child(const struct mime_part *p,
                                         uint32_t n)
{
	if (n == 0 || n > p->nchildren)
		return NULL;
	const struct mime_part *c = p->child;
	while (--n)
		c = c->next;
	return c;
}

/* RFC 3501 §6.4.5: part numbers of a message index the parts of its body
 * if that is multipart, else 1 is the body itself. */
static const struct mime_part *in_message(const struct mime_part *body,
                                          uint32_t n)
{
	if (str_is(body->type, "multipart"))
		return nth_child(body, n);
	return n == 1 ? body : NULL;
}

const struct mime_part *mime_find_part(const mime_tree *t,
                                       const uint32_t *path, size_t n)
{
	const struct mime_part *p = t->root;
	if (n == 0)
		return p;
	p = in_message(p, path[0]);
	for (size_t i = 1; p && i < n; i++) {
		if (str_is(p->type, "multipart"))
			p = nth_child(p, path[i]);
		else if (p->env && p->child)
			p = in_message(p->child, path[i]);
		else
			p = NULL;
	}
	return p;
}

struct mime_str mime_part_charset(const struct mime_part *pt)
{
	const struct mime_param *c = mime_param_get(pt->params, pt->nparams,
	                                            "charset");
	if (c)
		return c->value;
	if (str_is(pt->type, "text"))
		return lit("us-ascii");
	return (struct mime_str){ 0 };
}

/* ---- serialised form ---------------------------------------------------
 *
 * blob     = version(1 octet, MIME_BLOB_VERSION) varint(nparts) envelope part
 * part     = varint(flags enc hdr_off hdr_len body_off body_len lines)
 *            str(type) str(subtype) params
 *            str(id description encoding md5 location disposition)
 *            params(disposition) varint(nlang) *str
 *            varint(has_env) [envelope] varint(nchildren) *part
 * params   = varint(n) *(str(name) str(value) str(lang) varint(flags))
 * envelope = str(date subject in_reply_to message_id) 6 * (varint(n) *addr)
 * addr     = str(name) str(adl) str(mailbox) str(host)
 * str      = varint(0)                      ; absent
 *          / varint(1) varint(off) varint(len)  ; octets of the message
 *          / varint(2) varint(len) octets   ; a copy
 * varint   = unsigned LEB128, at most 10 octets
 */
#define MIME_BLOB_VERSION 1

struct writer {
	struct mime_buf b;
	const mime_tree *t;
	bool err;
};

static void put_varint(struct writer *w, uint64_t v)
{
	unsigned char o[10];
	size_t n = 0;
	do {
		o[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		if (v)
			o[n] |= 0x80;
		n++;
	} while (v);
	if (mime_buf_put(&w->b, o, n) < 0)
		w->err = true;
}

static void put_str(struct writer *w, struct mime_str s)
{
	const char *m = w->t->msg;
	if (!s.p) {
		put_varint(w, 0);
	} else if (m && s.p >= m && s.p <= m + w->t->msglen &&
	           s.len <= (size_t)(m + w->t->msglen - s.p)) {
		put_varint(w, 1);
		put_varint(w, (uint64_t)(s.p - m));
		put_varint(w, s.len);
	} else {
		put_varint(w, 2);
		put_varint(w, s.len);
		if (mime_buf_put(&w->b, s.p, s.len) < 0)
			w->err = true;
	}
}

static void put_params(struct writer *w, const struct mime_param *p, size_t n)
{
	put_varint(w, n);
	for (size_t i = 0; i < n; i++) {
		put_str(w, p[i].name);
		put_str(w, p[i].value);
		put_str(w, p[i].lang);
		put_varint(w, p[i].flags);
	}
}

static void put_env(struct writer *w, const struct mime_envelope *e)
{
	put_str(w, e->date);
	put_str(w, e->subject);
	put_str(w, e->in_reply_to);
	put_str(w, e->message_id);
	for (int f = 0; f < MIME_ADDR_FIELDS; f++) {
		put_varint(w, e->addr[f].n);
		for (size_t i = 0; i < e->addr[f].n; i++) {
			const struct mime_addr *a = &e->addr[f].v[i];
			put_str(w, a->name);
			put_str(w, a->adl);
			put_str(w, a->mailbox);
			put_str(w, a->host);
		}
	}
}

static void put_part(struct writer *w, const struct mime_part *p)
{
	put_varint(w, p->flags);
	put_varint(w, p->enc);
	put_varint(w, p->hdr_off);
	put_varint(w, p->hdr_len);
	put_varint(w, p->body_off);
	put_varint(w, p->body_len);
	put_varint(w, p->lines);
	put_str(w, p->type);
	put_str(w, p->subtype);
	put_params(w, p->params, p->nparams);
	put_str(w, p->id);
	put_str(w, p->description);
	put_str(w, p->encoding);
	put_str(w, p->md5);
	put_str(w, p->location);
	put_str(w, p->disposition);
	put_params(w, p->disp_params, p->ndisp_params);
	put_varint(w, p->nlanguages);
	for (size_t i = 0; i < p->nlanguages; i++)
		put_str(w, p->languages[i]);
	put_varint(w, p->env != NULL);
	if (p->env)
		put_env(w, p->env);
	put_varint(w, p->nchildren);
	for (const struct mime_part *c = p->child; c; c = c->next)
		put_part(w, c);
}

int mime_serialize(const mime_tree *t, unsigned char **out, size_t *outlen)
{
	struct writer w = { .t = t };
	unsigned char v = MIME_BLOB_VERSION;
	if (mime_buf_put(&w.b, &v, 1) < 0)
		w.err = true;
	put_varint(&w, t->nparts);
	put_env(&w, &t->env);
	put_part(&w, t->root);
	if (w.err) {
		free(w.b.data);
		return -1;
	}
	*out = (unsigned char *)w.b.data;
	*outlen = w.b.len;
	return 0;
}

struct reader {
	const unsigned char *p, *e;
	mime_tree *t;
	size_t parts;
	bool bad;
};

static uint64_t get_varint(struct reader *r)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->e) {
			r->bad = true;
			return 0;
		}
		unsigned char c = *r->p++;
		if (shift == 63 && c > 1) {
			r->bad = true;
			return 0;
		}
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
	}
	r->bad = true;
	return 0;
}

/* A count of items that each take at least MIN octets: bounded by LIMIT
 * and by what is left of the blob. */
static size_t get_count(struct reader *r, size_t limit, size_t min)
{
	uint64_t n = get_varint(r);
	if (n > limit || n > (uint64_t)(r->e - r->p) / min) {
		r->bad = true;
		return 0;
	}
	return (size_t)n;
}

static struct mime_str get_str(struct reader *r)
{
	struct mime_str s = { 0 };
	uint64_t tag = get_varint(r);
	if (tag == 0)
		return s;
	if (tag == 1) {
		uint64_t off = get_varint(r), len = get_varint(r);
		if (off > r->t->msglen || len > r->t->msglen - off) {
			r->bad = true;
			return s;
		}
		s.p = r->t->msg + off;
		s.len = (size_t)len;
	} else if (tag == 2) {
		uint64_t len = get_varint(r);
		if (len > (uint64_t)(r->e - r->p)) {
			r->bad = true;
			return s;
		}
		char *d = mime_arena_alloc(r->t, (size_t)len + 1);
		if (!d) {
			r->bad = true;
			return s;
		}
		memcpy(d, r->p, (size_t)len);
		r->p += len;
		s.p = d;
		s.len = (size_t)len;
	} else {
		r->bad = true;
	}
	return s;
}

static void get_params(struct reader *r, struct mime_param **pp, size_t *np)
{
	size_t n = get_count(r, MIME_MAX_PARAMS, 4);
	*pp = NULL;
	*np = 0;
	if (r->bad || n == 0)
		return;
	struct mime_param *p = mime_arena_alloc(r->t, n * sizeof(*p));
	if (!p) {
		r->bad = true;
		return;
	}
	for (size_t i = 0; i < n && !r->bad; i++) {
		p[i].name = get_str(r);
		p[i].value = get_str(r);
		p[i].lang = get_str(r);
		p[i].flags = (unsigned)get_varint(r);
		if (!p[i].name.p || !p[i].value.p || p[i].flags > MIME_PARAM_EXT)
			r->bad = true;
	}
	*pp = p;
	*np = n;
}

static void get_env(struct reader *r, struct mime_envelope *e)
{
	e->date = get_str(r);
	e->subject = get_str(r);
	e->in_reply_to = get_str(r);
	e->message_id = get_str(r);
	for (int f = 0; f < MIME_ADDR_FIELDS && !r->bad; f++) {
		size_t n = get_count(r, MIME_MAX_ADDRS, 4);
		if (r->bad || n == 0)
			continue;
		struct mime_addr *a = mime_arena_alloc(r->t, n * sizeof(*a));
		if (!a) {
			r->bad = true;
			return;
		}
		for (size_t i = 0; i < n && !r->bad; i++) {
			a[i].name = get_str(r);
			a[i].adl = get_str(r);
			a[i].mailbox = get_str(r);
			a[i].host = get_str(r);
		}
		e->addr[f].v = a;
		e->addr[f].n = n;
	}
}

static bool span_ok(const mime_tree *t, uint64_t off, uint64_t len)
{
	return off <= t->msglen && len <= t->msglen - off;
}

static struct mime_part *get_part(struct reader *r, struct mime_part *parent,
                                  int depth)
{
	if (depth > MIME_MAX_DEPTH || ++r->parts > MIME_MAX_PARTS) {
		r->bad = true;
		return NULL;
	}
	struct mime_part *p = mime_arena_alloc(r->t, sizeof(*p));
	if (!p) {
		r->bad = true;
		return NULL;
	}
	p->parent = parent;
	uint64_t v[7];
	for (int i = 0; i < 7; i++)
		v[i] = get_varint(r);
	if (r->bad || v[0] > 15 || v[1] > MIME_ENC_OTHER ||
	    !span_ok(r->t, v[2], v[3]) || !span_ok(r->t, v[4], v[5]) ||
	    v[6] > v[5]) {
		r->bad = true;
		return NULL;
	}
	p->flags = (unsigned)v[0];
	p->enc = (enum mime_enc)v[1];
	p->hdr_off = (size_t)v[2];
	p->hdr_len = (size_t)v[3];
	p->body_off = (size_t)v[4];
	p->body_len = (size_t)v[5];
	p->lines = (size_t)v[6];
	p->type = get_str(r);
	p->subtype = get_str(r);
	get_params(r, &p->params, &p->nparams);
	p->id = get_str(r);
	p->description = get_str(r);
	p->encoding = get_str(r);
	p->md5 = get_str(r);
	p->location = get_str(r);
	p->disposition = get_str(r);
	get_params(r, &p->disp_params, &p->ndisp_params);
	size_t nl = get_count(r, MIME_MAX_PARAMS, 1);
	if (!r->bad && nl) {
		p->languages = mime_arena_alloc(r->t, nl * sizeof(struct mime_str));
		if (!p->languages)
			r->bad = true;
		for (size_t i = 0; i < nl && !r->bad; i++)
			p->languages[i] = get_str(r);
		p->nlanguages = nl;
	}
	uint64_t has_env = get_varint(r);
	if (has_env > 1 || !p->type.p || !p->subtype.p)
		r->bad = true;
	if (r->bad)
		return NULL;
	if (has_env) {
		p->env = mime_arena_alloc(r->t, sizeof(*p->env));
		if (!p->env) {
			r->bad = true;
			return NULL;
		}
		get_env(r, p->env);
	}
	size_t nc = get_count(r, MIME_MAX_PARTS, 16);
	/* The shape the front-ends rely on: a multipart has parts, a
	 * message/rfc822 with an envelope has one, nothing else has any. */
	bool multi = str_is(p->type, "multipart");
	if (r->bad || (multi && nc == 0) || (p->env && nc != 1) ||
	    (!multi && !p->env && nc != 0) || (multi && p->env)) {
		r->bad = true;
		return NULL;
	}
	struct mime_part *last = NULL;
	for (size_t i = 0; i < nc; i++) {
		struct mime_part *c = get_part(r, p, depth + 1);
		if (!c)
			return NULL;
		add_child(p, c, &last);
	}
	return p;
}

mime_tree *mime_load(const unsigned char *blob, size_t bloblen,
                     const char *msg, size_t msglen)
{
	if (bloblen < 1 || blob[0] != MIME_BLOB_VERSION)
		return NULL;
	mime_tree *t = mime_tree_new(msg, msglen);
	if (!t)
		return NULL;
	struct reader r = { .p = blob + 1, .e = blob + bloblen, .t = t };
	uint64_t nparts = get_varint(&r);
	if (!r.bad)
		get_env(&r, &t->env);
	if (!r.bad)
		t->root = get_part(&r, NULL, 0);
	if (r.bad || !t->root || r.p != r.e || nparts != r.parts) {
		mime_free(t);
		return NULL;
	}
	t->nparts = r.parts;
	return t;
}
