/*
 * imap_parser.c - IMAP command assembly and argument parsing.
 *
 * The assembler turns lines and literal bytes into one command buffer and
 * enforces the size limits; the parser walks that buffer with a cursor.
 * Every scan is bounded by the buffer length, and text scans also stop at
 * the end of the current line part, so a quoted string can never run into
 * the data of a literal that follows it.  See imap_parser.h for contracts.
 */
#include "protocols/imap/imap_parser.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/imap/imap_mutf7.h"

/* ------------------------------------------------------------------ */
/* Character classes (RFC 3501 section 9)                               */
/* ------------------------------------------------------------------ */

static bool is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false; /* CTL, SP, 8-bit */
	switch (c) {
	case '(': case ')': case '{': case '%': case '*':
	case '"': case '\\': case ']':
		return false;
	default:
		return true;
	}
}

static bool is_astring_char(unsigned char c)
{
	return is_atom_char(c) || c == ']';
}

static bool is_list_char(unsigned char c)
{
	return is_astring_char(c) || c == '%' || c == '*';
}

static bool is_tag_char(unsigned char c)
{
	return is_astring_char(c) && c != '+';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* ------------------------------------------------------------------ */
/* Arena                                                                */
/* ------------------------------------------------------------------ */

struct imap_arena_chunk {
	struct imap_arena_chunk *next;
	size_t used, size;
	max_align_t data[];
};

#define ARENA_CHUNK 4096

static void arena_reset(struct imap_arena *ar)
{
	struct imap_arena_chunk *c = ar->head, *next;

	/* Keep one ordinary chunk for the next command; free the rest. */
	while (c) {
		next = c->next;
		if (next == NULL && c->size == ARENA_CHUNK) {
			c->used = 0;
			ar->head = c;
			ar->total = 0;
			return;
		}
		free(c);
		c = next;
	}
	ar->head = NULL;
	ar->total = 0;
}

static void arena_free(struct imap_arena *ar)
{
	struct imap_arena_chunk *c = ar->head, *next;

	while (c) {
		next = c->next;
		free(c);
		c = next;
	}
	ar->head = NULL;
	ar->total = 0;
}

static void *arena_alloc(struct imap_arena *ar, size_t n)
{
	const size_t align = sizeof(max_align_t);
	struct imap_arena_chunk *c = ar->head;

	if (n == 0)
		n = 1;
	if (n > ar->limit || ar->total > ar->limit - n)
		return NULL;
	n = (n + align - 1) / align * align;
	if (c == NULL || c->size - c->used < n) {
		size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		c = malloc(sizeof(*c) + size);
		if (c == NULL)
			return NULL;
		c->used = 0;
		c->size = size;
		/* A big one-off chunk goes behind the current one so the
		 * current one keeps serving small requests. */
		if (ar->head && size > ARENA_CHUNK) {
			c->next = ar->head->next;
			ar->head->next = c;
		} else {
			c->next = ar->head;
			ar->head = c;
		}
	}
	void *p = (char *)c->data + c->used;
	c->used += n;
	ar->total += n;
	memset(p, 0, n);
	return p;
}

/* ------------------------------------------------------------------ */
/* Layer 1: the assembler                                               */
/* ------------------------------------------------------------------ */

enum asm_state {
	ASM_IDLE,    /* between commands: the next line starts one */
	ASM_LINE,    /* the command continues with a line */
	ASM_LITERAL, /* literal data is due */
	ASM_DEAD,    /* told to close */
};

void imap_asm_init(struct imap_asm *a, const struct imap_limits *lim)
{
	memset(a, 0, sizeof(*a));
	a->lim = *lim;
	if (a->lim.max_line == 0)
		a->lim.max_line = 8192;
	if (a->lim.max_command == 0)
		a->lim.max_command = 65536;
	if (a->lim.max_append == 0)
		a->lim.max_append = (size_t)64 << 20;
	a->state = ASM_IDLE;
}

void imap_asm_set_literal_mode(struct imap_asm *a, enum imap_literal_mode m)
{
	a->lim.literal_mode = m;
}

void imap_asm_free(struct imap_asm *a)
{
	free(a->buf);
	free(a->lits);
	a->buf = NULL;
	a->lits = NULL;
	a->len = a->cap = a->nlits = a->lits_cap = 0;
}

void imap_asm_reset(struct imap_asm *a)
{
	/* Do not let one big APPEND pin its buffer for the connection's life:
	 * idle connections are meant to stay small (DESIGN section 3). */
	if (a->cap > 65536) {
		free(a->buf);
		a->buf = NULL;
		a->cap = 0;
	}
	if (a->lits_cap > 64) {
		free(a->lits);
		a->lits = NULL;
		a->lits_cap = 0;
	}
	a->len = 0;
	a->nlits = 0;
	if (a->buf)
		a->buf[0] = '\0';
	a->literal_left = 0;
	a->append_literals = 0;
	a->is_append = false;
	a->discarding = false;
	a->continuation = false;
	a->err = IMAP_ASM_OK;
	a->tag_len = 0;
	a->tag[0] = '\0';
	if (a->state != ASM_DEAD)
		a->state = ASM_IDLE;
}

size_t imap_asm_literal_left(const struct imap_asm *a)
{
	return a->state == ASM_LITERAL ? a->literal_left : 0;
}

bool imap_asm_in_literal(const struct imap_asm *a)
{
	return a->state == ASM_LITERAL;
}

bool imap_asm_needs_continuation(const struct imap_asm *a)
{
	return a->state == ASM_LITERAL && a->continuation;
}

enum imap_asm_error imap_asm_error_code(const struct imap_asm *a)
{
	return a->err;
}

const char *imap_asm_error(const struct imap_asm *a)
{
	switch (a->err) {
	case IMAP_ASM_OK:
		return "no error";
	case IMAP_ASM_ERR_LINE_TOO_LONG:
	case IMAP_ASM_ERR_COMMAND_TOO_LONG:
		return "command too long";
	case IMAP_ASM_ERR_LITERAL_TOO_BIG:
		return "literal too big";
	case IMAP_ASM_ERR_LITERAL_MINUS:
		return "non-synchronizing literal over 4096 octets (LITERAL-)";
	case IMAP_ASM_ERR_NONSYNC:
		return "non-synchronizing literals are not supported";
	case IMAP_ASM_ERR_BAD_LITERAL:
		return "invalid literal size";
	case IMAP_ASM_ERR_NOMEM:
		return "out of memory";
	}
	return "error";
}

const char *imap_asm_tag(const struct imap_asm *a)
{
	return a->tag_len ? a->tag : NULL;
}

static int asm_reserve(struct imap_asm *a, size_t extra)
{
	if (extra >= SIZE_MAX - a->len - 1)
		return -1;
	size_t need = a->len + extra + 1;
	if (need <= a->cap)
		return 0;
	size_t cap = a->cap ? a->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	char *p = realloc(a->buf, cap);
	if (p == NULL)
		return -1;
	a->buf = p;
	a->cap = cap;
	return 0;
}

/* Remember the tag and whether this is APPEND, from a command's first line. */
static void asm_note_start(struct imap_asm *a, const char *line, size_t len)
{
	size_t i = 0;

	while (i < len && is_tag_char((unsigned char)line[i]))
		i++;
	if (i == 0 || i > IMAP_TAG_MAX || i >= len || line[i] != ' ')
		return;
	memcpy(a->tag, line, i);
	a->tag[i] = '\0';
	a->tag_len = i;
	const char *w = line + i + 1;
	size_t rest = len - i - 1;
	a->is_append = rest >= 6 && strncasecmp(w, "APPEND", 6) == 0 &&
		       (rest == 6 || w[6] == ' ');
}

struct lit_marker {
	bool present;
	bool nonsync, literal8;
	bool bad;       /* the size does not fit in 63 bits */
	size_t start;   /* offset in the line of "{" or "~" */
	uint64_t size;
};

/* Does the line end in a literal announcement: ["~"] "{" number ["+"] "}"? */
static struct lit_marker find_marker(const char *line, size_t len)
{
	struct lit_marker m = { 0 };
	size_t i = len;

	if (i < 3 || line[i - 1] != '}')
		return m;
	i--;
	if (line[i - 1] == '+') {
		m.nonsync = true;
		i--;
	}
	size_t end = i;
	while (i > 0 && is_digit((unsigned char)line[i - 1]))
		i--;
	if (i == end || i == 0 || line[i - 1] != '{')
		return m;
	uint64_t v = 0;
	for (size_t k = i; k < end; k++) {
		unsigned d = (unsigned)(line[k] - '0');
		if (v > (UINT64_C(0x7fffffffffffffff) - d) / 10) {
			m.bad = true;
			v = UINT64_MAX;
			break;
		}
		v = v * 10 + d;
	}
	m.present = true;
	m.size = v;
	m.start = i - 1;
	if (m.start > 0 && line[m.start - 1] == '~') {
		m.literal8 = true;
		m.start--;
	}
	return m;
}

/*
 * The largest refused non-synchronizing literal that is read and thrown
 * away rather than answered by closing the connection.  RFC 7888 section 4
 * leaves the server two choices, both allowed for LITERAL- too (section 5):
 * read the literal and refuse the command, or send BYE and close.  Closing
 * makes naive clients reconnect and send the same thing again, so we read
 * when we can afford it.  Swallowed octets are never stored, so the cost is
 * bandwidth, not memory.  In general the bound is max_discard.  A literal
 * refused only because LITERAL- caps "{N+}" at 4096 octets is read up to
 * the size a synchronizing literal could have had in this command
 * (APPENDLIMIT for APPEND): the client then gets a tagged "BAD [TOOBIG]"
 * and can retry with "{N}", and the same client could have made us take
 * that many octets with a synchronizing literal anyway.
 */
static size_t asm_discard_limit(const struct imap_asm *a)
{
	size_t lim = a->lim.max_discard;

	if (a->err == IMAP_ASM_ERR_LITERAL_MINUS) {
		size_t sync = a->is_append ? a->lim.max_append : a->lim.max_command;
		if (sync > lim)
			lim = sync;
	}
	return lim;
}

/*
 * Refuse the command.  If the client is sending a non-synchronizing literal
 * regardless, swallow it (RFC 7888 section 4, choice 1) unless it is larger
 * than asm_discard_limit(), in which case we close (choice 2).
 */
static enum imap_asm_status asm_reject(struct imap_asm *a,
				       enum imap_asm_error err,
				       const struct lit_marker *m)
{
	a->err = err;
	a->len = 0;
	a->nlits = 0;
	a->append_literals = 0;
	if (a->buf)
		a->buf[0] = '\0';
	if (m->present && m->nonsync) {
		if (m->bad || m->size > asm_discard_limit(a)) {
			a->state = ASM_DEAD;
			return IMAP_ASM_CLOSE;
		}
		a->discarding = true;
		a->continuation = false;
		a->literal_left = (size_t)m->size;
		a->state = ASM_LITERAL;
		return IMAP_ASM_REJECT;
	}
	/* Nothing more of this command will come: a synchronizing literal is
	 * not sent without our "+". */
	a->discarding = false;
	a->state = ASM_IDLE;
	return IMAP_ASM_REJECT;
}

/* The line of a refused command that is being swallowed. */
static enum imap_asm_status asm_discard_line(struct imap_asm *a,
					     const char *line, size_t len)
{
	struct lit_marker m = find_marker(line, len);

	if (m.present && m.nonsync) {
		if (m.bad || m.size > asm_discard_limit(a)) {
			a->state = ASM_DEAD;
			return IMAP_ASM_CLOSE;
		}
		a->literal_left = (size_t)m.size;
		a->continuation = false;
		a->state = ASM_LITERAL;
		return IMAP_ASM_LITERAL;
	}
	a->discarding = false;
	a->state = ASM_IDLE;
	return IMAP_ASM_DISCARDED;
}

enum imap_asm_status imap_asm_line(struct imap_asm *a, const char *line,
				   size_t len)
{
	if (a->state == ASM_DEAD)
		return IMAP_ASM_CLOSE;
	if (a->state == ASM_LITERAL && a->literal_left == 0) {
		/* "{0}": nothing to feed; the line continues the command. */
		a->continuation = false;
		a->state = ASM_LINE;
	}
	if (a->state == ASM_LITERAL) {
		/* The front-end skipped literal data: a bug that would put
		 * input out of step, so end the connection. */
		a->err = IMAP_ASM_ERR_BAD_LITERAL;
		a->state = ASM_DEAD;
		return IMAP_ASM_CLOSE;
	}
	if (a->state == ASM_IDLE) {
		imap_asm_reset(a);
		asm_note_start(a, line, len);
		a->state = ASM_LINE;
	} else if (a->discarding) {
		return asm_discard_line(a, line, len);
	}

	/* APPEND's literals count against max_append alone. */
	size_t counted = a->len - a->append_literals;
	struct lit_marker m = find_marker(line, len);
	if (len > a->lim.max_line)
		return asm_reject(a, IMAP_ASM_ERR_LINE_TOO_LONG, &m);
	if (len > a->lim.max_command || counted > a->lim.max_command - len)
		return asm_reject(a, IMAP_ASM_ERR_COMMAND_TOO_LONG, &m);
	if (m.present && m.bad)
		return asm_reject(a, IMAP_ASM_ERR_BAD_LITERAL, &m);
	if (m.present && m.nonsync) {
		if (a->lim.literal_mode == IMAP_LITERAL_SYNC_ONLY)
			return asm_reject(a, IMAP_ASM_ERR_NONSYNC, &m);
		if (a->lim.literal_mode == IMAP_LITERAL_MINUS &&
		    m.size > IMAP_LITERAL_MINUS_MAX)
			return asm_reject(a, IMAP_ASM_ERR_LITERAL_MINUS, &m);
	}
	if (m.present) {
		/* Refuse before a byte of it is read (RFC 7888 section 4). */
		bool over;
		if (a->is_append)
			over = m.size > a->lim.max_append - a->append_literals;
		else
			over = m.size > a->lim.max_command - counted - len;
		if (over)
			return asm_reject(a, IMAP_ASM_ERR_LITERAL_TOO_BIG, &m);
	}

	size_t extra = len + (m.present ? (size_t)m.size : 0);
	if (asm_reserve(a, extra))
		return asm_reject(a, IMAP_ASM_ERR_NOMEM, &m);
	size_t line_off = a->len;
	memcpy(a->buf + a->len, line, len);
	a->len += len;
	a->buf[a->len] = '\0';
	if (!m.present) {
		a->state = ASM_IDLE;
		return IMAP_ASM_COMPLETE;
	}

	if (a->nlits == a->lits_cap) {
		size_t n = a->lits_cap ? a->lits_cap * 2 : 4;
		struct imap_literal *l = realloc(a->lits, n * sizeof(*l));
		if (l == NULL)
			return asm_reject(a, IMAP_ASM_ERR_NOMEM, &m);
		a->lits = l;
		a->lits_cap = n;
	}
	struct imap_literal *lit = &a->lits[a->nlits++];
	lit->marker = line_off + m.start;
	lit->data = a->len;
	lit->len = (size_t)m.size;
	lit->nonsync = m.nonsync;
	lit->literal8 = m.literal8;
	if (a->is_append)
		a->append_literals += (size_t)m.size;
	a->literal_left = (size_t)m.size;
	a->continuation = !m.nonsync;
	a->state = ASM_LITERAL;
	return IMAP_ASM_LITERAL;
}

enum imap_asm_status imap_asm_literal(struct imap_asm *a, const char *p,
				      size_t len, size_t *used)
{
	*used = 0;
	if (a->state == ASM_DEAD)
		return IMAP_ASM_CLOSE;
	if (a->state != ASM_LITERAL)
		return IMAP_ASM_NEED_LINE;
	size_t n = len < a->literal_left ? len : a->literal_left;
	if (!a->discarding) {
		/* Space was reserved when the literal was accepted. */
		memcpy(a->buf + a->len, p, n);
		a->len += n;
		a->buf[a->len] = '\0';
	}
	a->literal_left -= n;
	*used = n;
	if (a->literal_left > 0)
		return IMAP_ASM_LITERAL;
	a->continuation = false;
	a->state = ASM_LINE;
	return IMAP_ASM_NEED_LINE;
}

/* ------------------------------------------------------------------ */
/* Layer 2: parser basics                                               */
/* ------------------------------------------------------------------ */

void imap_cmd_init(struct imap_cmd *cmd, size_t arena_limit)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->arena.limit = arena_limit ? arena_limit : (size_t)16 << 20;
}

void imap_cmd_free(struct imap_cmd *cmd)
{
	arena_free(&cmd->arena);
}

void *imap_cmd_alloc(struct imap_cmd *cmd, size_t n)
{
	return arena_alloc(&cmd->arena, n);
}

static int fail(struct imap_cmd *c, const char *why)
{
	c->error = why;
	return IMAP_PARSE_BAD;
}

/* A reason naming client text; the text is clipped and only printable
 * ASCII of it is kept, as it is echoed in the BAD response. */
static int failf(struct imap_cmd *c, const char *prefix, const char *what,
		 size_t wlen)
{
	char clip[41];
	size_t n = 0;

	for (size_t i = 0; i < wlen && n < sizeof(clip) - 1; i++) {
		unsigned char ch = (unsigned char)what[i];
		clip[n++] = (ch > 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	clip[n] = '\0';
	char *msg = arena_alloc(&c->arena, 128);
	if (msg == NULL)
		return fail(c, "out of memory");
	snprintf(msg, 128, "%s %s", prefix, clip);
	c->error = msg;
	return IMAP_PARSE_BAD;
}

static int nomem(struct imap_cmd *c)
{
	return fail(c, "command too complex");
}

/* Where the current line part ends: at the data of the next literal. */
static size_t line_end(struct imap_cmd *c)
{
	while (c->next_lit < c->nlits && c->lits[c->next_lit].data <= c->pos)
		c->next_lit++;
	if (c->next_lit < c->nlits)
		return c->lits[c->next_lit].data;
	return c->len;
}

static int cur(struct imap_cmd *c)
{
	if (c->pos >= line_end(c))
		return -1;
	return (unsigned char)c->buf[c->pos];
}

static bool accept_char(struct imap_cmd *c, char ch)
{
	if (cur(c) == (unsigned char)ch) {
		c->pos++;
		return true;
	}
	return false;
}

static int expect_char(struct imap_cmd *c, char ch, const char *why)
{
	return accept_char(c, ch) ? IMAP_PARSE_OK : fail(c, why);
}

bool imap_parse_at_end(const struct imap_cmd *cmd)
{
	return cmd->pos >= cmd->len;
}

bool imap_parse_peek(const struct imap_cmd *cmd, char c)
{
	return cmd->pos < cmd->len && cmd->buf[cmd->pos] == c;
}

int imap_parse_sp(struct imap_cmd *c)
{
	if (imap_parse_at_end(c))
		return fail(c, "missing argument");
	return expect_char(c, ' ', "expected a single space");
}

int imap_parse_end(struct imap_cmd *c)
{
	if (!imap_parse_at_end(c))
		return fail(c, cur(c) == ' ' ? "unexpected extra arguments"
					     : "unexpected characters");
	return IMAP_PARSE_OK;
}

/* Span of characters accepted by CLASS at the cursor; may be empty. */
static size_t scan(struct imap_cmd *c, bool (*class)(unsigned char))
{
	size_t end = line_end(c), start = c->pos;

	while (c->pos < end && class((unsigned char)c->buf[c->pos]))
		c->pos++;
	return c->pos - start;
}

static char *arena_strndup(struct imap_cmd *c, const char *s, size_t n)
{
	if (n == SIZE_MAX)
		return NULL;
	char *p = arena_alloc(&c->arena, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static void upcase(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 'a' && s[i] <= 'z')
			s[i] = (char)(s[i] - 'a' + 'A');
}

/* Match the token S/N against WORD, case-insensitively. */
static bool token_is(const char *s, size_t n, const char *word)
{
	size_t wl = strlen(word);
	return n == wl && strncasecmp(s, word, n) == 0;
}

int imap_parse_atom(struct imap_cmd *c, struct imap_str *out)
{
	size_t start = c->pos;
	size_t n = scan(c, is_atom_char);

	if (n == 0)
		return fail(c, imap_parse_at_end(c) ? "missing argument"
						    : "expected an atom");
	out->s = arena_strndup(c, c->buf + start, n);
	out->len = n;
	return out->s ? IMAP_PARSE_OK : nomem(c);
}

/* An upper-cased atom, for keywords. */
static int parse_keyword(struct imap_cmd *c, struct imap_str *out)
{
	size_t start = c->pos;
	size_t n = scan(c, is_atom_char);

	if (n == 0)
		return fail(c, imap_parse_at_end(c) ? "missing argument"
						    : "expected an atom");
	char *p = arena_strndup(c, c->buf + start, n);
	if (p == NULL)
		return nomem(c);
	upcase(p, n);
	out->s = p;
	out->len = n;
	return IMAP_PARSE_OK;
}

static int parse_quoted(struct imap_cmd *c, struct imap_str *out)
{
	size_t end = line_end(c);
	size_t start = ++c->pos; /* past DQUOTE */
	size_t n = 0;
	bool eight = false;

	/* First pass: validate and measure. */
	for (size_t i = start;; i++) {
		if (i >= end)
			return fail(c, "unterminated quoted string");
		unsigned char ch = (unsigned char)c->buf[i];
		if (ch == '"') {
			break;
		} else if (ch == '\\') {
			if (i + 1 >= end)
				return fail(c, "unterminated quoted string");
			unsigned char e = (unsigned char)c->buf[i + 1];
			if (e != '"' && e != '\\')
				return fail(c, "invalid escape in quoted string");
			i++;
		} else if (ch == '\0') {
			return fail(c, "NUL in quoted string");
		} else if (ch == '\r' || ch == '\n') {
			return fail(c, "CR or LF in quoted string");
		} else if (ch >= 0x80) {
			if (!(c->flags & IMAP_PARSE_UTF8))
				return fail(c, "8-bit octet in quoted string");
			eight = true;
		}
		n++;
	}
	char *p = arena_alloc(&c->arena, n + 1);
	if (p == NULL)
		return nomem(c);
	size_t k = 0, i = start;
	while (c->buf[i] != '"') {
		if (c->buf[i] == '\\')
			i++;
		p[k++] = c->buf[i++];
	}
	p[k] = '\0';
	c->pos = i + 1;
	if (eight && !imap_utf8_valid(p, k))
		return fail(c, "invalid UTF-8 in quoted string");
	out->s = p;
	out->len = k;
	return IMAP_PARSE_OK;
}

/* The literal whose marker is at the cursor, or NULL. */
static const struct imap_literal *literal_here(struct imap_cmd *c)
{
	line_end(c); /* advances next_lit */
	if (c->next_lit < c->nlits && c->lits[c->next_lit].marker == c->pos)
		return &c->lits[c->next_lit];
	return NULL;
}

/* Take the literal at the cursor; its data is not copied. */
static int take_literal(struct imap_cmd *c, bool allow8,
			const struct imap_literal **litp)
{
	const struct imap_literal *lit = literal_here(c);

	if (lit == NULL)
		return fail(c, "invalid literal");
	if (lit->literal8 && !allow8)
		return fail(c, "literal8 not allowed here");
	if (lit->data + lit->len > c->len)
		return fail(c, "truncated literal");
	c->pos = lit->data + lit->len;
	*litp = lit;
	return IMAP_PARSE_OK;
}

static int parse_literal_string(struct imap_cmd *c, struct imap_str *out)
{
	const struct imap_literal *lit;

	if (take_literal(c, false, &lit))
		return IMAP_PARSE_BAD;
	const char *d = c->buf + lit->data;
	/* A literal is CHAR8: NUL only in literal8 (RFC 3516 section 4). */
	if (memchr(d, '\0', lit->len))
		return fail(c, "NUL in literal");
	out->s = arena_strndup(c, d, lit->len);
	out->len = lit->len;
	return out->s ? IMAP_PARSE_OK : nomem(c);
}

int imap_parse_string(struct imap_cmd *c, struct imap_str *out)
{
	int ch = cur(c);

	if (ch == '"')
		return parse_quoted(c, out);
	if (ch == '{' || ch == '~')
		return parse_literal_string(c, out);
	return fail(c, imap_parse_at_end(c) ? "missing argument"
					    : "expected a string");
}

int imap_parse_astring(struct imap_cmd *c, struct imap_str *out)
{
	int ch = cur(c);

	if (ch == '"' || ch == '{' || ch == '~') {
		/* "~" is an ATOM-CHAR too; it is a literal8 only when a
		 * literal was recorded here. */
		if (ch != '~' || literal_here(c))
			return imap_parse_string(c, out);
	}
	size_t start = c->pos;
	size_t n = scan(c, is_astring_char);
	if (n == 0)
		return fail(c, imap_parse_at_end(c) ? "missing argument"
						    : "expected a string");
	out->s = arena_strndup(c, c->buf + start, n);
	out->len = n;
	return out->s ? IMAP_PARSE_OK : nomem(c);
}

int imap_parse_nstring(struct imap_cmd *c, struct imap_str *out)
{
	size_t end = line_end(c);

	if (end - c->pos >= 3 && strncasecmp(c->buf + c->pos, "NIL", 3) == 0 &&
	    (end - c->pos == 3 || !is_atom_char((unsigned char)c->buf[c->pos + 3]))) {
		c->pos += 3;
		out->s = NULL;
		out->len = 0;
		return IMAP_PARSE_OK;
	}
	return imap_parse_string(c, out);
}

static int parse_u64(struct imap_cmd *c, uint64_t max, uint64_t *out)
{
	size_t end = line_end(c);
	uint64_t v = 0;
	size_t start = c->pos;

	while (c->pos < end && is_digit((unsigned char)c->buf[c->pos])) {
		unsigned d = (unsigned)(c->buf[c->pos] - '0');
		if (v > (max - d) / 10)
			return fail(c, "number too large");
		v = v * 10 + d;
		c->pos++;
	}
	if (c->pos == start)
		return fail(c, imap_parse_at_end(c) ? "missing argument"
						    : "expected a number");
	*out = v;
	return IMAP_PARSE_OK;
}

int imap_parse_number(struct imap_cmd *c, uint32_t *out)
{
	uint64_t v;

	if (parse_u64(c, UINT32_MAX, &v))
		return IMAP_PARSE_BAD;
	*out = (uint32_t)v;
	return IMAP_PARSE_OK;
}

int imap_parse_number64(struct imap_cmd *c, uint64_t *out)
{
	return parse_u64(c, UINT64_C(0x7fffffffffffffff), out);
}

static int parse_nz_number(struct imap_cmd *c, uint32_t *out)
{
	if (imap_parse_number(c, out))
		return IMAP_PARSE_BAD;
	return *out ? IMAP_PARSE_OK : fail(c, "number must not be zero");
}

static int parse_nz_number64(struct imap_cmd *c, uint64_t *out)
{
	if (imap_parse_number64(c, out))
		return IMAP_PARSE_BAD;
	return *out ? IMAP_PARSE_OK : fail(c, "number must not be zero");
}

/* ------------------------------------------------------------------ */
/* Command line                                                         */
/* ------------------------------------------------------------------ */

static const char *const uid_commands[] = {
	"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD",
};

static int parse_name(struct imap_cmd *c)
{
	size_t start = c->pos;
	size_t n = scan(c, is_atom_char);

	if (n == 0)
		return fail(c, "missing command");
	if (n >= sizeof(c->name))
		return fail(c, "unknown command");
	memcpy(c->name, c->buf + start, n);
	c->name[n] = '\0';
	upcase(c->name, n);
	return IMAP_PARSE_OK;
}

int imap_cmd_parse_buf(struct imap_cmd *c, const char *buf, size_t len,
		       const struct imap_literal *lits, size_t nlits,
		       unsigned flags)
{
	arena_reset(&c->arena);
	c->tag.s = "";
	c->tag.len = 0;
	c->name[0] = '\0';
	c->uid = false;
	c->error = NULL;
	c->buf = buf;
	c->len = len;
	c->pos = 0;
	c->lits = lits;
	c->nlits = nlits;
	c->next_lit = 0;
	c->flags = flags;
	c->depth = 0;

	size_t n = scan(c, is_tag_char);
	if (n == 0)
		return fail(c, "missing or invalid tag");
	if (cur(c) != ' ' && !imap_parse_at_end(c))
		return fail(c, "invalid tag");
	char *tag = arena_strndup(c, buf, n);
	if (tag == NULL)
		return nomem(c);
	c->tag.s = tag;
	c->tag.len = n;
	if (imap_parse_at_end(c))
		return fail(c, "missing command");
	if (imap_parse_sp(c) || parse_name(c))
		return IMAP_PARSE_BAD;
	if (strcmp(c->name, "UID") != 0)
		return IMAP_PARSE_OK;
	c->uid = true;
	if (imap_parse_sp(c) || parse_name(c))
		return IMAP_PARSE_BAD;
	for (size_t i = 0; i < sizeof(uid_commands) / sizeof(*uid_commands); i++)
		if (strcmp(c->name, uid_commands[i]) == 0)
			return IMAP_PARSE_OK;
	return fail(c, "unknown UID command");
}

int imap_cmd_parse(struct imap_cmd *c, const struct imap_asm *a,
		   unsigned flags)
{
	return imap_cmd_parse_buf(c, a->buf ? a->buf : "", a->len, a->lits,
				  a->nlits, flags);
}

/* ------------------------------------------------------------------ */
/* Mailbox names                                                        */
/* ------------------------------------------------------------------ */

/* Turn a wire name into UTF-8: as is in UTF-8 mode (RFC 6855 section 3),
 * otherwise decoded from modified UTF-7 (RFC 3501 section 5.1.3). */
static int name_to_utf8(struct imap_cmd *c, struct imap_str *s)
{
	if (c->flags & IMAP_PARSE_UTF8) {
		if (!imap_utf8_valid(s->s, s->len))
			return fail(c, "mailbox name is not valid UTF-8");
		return IMAP_PARSE_OK;
	}
	char *d = arena_alloc(&c->arena, s->len + 1);
	size_t dlen;
	if (d == NULL)
		return nomem(c);
	if (imap_mutf7_decode(s->s, s->len, d, s->len + 1, &dlen))
		return fail(c, "mailbox name is not valid modified UTF-7");
	s->s = d;
	s->len = dlen;
	return IMAP_PARSE_OK;
}

int imap_parse_mailbox(struct imap_cmd *c, struct imap_str *out)
{
	if (imap_parse_astring(c, out) || name_to_utf8(c, out))
		return IMAP_PARSE_BAD;
	/* Every case of INBOX is INBOX (RFC 3501 section 5.1). */
	if (token_is(out->s, out->len, "INBOX"))
		out->s = "INBOX";
	return IMAP_PARSE_OK;
}

int imap_parse_list_mailbox(struct imap_cmd *c, struct imap_str *out)
{
	int ch = cur(c);

	if (ch == '"' || ch == '{' || (ch == '~' && literal_here(c))) {
		if (imap_parse_string(c, out))
			return IMAP_PARSE_BAD;
	} else {
		size_t start = c->pos;
		size_t n = scan(c, is_list_char);
		if (n == 0)
			return fail(c, imap_parse_at_end(c)
					       ? "missing argument"
					       : "expected a mailbox pattern");
		out->s = arena_strndup(c, c->buf + start, n);
		out->len = n;
		if (out->s == NULL)
			return nomem(c);
	}
	return name_to_utf8(c, out);
}

/* ------------------------------------------------------------------ */
/* Flags                                                                */
/* ------------------------------------------------------------------ */

/* flag = "\" atom / atom; "\*" is not a client's to send. */
static int parse_flag(struct imap_cmd *c, struct imap_str *out)
{
	size_t start = c->pos;
	bool system = accept_char(c, '\\');

	if (system && cur(c) == '*')
		return fail(c, "\\* is not a flag");
	size_t n = scan(c, is_atom_char);
	if (n == 0)
		return fail(c, "invalid flag");
	out->len = c->pos - start;
	out->s = arena_strndup(c, c->buf + start, out->len);
	return out->s ? IMAP_PARSE_OK : nomem(c);
}

/* A growable array in the arena (old copies are simply abandoned). */
static void *grow(struct imap_cmd *c, void *old, size_t n, size_t *cap,
		  size_t size)
{
	if (n < *cap)
		return old;
	size_t ncap = *cap ? *cap * 2 : 8;
	if (ncap > SIZE_MAX / size)
		return NULL;
	void *p = arena_alloc(&c->arena, ncap * size);
	if (p && old)
		memcpy(p, old, n * size);
	*cap = ncap;
	return p;
}

/* Flags separated by SP, until ")" (when PARENS) or the end. */
static int parse_flags_until(struct imap_cmd *c, bool parens,
			     struct imap_flags *out)
{
	size_t cap = 0;

	out->v = NULL;
	out->n = 0;
	if (parens && accept_char(c, ')'))
		return IMAP_PARSE_OK;
	for (;;) {
		out->v = grow(c, out->v, out->n, &cap, sizeof(*out->v));
		if (out->v == NULL)
			return nomem(c);
		if (parse_flag(c, &out->v[out->n]))
			return IMAP_PARSE_BAD;
		out->n++;
		if (parens && accept_char(c, ')'))
			return IMAP_PARSE_OK;
		if (!parens && imap_parse_at_end(c))
			return IMAP_PARSE_OK;
		if (imap_parse_sp(c))
			return parens ? fail(c, "unterminated flag list")
				      : IMAP_PARSE_BAD;
	}
}

int imap_parse_flag_list(struct imap_cmd *c, struct imap_flags *out)
{
	if (expect_char(c, '(', "expected a flag list"))
		return IMAP_PARSE_BAD;
	return parse_flags_until(c, true, out);
}

/* ------------------------------------------------------------------ */
/* Sequence sets                                                        */
/* ------------------------------------------------------------------ */

static int cmp_range(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* Sort R and merge overlapping or adjacent ranges; returns the new count. */
static size_t normalise_ranges(struct imap_range *r, size_t n)
{
	size_t k = 0;

	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), cmp_range);
	for (size_t i = 1; i < n; i++) {
		if (r[k].hi == UINT32_MAX || r[i].lo <= r[k].hi + 1) {
			if (r[i].hi > r[k].hi)
				r[k].hi = r[i].hi;
		} else {
			r[++k] = r[i];
		}
	}
	return k + 1;
}

/* seq-number = nz-number / "*"; *IS_STAR tells which. */
static int parse_seq_number(struct imap_cmd *c, uint32_t *v, bool *is_star)
{
	*is_star = false;
	if (accept_char(c, '*')) {
		*is_star = true;
		return IMAP_PARSE_OK;
	}
	int ch = cur(c);
	if (!is_digit((unsigned char)(ch < 0 ? 'x' : ch)))
		return fail(c, "invalid sequence set");
	if (imap_parse_number(c, v)) {
		c->error = "number in sequence set too large";
		return IMAP_PARSE_BAD;
	}
	if (*v == 0)
		return fail(c, "sequence number 0 is invalid");
	return IMAP_PARSE_OK;
}

int imap_parse_seqset(struct imap_cmd *c, struct imap_seqset *out)
{
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->star_lo = UINT32_MAX;
	if (accept_char(c, '$')) {
		/* "$" stands alone (RFC 5182 section 2.1). */
		int ch = cur(c);
		if (ch != -1 && ch != ' ' && ch != ')')
			return fail(c, "invalid sequence set");
		out->dollar = true;
		return IMAP_PARSE_OK;
	}
	if (imap_parse_at_end(c))
		return fail(c, "missing sequence set");
	for (;;) {
		uint32_t a = 0, b = 0;
		bool sa, sb;
		if (parse_seq_number(c, &a, &sa))
			return IMAP_PARSE_BAD;
		b = a;
		sb = sa;
		if (accept_char(c, ':') && parse_seq_number(c, &b, &sb))
			return IMAP_PARSE_BAD;
		if (sa || sb) {
			out->star = true;
			if (!(sa && sb)) {
				uint32_t v = sa ? b : a;
				if (v < out->star_lo)
					out->star_lo = v;
				if (v > out->star_hi)
					out->star_hi = v;
			}
		} else {
			out->r = grow(c, out->r, out->n, &cap, sizeof(*out->r));
			if (out->r == NULL)
				return nomem(c);
			out->r[out->n].lo = a < b ? a : b;
			out->r[out->n].hi = a < b ? b : a;
			out->n++;
		}
		if (!accept_char(c, ','))
			break;
	}
	int ch = cur(c);
	if (ch != -1 && ch != ' ' && ch != ')')
		return fail(c, "invalid sequence set");
	out->n = normalise_ranges(out->r, out->n);
	return IMAP_PARSE_OK;
}

int imap_seqset_resolve(struct imap_cmd *c, const struct imap_seqset *set,
			uint32_t max, struct imap_range **out, size_t *nout)
{
	*out = NULL;
	*nout = 0;
	if (set->dollar)
		return IMAP_PARSE_OK;
	size_t n = set->n + 1;
	struct imap_range *r = arena_alloc(&c->arena, n * sizeof(*r));
	if (r == NULL)
		return nomem(c);
	if (set->n)
		memcpy(r, set->r, set->n * sizeof(*r));
	n = set->n;
	if (set->star && max > 0) {
		r[n].lo = set->star_lo < max ? set->star_lo : max;
		r[n].hi = set->star_hi > max ? set->star_hi : max;
		n++;
	}
	*out = r;
	*nout = normalise_ranges(r, n);
	return IMAP_PARSE_OK;
}

bool imap_ranges_contain(const struct imap_range *r, size_t n, uint32_t v)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v < r[mid].lo)
			hi = mid;
		else if (v > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* Dates                                                                */
/* ------------------------------------------------------------------ */

static const char *const month_names[12] = {
	"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
	"JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
};

static int days_in_month(int year, int mon)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30,
				      31, 31, 30, 31, 30, 31 };
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	return mon == 2 && leap ? 29 : days[mon - 1];
}

/* Exactly N digits. */
static int fixed_digits(struct imap_cmd *c, size_t n, int *out)
{
	size_t end = line_end(c);
	int v = 0;

	if (end - c->pos < n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)c->buf[c->pos + i];
		if (!is_digit(ch))
			return -1;
		v = v * 10 + (ch - '0');
	}
	c->pos += n;
	*out = v;
	return 0;
}

/* date-text after the day: "-" month "-" year, then validation. */
static int parse_month_year(struct imap_cmd *c, struct imap_date *d)
{
	size_t end = line_end(c);

	if (!accept_char(c, '-') || end - c->pos < 4)
		return fail(c, "invalid date");
	d->mon = 0;
	for (int m = 0; m < 12; m++)
		if (strncasecmp(c->buf + c->pos, month_names[m], 3) == 0)
			d->mon = m + 1;
	if (d->mon == 0)
		return fail(c, "invalid month in date");
	c->pos += 3;
	if (!accept_char(c, '-') || fixed_digits(c, 4, &d->year))
		return fail(c, "invalid date");
	if (d->day < 1 || d->day > days_in_month(d->year, d->mon))
		return fail(c, "invalid day of month");
	return IMAP_PARSE_OK;
}

int imap_parse_date(struct imap_cmd *c, struct imap_date *out)
{
	bool quoted = accept_char(c, '"');
	int d1, d2;

	if (fixed_digits(c, 1, &d1))
		return fail(c, "invalid date");
	out->day = d1;
	if (fixed_digits(c, 1, &d2) == 0)
		out->day = d1 * 10 + d2;
	if (parse_month_year(c, out))
		return IMAP_PARSE_BAD;
	if (quoted && !accept_char(c, '"'))
		return fail(c, "invalid date");
	return IMAP_PARSE_OK;
}

int imap_parse_datetime(struct imap_cmd *c, struct imap_datetime *out)
{
	int d1, d2, zh, zm;

	if (!accept_char(c, '"'))
		return fail(c, "expected a quoted date-time");
	accept_char(c, ' '); /* date-day-fixed: SP DIGIT */
	if (fixed_digits(c, 1, &d1))
		return fail(c, "invalid date-time");
	out->date.day = d1;
	if (fixed_digits(c, 1, &d2) == 0)
		out->date.day = d1 * 10 + d2;
	if (parse_month_year(c, &out->date))
		return IMAP_PARSE_BAD;
	if (!accept_char(c, ' ') || fixed_digits(c, 2, &out->hour) ||
	    !accept_char(c, ':') || fixed_digits(c, 2, &out->min) ||
	    !accept_char(c, ':') || fixed_digits(c, 2, &out->sec) ||
	    !accept_char(c, ' '))
		return fail(c, "invalid time in date-time");
	if (out->hour > 23 || out->min > 59 || out->sec > 60)
		return fail(c, "invalid time in date-time");
	int sign = cur(c);
	if ((sign != '+' && sign != '-'))
		return fail(c, "invalid zone in date-time");
	c->pos++;
	if (fixed_digits(c, 2, &zh) || fixed_digits(c, 2, &zm) || zm > 59)
		return fail(c, "invalid zone in date-time");
	out->zone = (zh * 60 + zm) * (sign == '-' ? -1 : 1);
	if (!accept_char(c, '"'))
		return fail(c, "invalid date-time");
	return IMAP_PARSE_OK;
}

/* Days from 1970-01-01 to Y-M-D in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

time_t imap_date_to_time(const struct imap_date *d)
{
	return (time_t)(days_from_civil(d->year, d->mon, d->day) * 86400);
}

time_t imap_datetime_to_time(const struct imap_datetime *dt)
{
	int64_t t = days_from_civil(dt->date.year, dt->date.mon, dt->date.day);
	t = t * 86400 + dt->hour * 3600 + dt->min * 60 + dt->sec;
	return (time_t)(t - (int64_t)dt->zone * 60);
}

/* ------------------------------------------------------------------ */
/* FETCH                                                                */
/* ------------------------------------------------------------------ */

static bool is_att_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       is_digit(c) || c == '.' || c == '-' || c == '_';
}

/* header-fld-name is an astring; hold it to RFC 5322 ftext as well. */
static int parse_header_name(struct imap_cmd *c, struct imap_str *out)
{
	if (imap_parse_astring(c, out))
		return IMAP_PARSE_BAD;
	if (out->len == 0)
		return fail(c, "empty header field name");
	for (size_t i = 0; i < out->len; i++) {
		unsigned char ch = (unsigned char)out->s[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == ':')
			return fail(c, "invalid header field name");
	}
	return IMAP_PARSE_OK;
}

static int parse_header_list(struct imap_cmd *c, struct imap_section *s)
{
	size_t cap = 0;

	if (imap_parse_sp(c) ||
	    expect_char(c, '(', "expected a header field list"))
		return IMAP_PARSE_BAD;
	for (;;) {
		s->fields = grow(c, s->fields, s->nfields, &cap,
				 sizeof(*s->fields));
		if (s->fields == NULL)
			return nomem(c);
		if (parse_header_name(c, &s->fields[s->nfields]))
			return IMAP_PARSE_BAD;
		s->nfields++;
		if (accept_char(c, ')'))
			return IMAP_PARSE_OK;
		if (imap_parse_sp(c))
			return fail(c, "unterminated header field list");
	}
}

/*
 * section = "[" [section-spec] "]" (RFC 3501 section 6.4.5); with BINARY
 * only part numbers are allowed (RFC 3516 section-binary).  MIME needs a
 * part number: it names a part's MIME header, which the top level lacks.
 */
static int parse_section(struct imap_cmd *c, bool binary,
			 struct imap_section *s)
{
	size_t cap = 0;

	memset(s, 0, sizeof(*s));
	if (expect_char(c, '[', "expected a section"))
		return IMAP_PARSE_BAD;
	if (accept_char(c, ']'))
		return IMAP_PARSE_OK;
	int ch = cur(c);
	bool text_next = !(ch >= 0 && is_digit((unsigned char)ch));
	while (!text_next) {
		s->part = grow(c, s->part, s->nparts, &cap, sizeof(*s->part));
		if (s->part == NULL)
			return nomem(c);
		if (parse_nz_number(c, &s->part[s->nparts])) {
			c->error = "invalid section part number";
			return IMAP_PARSE_BAD;
		}
		s->nparts++;
		if (!accept_char(c, '.'))
			break;
		ch = cur(c);
		text_next = !(ch >= 0 && is_digit((unsigned char)ch));
	}
	if (text_next) {
		if (binary)
			return fail(c, "BINARY takes only part numbers");
		size_t start = c->pos;
		size_t n = scan(c, is_att_char);
		const char *w = c->buf + start;
		if (token_is(w, n, "HEADER")) {
			s->text = IMAP_SECTION_HEADER;
		} else if (token_is(w, n, "HEADER.FIELDS")) {
			s->text = IMAP_SECTION_HEADER_FIELDS;
		} else if (token_is(w, n, "HEADER.FIELDS.NOT")) {
			s->text = IMAP_SECTION_HEADER_FIELDS_NOT;
		} else if (token_is(w, n, "TEXT")) {
			s->text = IMAP_SECTION_TEXT;
		} else if (token_is(w, n, "MIME")) {
			if (s->nparts == 0)
				return fail(c, "MIME needs a part number");
			s->text = IMAP_SECTION_MIME;
		} else {
			return failf(c, "invalid section", w, n);
		}
		if ((s->text == IMAP_SECTION_HEADER_FIELDS ||
		     s->text == IMAP_SECTION_HEADER_FIELDS_NOT) &&
		    parse_header_list(c, s))
			return IMAP_PARSE_BAD;
	}
	return expect_char(c, ']', "invalid section");
}

/* partial = "<" number64 "." nz-number64 ">" */
static int parse_partial(struct imap_cmd *c, struct imap_fetch_att *att)
{
	if (!accept_char(c, '<'))
		return IMAP_PARSE_OK;
	if (imap_parse_number64(c, &att->origin) ||
	    expect_char(c, '.', "invalid partial") ||
	    parse_nz_number64(c, &att->count) ||
	    expect_char(c, '>', "invalid partial")) {
		c->error = "invalid partial";
		return IMAP_PARSE_BAD;
	}
	att->partial = true;
	return IMAP_PARSE_OK;
}

struct fetch_name {
	const char *name;
	enum imap_fetch_kind kind;
	bool peek;
	int section; /* 0 none, 1 optional (BODY), 2 required */
	bool partial;
	bool binary;
};

static const struct fetch_name fetch_names[] = {
	{ "FLAGS", IMAP_FETCH_FLAGS, false, 0, false, false },
	{ "INTERNALDATE", IMAP_FETCH_INTERNALDATE, false, 0, false, false },
	{ "RFC822", IMAP_FETCH_RFC822, false, 0, false, false },
	{ "RFC822.HEADER", IMAP_FETCH_RFC822_HEADER, true, 0, false, false },
	{ "RFC822.SIZE", IMAP_FETCH_RFC822_SIZE, false, 0, false, false },
	{ "RFC822.TEXT", IMAP_FETCH_RFC822_TEXT, false, 0, false, false },
	{ "ENVELOPE", IMAP_FETCH_ENVELOPE, false, 0, false, false },
	{ "BODY", IMAP_FETCH_BODY_SECTION, false, 1, true, false },
	{ "BODY.PEEK", IMAP_FETCH_BODY_SECTION, true, 2, true, false },
	{ "BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE, false, 0, false, false },
	{ "UID", IMAP_FETCH_UID, false, 0, false, false },
	{ "BINARY", IMAP_FETCH_BINARY, false, 2, true, true },
	{ "BINARY.PEEK", IMAP_FETCH_BINARY, true, 2, true, true },
	{ "BINARY.SIZE", IMAP_FETCH_BINARY_SIZE, false, 2, false, true },
	{ "MODSEQ", IMAP_FETCH_MODSEQ, false, 0, false, false },
	{ "SAVEDATE", IMAP_FETCH_SAVEDATE, false, 0, false, false },
	{ "EMAILID", IMAP_FETCH_EMAILID, false, 0, false, false },
	{ "THREADID", IMAP_FETCH_THREADID, false, 0, false, false },
};

static struct imap_fetch_att *add_att(struct imap_cmd *c,
				      struct imap_fetch *f,
				      struct imap_fetch_att ***tail,
				      enum imap_fetch_kind kind)
{
	struct imap_fetch_att *att = arena_alloc(&c->arena, sizeof(*att));
	if (att == NULL)
		return NULL;
	att->kind = kind;
	**tail = att;
	*tail = &att->next;
	f->natts++;
	return att;
}

static int parse_fetch_att(struct imap_cmd *c, struct imap_fetch *f,
			   struct imap_fetch_att ***tail)
{
	size_t start = c->pos;
	size_t n = scan(c, is_att_char);
	const char *w = c->buf + start;

	if (n == 0)
		return fail(c, imap_parse_at_end(c)
				       ? "missing FETCH attribute"
				       : "invalid FETCH attribute");
	for (size_t i = 0; i < sizeof(fetch_names) / sizeof(*fetch_names); i++) {
		const struct fetch_name *fn = &fetch_names[i];
		if (!token_is(w, n, fn->name))
			continue;
		if (fn->binary && !(c->flags & IMAP_PARSE_BINARY))
			return failf(c, "unknown FETCH attribute", w, n);
		enum imap_fetch_kind kind = fn->kind;
		if (fn->section == 1 && cur(c) != '[')
			kind = IMAP_FETCH_BODY; /* BODY without a section */
		struct imap_fetch_att *att = add_att(c, f, tail, kind);
		if (att == NULL)
			return nomem(c);
		att->peek = fn->peek;
		if (fn->section && kind != IMAP_FETCH_BODY) {
			if (parse_section(c, fn->binary, &att->section))
				return IMAP_PARSE_BAD;
			if (fn->partial && parse_partial(c, att))
				return IMAP_PARSE_BAD;
		}
		int ch = cur(c);
		if (ch != -1 && ch != ' ' && ch != ')')
			return failf(c, "invalid FETCH attribute", w, n);
		return IMAP_PARSE_OK;
	}
	return failf(c, "unknown FETCH attribute", w, n);
}

static const enum imap_fetch_kind macro_fast[] = {
	IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE, IMAP_FETCH_RFC822_SIZE,
	IMAP_FETCH_ENVELOPE, IMAP_FETCH_BODY,
};

/* ALL, FAST and FULL (RFC 3501 section 6.4.5); false if none of them. */
static int parse_fetch_macro(struct imap_cmd *c, struct imap_fetch *f,
			     struct imap_fetch_att ***tail, bool *matched)
{
	size_t start = c->pos, end = line_end(c), n = 0, count = 0;

	while (start + n < end && is_att_char((unsigned char)c->buf[start + n]))
		n++;
	const char *w = c->buf + start;
	*matched = true;
	if (token_is(w, n, "FAST"))
		count = 3;
	else if (token_is(w, n, "ALL"))
		count = 4;
	else if (token_is(w, n, "FULL"))
		count = 5;
	else
		*matched = false;
	if (!*matched)
		return IMAP_PARSE_OK;
	c->pos += n;
	for (size_t i = 0; i < count; i++)
		if (add_att(c, f, tail, macro_fast[i]) == NULL)
			return nomem(c);
	return IMAP_PARSE_OK;
}

static bool has_att(const struct imap_fetch *f, enum imap_fetch_kind kind)
{
	for (const struct imap_fetch_att *a = f->atts; a; a = a->next)
		if (a->kind == kind)
			return true;
	return false;
}

/* fetch-modifiers (RFC 7162 sections 3.1.4.1 and 3.2.6). */
static int parse_fetch_modifiers(struct imap_cmd *c, struct imap_fetch *f)
{
	struct imap_str w;

	if (expect_char(c, '(', "expected FETCH modifiers"))
		return IMAP_PARSE_BAD;
	for (;;) {
		if (parse_keyword(c, &w))
			return IMAP_PARSE_BAD;
		if (strcmp(w.s, "CHANGEDSINCE") == 0 && !f->changedsince_set) {
			if (imap_parse_sp(c) ||
			    parse_nz_number64(c, &f->changedsince))
				return IMAP_PARSE_BAD;
			f->changedsince_set = true;
		} else if (strcmp(w.s, "VANISHED") == 0 && !f->vanished) {
			f->vanished = true;
		} else {
			return failf(c, "unknown or repeated FETCH modifier",
				     w.s, w.len);
		}
		if (accept_char(c, ')'))
			break;
		if (imap_parse_sp(c))
			return fail(c, "unterminated FETCH modifiers");
	}
	if (f->vanished && !c->uid)
		return fail(c, "VANISHED is allowed only in UID FETCH");
	if (f->vanished && !f->changedsince_set)
		return fail(c, "VANISHED requires CHANGEDSINCE");
	return IMAP_PARSE_OK;
}

int imap_parse_fetch(struct imap_cmd *c, struct imap_fetch *f)
{
	struct imap_fetch_att **tail = &f->atts;
	bool macro;

	memset(f, 0, sizeof(*f));
	if (accept_char(c, '(')) {
		for (;;) {
			if (parse_fetch_att(c, f, &tail))
				return IMAP_PARSE_BAD;
			if (accept_char(c, ')'))
				break;
			if (imap_parse_sp(c))
				return fail(c, "unterminated FETCH attribute list");
		}
	} else {
		if (parse_fetch_macro(c, f, &tail, &macro))
			return IMAP_PARSE_BAD;
		if (!macro && parse_fetch_att(c, f, &tail))
			return IMAP_PARSE_BAD;
	}
	if (!imap_parse_at_end(c)) {
		if (imap_parse_sp(c) || parse_fetch_modifiers(c, f))
			return IMAP_PARSE_BAD;
	}
	/* UID FETCH always answers with the UID (RFC 3501 section 6.4.8), and
	 * CHANGEDSINCE implies MODSEQ (RFC 7162 section 3.1.4.1). */
	if (c->uid && !has_att(f, IMAP_FETCH_UID) &&
	    add_att(c, f, &tail, IMAP_FETCH_UID) == NULL)
		return nomem(c);
	if (f->changedsince_set && !has_att(f, IMAP_FETCH_MODSEQ) &&
	    add_att(c, f, &tail, IMAP_FETCH_MODSEQ) == NULL)
		return nomem(c);
	return imap_parse_end(c);
}

/* ------------------------------------------------------------------ */
/* STORE                                                                */
/* ------------------------------------------------------------------ */

int imap_parse_store(struct imap_cmd *c, struct imap_store *s)
{
	struct imap_str w;

	memset(s, 0, sizeof(*s));
	if (accept_char(c, '(')) {
		/* store-modifier list; only UNCHANGEDSINCE is known. */
		for (;;) {
			if (parse_keyword(c, &w))
				return IMAP_PARSE_BAD;
			if (strcmp(w.s, "UNCHANGEDSINCE") != 0 ||
			    s->unchangedsince_set)
				return failf(c, "unknown or repeated STORE "
					     "modifier", w.s, w.len);
			if (imap_parse_sp(c) ||
			    imap_parse_number64(c, &s->unchangedsince))
				return IMAP_PARSE_BAD;
			s->unchangedsince_set = true;
			if (accept_char(c, ')'))
				break;
			if (imap_parse_sp(c))
				return fail(c, "unterminated STORE modifiers");
		}
		if (imap_parse_sp(c))
			return IMAP_PARSE_BAD;
	}
	size_t start = c->pos;
	size_t n = scan(c, is_atom_char);
	const char *p = c->buf + start;
	if (n > 0 && (*p == '+' || *p == '-')) {
		s->op = *p == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
		p++;
		n--;
	}
	if (token_is(p, n, "FLAGS.SILENT"))
		s->silent = true;
	else if (!token_is(p, n, "FLAGS"))
		return fail(c, "expected FLAGS, +FLAGS or -FLAGS");
	if (imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	if (accept_char(c, '(')) {
		if (parse_flags_until(c, true, &s->flags))
			return IMAP_PARSE_BAD;
	} else if (parse_flags_until(c, false, &s->flags)) {
		return IMAP_PARSE_BAD;
	}
	return imap_parse_end(c);
}

/* ------------------------------------------------------------------ */
/* SEARCH                                                               */
/* ------------------------------------------------------------------ */

enum sk_arg {
	SK_NONE, SK_ASTRING, SK_KEYWORD, SK_HEADER, SK_DATE, SK_NUMBER64,
	SK_SECONDS, SK_UIDSET, SK_MODSEQ, SK_OR, SK_NOT,
};

struct search_name {
	const char *name;
	enum imap_search_op op;
	enum sk_arg arg;
};

/* RFC 3501 section 6.4.4, RFC 5032 (OLDER/YOUNGER), RFC 7162 (MODSEQ),
 * RFC 8514 (SAVED*). */
static const struct search_name search_names[] = {
	{ "ALL", IMAP_SK_ALL, SK_NONE },
	{ "ANSWERED", IMAP_SK_ANSWERED, SK_NONE },
	{ "BCC", IMAP_SK_BCC, SK_ASTRING },
	{ "BEFORE", IMAP_SK_BEFORE, SK_DATE },
	{ "BODY", IMAP_SK_BODY, SK_ASTRING },
	{ "CC", IMAP_SK_CC, SK_ASTRING },
	{ "DELETED", IMAP_SK_DELETED, SK_NONE },
	{ "DRAFT", IMAP_SK_DRAFT, SK_NONE },
	{ "FLAGGED", IMAP_SK_FLAGGED, SK_NONE },
	{ "FROM", IMAP_SK_FROM, SK_ASTRING },
	{ "HEADER", IMAP_SK_HEADER, SK_HEADER },
	{ "KEYWORD", IMAP_SK_KEYWORD, SK_KEYWORD },
	{ "LARGER", IMAP_SK_LARGER, SK_NUMBER64 },
	{ "MODSEQ", IMAP_SK_MODSEQ, SK_MODSEQ },
	{ "NEW", IMAP_SK_NEW, SK_NONE },
	{ "NOT", IMAP_SK_NOT, SK_NOT },
	{ "OLD", IMAP_SK_OLD, SK_NONE },
	{ "OLDER", IMAP_SK_OLDER, SK_SECONDS },
	{ "ON", IMAP_SK_ON, SK_DATE },
	{ "OR", IMAP_SK_OR, SK_OR },
	{ "RECENT", IMAP_SK_RECENT, SK_NONE },
	{ "SAVEDATESUPPORTED", IMAP_SK_SAVEDATESUPPORTED, SK_NONE },
	{ "SAVEDBEFORE", IMAP_SK_SAVEDBEFORE, SK_DATE },
	{ "SAVEDON", IMAP_SK_SAVEDON, SK_DATE },
	{ "SAVEDSINCE", IMAP_SK_SAVEDSINCE, SK_DATE },
	{ "SEEN", IMAP_SK_SEEN, SK_NONE },
	{ "SENTBEFORE", IMAP_SK_SENTBEFORE, SK_DATE },
	{ "SENTON", IMAP_SK_SENTON, SK_DATE },
	{ "SENTSINCE", IMAP_SK_SENTSINCE, SK_DATE },
	{ "SINCE", IMAP_SK_SINCE, SK_DATE },
	{ "SMALLER", IMAP_SK_SMALLER, SK_NUMBER64 },
	{ "SUBJECT", IMAP_SK_SUBJECT, SK_ASTRING },
	{ "TEXT", IMAP_SK_TEXT, SK_ASTRING },
	{ "TO", IMAP_SK_TO, SK_ASTRING },
	{ "UID", IMAP_SK_UID, SK_UIDSET },
	{ "UNANSWERED", IMAP_SK_UNANSWERED, SK_NONE },
	{ "UNDELETED", IMAP_SK_UNDELETED, SK_NONE },
	{ "UNDRAFT", IMAP_SK_UNDRAFT, SK_NONE },
	{ "UNFLAGGED", IMAP_SK_UNFLAGGED, SK_NONE },
	{ "UNKEYWORD", IMAP_SK_UNKEYWORD, SK_KEYWORD },
	{ "UNSEEN", IMAP_SK_UNSEEN, SK_NONE },
	{ "YOUNGER", IMAP_SK_YOUNGER, SK_SECONDS },
};

static int parse_search_key(struct imap_cmd *c, struct imap_search *s,
			    struct imap_search_key **out);

static struct imap_search_key *new_key(struct imap_cmd *c,
				       enum imap_search_op op)
{
	struct imap_search_key *k = arena_alloc(&c->arena, sizeof(*k));
	if (k)
		k->op = op;
	return k;
}

/* Keys separated by SP up to ")" (group) or the end (top level), as
 * children of an AND node. */
static int parse_search_list(struct imap_cmd *c, struct imap_search *s,
			     bool group, struct imap_search_key **out)
{
	struct imap_search_key *and = new_key(c, IMAP_SK_AND), **tail;

	if (and == NULL)
		return nomem(c);
	tail = &and->child;
	if (group && cur(c) == ')')
		return fail(c, "empty search group");
	for (;;) {
		if (parse_search_key(c, s, tail))
			return IMAP_PARSE_BAD;
		tail = &(*tail)->next;
		if (group && accept_char(c, ')'))
			break;
		if (!group && imap_parse_at_end(c))
			break;
		if (imap_parse_sp(c))
			return group ? fail(c, "unterminated search group")
				     : IMAP_PARSE_BAD;
	}
	*out = and;
	return IMAP_PARSE_OK;
}

/* MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer */
static int parse_search_modseq(struct imap_cmd *c, struct imap_search_key *k)
{
	int ch = cur(c);

	if (ch == '"' || ch == '{') {
		struct imap_str type;
		if (imap_parse_string(c, &k->str2) || imap_parse_sp(c) ||
		    parse_keyword(c, &type) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		if (strcmp(type.s, "PRIV") && strcmp(type.s, "SHARED") &&
		    strcmp(type.s, "ALL"))
			return fail(c, "invalid MODSEQ entry type");
		k->str = type;
	}
	return imap_parse_number64(c, &k->num);
}

static int parse_search_arg(struct imap_cmd *c, struct imap_search *s,
			    const struct search_name *sn,
			    struct imap_search_key *k)
{
	uint32_t v;

	if (sn->arg == SK_NONE)
		return IMAP_PARSE_OK;
	if (imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	switch (sn->arg) {
	case SK_NONE:
		break;
	case SK_ASTRING:
		return imap_parse_astring(c, &k->str);
	case SK_KEYWORD:
		return imap_parse_atom(c, &k->str);
	case SK_HEADER:
		if (parse_header_name(c, &k->str2) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		return imap_parse_astring(c, &k->str);
	case SK_DATE:
		return imap_parse_date(c, &k->date);
	case SK_NUMBER64:
		return imap_parse_number64(c, &k->num);
	case SK_SECONDS:
		if (parse_nz_number(c, &v))
			return IMAP_PARSE_BAD;
		k->num = v;
		return IMAP_PARSE_OK;
	case SK_UIDSET:
		return imap_parse_seqset(c, &k->set);
	case SK_MODSEQ:
		s->modseq_used = true;
		return parse_search_modseq(c, k);
	case SK_NOT:
		return parse_search_key(c, s, &k->child);
	case SK_OR:
		if (parse_search_key(c, s, &k->child) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		return parse_search_key(c, s, &k->child->next);
	}
	return IMAP_PARSE_OK;
}

static int parse_search_key(struct imap_cmd *c, struct imap_search *s,
			    struct imap_search_key **out)
{
	int ch = cur(c);
	int rc;

	/* NOT, OR and groups recurse: bound the depth so that hostile input
	 * cannot exhaust the stack. */
	if (++c->depth > IMAP_MAX_DEPTH)
		return fail(c, "search keys nested too deeply");
	if (ch == '(') {
		c->pos++;
		rc = parse_search_list(c, s, true, out);
		c->depth--;
		return rc;
	}
	if (ch == '*' || ch == '$' || (ch >= 0 && is_digit((unsigned char)ch))) {
		struct imap_search_key *k = new_key(c, IMAP_SK_SEQSET);
		if (k == NULL)
			return nomem(c);
		*out = k;
		c->depth--;
		return imap_parse_seqset(c, &k->set);
	}
	size_t start = c->pos;
	size_t n = scan(c, is_atom_char);
	if (n == 0)
		return fail(c, imap_parse_at_end(c) ? "missing search key"
						    : "invalid search key");
	const char *w = c->buf + start;
	for (size_t i = 0; i < sizeof(search_names) / sizeof(*search_names); i++) {
		const struct search_name *sn = &search_names[i];
		if (!token_is(w, n, sn->name))
			continue;
		struct imap_search_key *k = new_key(c, sn->op);
		if (k == NULL)
			return nomem(c);
		*out = k;
		rc = parse_search_arg(c, s, sn, k);
		c->depth--;
		return rc;
	}
	return failf(c, "unknown search key", w, n);
}

static int parse_search_return(struct imap_cmd *c, struct imap_search *s)
{
	static const struct {
		const char *name;
		unsigned bit;
	} opts[] = {
		{ "MIN", IMAP_SEARCH_RET_MIN },
		{ "MAX", IMAP_SEARCH_RET_MAX },
		{ "ALL", IMAP_SEARCH_RET_ALL },
		{ "COUNT", IMAP_SEARCH_RET_COUNT },
		{ "SAVE", IMAP_SEARCH_RET_SAVE },
	};
	struct imap_str w;

	s->esearch = true;
	if (imap_parse_sp(c) || expect_char(c, '(', "expected RETURN options"))
		return IMAP_PARSE_BAD;
	if (!accept_char(c, ')')) {
		for (;;) {
			size_t i;
			if (parse_keyword(c, &w))
				return IMAP_PARSE_BAD;
			for (i = 0; i < sizeof(opts) / sizeof(*opts); i++)
				if (strcmp(w.s, opts[i].name) == 0)
					break;
			if (i == sizeof(opts) / sizeof(*opts))
				return failf(c, "unknown RETURN option",
					     w.s, w.len);
			s->ret |= opts[i].bit;
			if (accept_char(c, ')'))
				break;
			if (imap_parse_sp(c))
				return fail(c, "unterminated RETURN options");
		}
	}
	/* An empty list means ALL (RFC 4731 section 3.1). */
	if (s->ret == 0)
		s->ret = IMAP_SEARCH_RET_ALL;
	return imap_parse_sp(c);
}

/* Is the next atom WORD (case-insensitively), followed by SP? */
static bool next_word_is(struct imap_cmd *c, const char *word)
{
	size_t wl = strlen(word), end = line_end(c);

	return end - c->pos > wl && c->buf[c->pos + wl] == ' ' &&
	       strncasecmp(c->buf + c->pos, word, wl) == 0;
}

/* A charset name and the SP after it.  RFC 3501 section 6.4.4: an
 * unsupported charset is a NO with BADCHARSET, not a BAD. */
static int parse_search_charset(struct imap_cmd *c)
{
	struct imap_str cs;

	if (imap_parse_astring(c, &cs) || imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	if (!token_is(cs.s, cs.len, "UTF-8") && !token_is(cs.s, cs.len, "US-ASCII")) {
		c->error = "unsupported charset";
		return IMAP_PARSE_BADCHARSET;
	}
	return IMAP_PARSE_OK;
}

int imap_parse_search(struct imap_cmd *c, struct imap_search *s)
{
	memset(s, 0, sizeof(*s));
	c->depth = 0;
	if (next_word_is(c, "RETURN")) {
		c->pos += 6;
		if (parse_search_return(c, s))
			return IMAP_PARSE_BAD;
	}
	if (next_word_is(c, "CHARSET")) {
		c->pos += 8;
		int rc = parse_search_charset(c);
		if (rc != IMAP_PARSE_OK)
			return rc;
	}
	if (parse_search_list(c, s, false, &s->root))
		return IMAP_PARSE_BAD;
	return imap_parse_end(c);
}

static const struct {
	const char *name;
	enum imap_sort_key key;
} sort_keys[] = {
	{ "ARRIVAL", IMAP_SORT_ARRIVAL }, { "CC", IMAP_SORT_CC },
	{ "DATE", IMAP_SORT_DATE }, { "FROM", IMAP_SORT_FROM },
	{ "SIZE", IMAP_SORT_SIZE }, { "SUBJECT", IMAP_SORT_SUBJECT },
	{ "TO", IMAP_SORT_TO }, { "DISPLAYFROM", IMAP_SORT_DISPLAYFROM },
	{ "DISPLAYTO", IMAP_SORT_DISPLAYTO },
};

/* charset SP search-keys, as SORT and THREAD have them (RFC 5256 §5). */
static int parse_charset_keys(struct imap_cmd *c, struct imap_search *s)
{
	int rc = parse_search_charset(c);

	if (rc != IMAP_PARSE_OK)
		return rc;
	if (parse_search_list(c, s, false, &s->root))
		return IMAP_PARSE_BAD;
	return imap_parse_end(c);
}

int imap_parse_sort(struct imap_cmd *c, struct imap_sort *out)
{
	struct imap_str w;

	memset(out, 0, sizeof(*out));
	c->depth = 0;
	if (expect_char(c, '(', "expected a list of sort criteria"))
		return IMAP_PARSE_BAD;
	for (;;) {
		bool reverse = false;
		size_t i;
		if (parse_keyword(c, &w))
			return IMAP_PARSE_BAD;
		if (strcmp(w.s, "REVERSE") == 0) {
			reverse = true;
			if (imap_parse_sp(c) || parse_keyword(c, &w))
				return IMAP_PARSE_BAD;
		}
		for (i = 0; i < sizeof(sort_keys) / sizeof(*sort_keys); i++)
			if (strcmp(w.s, sort_keys[i].name) == 0)
				break;
		if (i == sizeof(sort_keys) / sizeof(*sort_keys))
			return failf(c, "unknown sort criterion", w.s, w.len);
		if (out->ncrit == IMAP_SORT_MAX)
			return fail(c, "too many sort criteria");
		out->crit[out->ncrit].key = sort_keys[i].key;
		out->crit[out->ncrit].reverse = reverse;
		out->ncrit++;
		if (accept_char(c, ')'))
			break;
		if (imap_parse_sp(c))
			return fail(c, "unterminated sort criteria");
	}
	if (imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	return parse_charset_keys(c, &out->search);
}

int imap_parse_thread(struct imap_cmd *c, struct imap_thread *out)
{
	struct imap_str w;

	memset(out, 0, sizeof(*out));
	c->depth = 0;
	if (parse_keyword(c, &w))
		return IMAP_PARSE_BAD;
	if (strcmp(w.s, "ORDEREDSUBJECT") == 0)
		out->alg = IMAP_THREAD_ORDEREDSUBJECT;
	else if (strcmp(w.s, "REFERENCES") == 0)
		out->alg = IMAP_THREAD_REFERENCES;
	else
		return failf(c, "unknown threading algorithm", w.s, w.len);
	if (imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	return parse_charset_keys(c, &out->search);
}

/* ------------------------------------------------------------------ */
/* STATUS, SELECT/EXAMINE                                               */
/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	unsigned bit;
} status_names[] = {
	{ "MESSAGES", IMAP_STATUS_MESSAGES },
	{ "RECENT", IMAP_STATUS_RECENT },
	{ "UIDNEXT", IMAP_STATUS_UIDNEXT },
	{ "UIDVALIDITY", IMAP_STATUS_UIDVALIDITY },
	{ "UNSEEN", IMAP_STATUS_UNSEEN },
	{ "DELETED", IMAP_STATUS_DELETED },
	{ "SIZE", IMAP_STATUS_SIZE },
	{ "HIGHESTMODSEQ", IMAP_STATUS_HIGHESTMODSEQ },
	{ "APPENDLIMIT", IMAP_STATUS_APPENDLIMIT },
	{ "MAILBOXID", IMAP_STATUS_MAILBOXID },
};

int imap_parse_status_items(struct imap_cmd *c, unsigned *mask)
{
	struct imap_str w;

	*mask = 0;
	if (expect_char(c, '(', "expected a list of status items"))
		return IMAP_PARSE_BAD;
	for (;;) {
		size_t i;
		if (parse_keyword(c, &w))
			return IMAP_PARSE_BAD;
		for (i = 0; i < sizeof(status_names) / sizeof(*status_names); i++)
			if (strcmp(w.s, status_names[i].name) == 0)
				break;
		if (i == sizeof(status_names) / sizeof(*status_names))
			return failf(c, "unknown status item", w.s, w.len);
		*mask |= status_names[i].bit;
		if (accept_char(c, ')'))
			return IMAP_PARSE_OK;
		if (imap_parse_sp(c))
			return fail(c, "unterminated status item list");
	}
}

/* A set the client knows exactly: no "*" and no "$" (RFC 7162 §3.2.5). */
static int parse_known_set(struct imap_cmd *c, struct imap_seqset *set)
{
	if (imap_parse_seqset(c, set))
		return IMAP_PARSE_BAD;
	if (set->star || set->dollar)
		return fail(c, "\"*\" and \"$\" are not allowed in QRESYNC");
	return IMAP_PARSE_OK;
}

/* "(" uidvalidity SP modseq [SP known-uids] [SP seq-match-data] ")" */
static int parse_qresync(struct imap_cmd *c, struct imap_select_params *p)
{
	if (imap_parse_sp(c) || expect_char(c, '(', "expected QRESYNC (...)") ||
	    parse_nz_number(c, &p->uidvalidity) || imap_parse_sp(c) ||
	    parse_nz_number64(c, &p->modseq))
		return IMAP_PARSE_BAD;
	if (accept_char(c, ')'))
		return IMAP_PARSE_OK;
	if (imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	if (cur(c) != '(') {
		if (parse_known_set(c, &p->known_uids))
			return IMAP_PARSE_BAD;
		if (accept_char(c, ')'))
			return IMAP_PARSE_OK;
		if (imap_parse_sp(c))
			return IMAP_PARSE_BAD;
	}
	if (expect_char(c, '(', "expected QRESYNC sequence match data") ||
	    parse_known_set(c, &p->known_seqs) || imap_parse_sp(c) ||
	    parse_known_set(c, &p->known_seq_uids) ||
	    expect_char(c, ')', "unterminated QRESYNC sequence match data"))
		return IMAP_PARSE_BAD;
	return expect_char(c, ')', "unterminated QRESYNC parameters");
}

int imap_parse_select_params(struct imap_cmd *c, struct imap_select_params *p)
{
	struct imap_str w;

	memset(p, 0, sizeof(*p));
	if (imap_parse_at_end(c))
		return IMAP_PARSE_OK;
	if (imap_parse_sp(c) || expect_char(c, '(', "expected ( after mailbox"))
		return IMAP_PARSE_BAD;
	for (;;) {
		if (parse_keyword(c, &w))
			return IMAP_PARSE_BAD;
		if (strcmp(w.s, "CONDSTORE") == 0 && !p->condstore) {
			p->condstore = true;
		} else if (strcmp(w.s, "QRESYNC") == 0 && !p->qresync) {
			p->qresync = true;
			if (parse_qresync(c, p))
				return IMAP_PARSE_BAD;
		} else {
			return failf(c, "unknown or repeated SELECT parameter",
				     w.s, w.len);
		}
		if (accept_char(c, ')'))
			break;
		if (imap_parse_sp(c))
			return fail(c, "unterminated SELECT parameters");
	}
	return imap_parse_end(c);
}

/* ------------------------------------------------------------------ */
/* APPEND, ENABLE, ID                                                   */
/* ------------------------------------------------------------------ */

static int parse_append_message(struct imap_cmd *c, struct imap_append *a,
				bool need8)
{
	const struct imap_literal *lit;
	bool allow8 = need8 || (c->flags & IMAP_PARSE_BINARY);
	int ch = cur(c);

	if (ch != '{' && ch != '~')
		return fail(c, ch == '"' ? "the message must be a literal"
					 : "expected the message literal");
	if (take_literal(c, allow8, &lit))
		return IMAP_PARSE_BAD;
	if (need8 && !lit->literal8)
		return fail(c, "UTF8 needs a literal8");
	a->message.s = c->buf + lit->data;
	a->message.len = lit->len;
	a->literal8 = lit->literal8;
	/* NUL is only for literal8 (RFC 3516 section 4.4). */
	if (!lit->literal8 && memchr(a->message.s, '\0', lit->len))
		return fail(c, "NUL in message; use a literal8");
	return IMAP_PARSE_OK;
}

int imap_parse_append(struct imap_cmd *c, struct imap_append *a)
{
	memset(a, 0, sizeof(*a));
	if (imap_parse_mailbox(c, &a->mailbox) || imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	if (cur(c) == '(') {
		if (imap_parse_flag_list(c, &a->flags) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
	}
	if (cur(c) == '"') {
		if (imap_parse_datetime(c, &a->date) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		a->has_date = true;
	}
	/* RFC 6855 section 4: append-data =/ "UTF8" SP "(" literal8 ")" */
	if (next_word_is(c, "UTF8")) {
		if (!(c->flags & IMAP_PARSE_UTF8))
			return fail(c, "UTF8 append data needs ENABLE UTF8=ACCEPT");
		c->pos += 5;
		a->utf8 = true;
		if (expect_char(c, '(', "expected ( after UTF8") ||
		    parse_append_message(c, a, true) ||
		    expect_char(c, ')', "expected ) after UTF8 literal"))
			return IMAP_PARSE_BAD;
	} else if (parse_append_message(c, a, false)) {
		return IMAP_PARSE_BAD;
	}
	return imap_parse_end(c);
}

int imap_parse_enable(struct imap_cmd *c, struct imap_str **caps,
		      size_t *ncaps)
{
	size_t cap = 0;

	*caps = NULL;
	*ncaps = 0;
	do {
		if (imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		*caps = grow(c, *caps, *ncaps, &cap, sizeof(**caps));
		if (*caps == NULL)
			return nomem(c);
		if (parse_keyword(c, &(*caps)[*ncaps]))
			return IMAP_PARSE_BAD;
		(*ncaps)++;
	} while (!imap_parse_at_end(c));
	return IMAP_PARSE_OK;
}

int imap_parse_id(struct imap_cmd *c, struct imap_id_pair **pairs, size_t *n)
{
	size_t cap = 0;
	struct imap_str nil;

	*pairs = NULL;
	*n = 0;
	if (!imap_parse_peek(c, '(')) {
		if (imap_parse_nstring(c, &nil) || nil.s != NULL)
			return fail(c, "expected NIL or a parameter list");
		return imap_parse_end(c);
	}
	c->pos++;
	if (!accept_char(c, ')')) {
		for (;;) {
			*pairs = grow(c, *pairs, *n, &cap, sizeof(**pairs));
			if (*pairs == NULL)
				return nomem(c);
			struct imap_id_pair *p = &(*pairs)[*n];
			if (imap_parse_string(c, &p->field) || imap_parse_sp(c) ||
			    imap_parse_nstring(c, &p->value))
				return IMAP_PARSE_BAD;
			(*n)++;
			if (accept_char(c, ')'))
				break;
			if (imap_parse_sp(c))
				return fail(c, "unterminated ID parameter list");
		}
	}
	return imap_parse_end(c);
}

/* ------------------------------------------------------------------ */
/* LIST (RFC 3501 section 6.3.8, RFC 5258 section 3)                    */
/* ------------------------------------------------------------------ */

/* Skip one tagged-ext-comp element: an astring or a parenthesised group
 * (RFC 9051 tagged-ext-comp), bounded in depth. */
static int skip_ext_comp(struct imap_cmd *c)
{
	struct imap_str tmp;

	if (!accept_char(c, '('))
		return imap_parse_astring(c, &tmp);
	if (++c->depth > IMAP_MAX_DEPTH)
		return fail(c, "option value nested too deeply");
	if (!accept_char(c, ')')) {
		for (;;) {
			if (skip_ext_comp(c))
				return IMAP_PARSE_BAD;
			if (accept_char(c, ')'))
				break;
			if (imap_parse_sp(c))
				return fail(c, "unterminated option value");
		}
	}
	c->depth--;
	return IMAP_PARSE_OK;
}

/* "(" [option *(SP option)] ")" where option = atom [SP "(" value ")"]. */
static int parse_list_opts(struct imap_cmd *c, struct imap_list *l, bool ret)
{
	static const struct {
		const char *name;
		unsigned sel, ret;
	} known[] = {
		{ "SUBSCRIBED", IMAP_LIST_SEL_SUBSCRIBED, IMAP_LIST_RET_SUBSCRIBED },
		{ "REMOTE", IMAP_LIST_SEL_REMOTE, 0 },
		{ "RECURSIVEMATCH", IMAP_LIST_SEL_RECURSIVEMATCH, 0 },
		{ "SPECIAL-USE", IMAP_LIST_SEL_SPECIAL_USE, IMAP_LIST_RET_SPECIAL_USE },
		{ "CHILDREN", 0, IMAP_LIST_RET_CHILDREN },
		{ "STATUS", 0, IMAP_LIST_RET_STATUS },
	};
	struct imap_list_opt **v = ret ? &l->ret : &l->sel;
	size_t *n = ret ? &l->nret : &l->nsel, cap = 0;

	if (expect_char(c, '(', "expected a list of options"))
		return IMAP_PARSE_BAD;
	if (accept_char(c, ')'))
		return IMAP_PARSE_OK;
	for (;;) {
		*v = grow(c, *v, *n, &cap, sizeof(**v));
		if (*v == NULL)
			return nomem(c);
		struct imap_list_opt *o = &(*v)[*n];
		if (parse_keyword(c, &o->name))
			return IMAP_PARSE_BAD;
		(*n)++;
		unsigned bit = 0;
		for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++)
			if (strcmp(o->name.s, known[i].name) == 0)
				bit = ret ? known[i].ret : known[i].sel;
		l->known |= bit;
		if (imap_parse_peek(c, ' ') && c->pos + 1 < c->len &&
		    c->buf[c->pos + 1] == '(') {
			c->pos++;
			size_t start = c->pos;
			if (bit == IMAP_LIST_RET_STATUS) {
				if (imap_parse_status_items(c, &l->status_items))
					return IMAP_PARSE_BAD;
			} else if (skip_ext_comp(c)) {
				return IMAP_PARSE_BAD;
			}
			o->value.s = arena_strndup(c, c->buf + start,
						   c->pos - start);
			o->value.len = c->pos - start;
			if (o->value.s == NULL)
				return nomem(c);
		} else if (bit == IMAP_LIST_RET_STATUS) {
			return fail(c, "STATUS return option needs a list");
		}
		if (accept_char(c, ')'))
			return IMAP_PARSE_OK;
		if (imap_parse_sp(c))
			return fail(c, "unterminated option list");
	}
}

int imap_parse_list(struct imap_cmd *c, struct imap_list *l)
{
	size_t cap = 0;

	memset(l, 0, sizeof(*l));
	c->depth = 0;
	if (cur(c) == '(') {
		l->extended = true;
		if (parse_list_opts(c, l, false) || imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		if ((l->known & IMAP_LIST_SEL_RECURSIVEMATCH) &&
		    !(l->known & (IMAP_LIST_SEL_SUBSCRIBED |
				  IMAP_LIST_SEL_SPECIAL_USE)))
			return fail(c, "RECURSIVEMATCH needs another selection "
				       "option");
	}
	if (imap_parse_mailbox(c, &l->reference) || imap_parse_sp(c))
		return IMAP_PARSE_BAD;
	bool multi = accept_char(c, '(');
	if (multi)
		l->extended = true;
	for (;;) {
		l->patterns = grow(c, l->patterns, l->npatterns, &cap,
				   sizeof(*l->patterns));
		if (l->patterns == NULL)
			return nomem(c);
		if (imap_parse_list_mailbox(c, &l->patterns[l->npatterns]))
			return IMAP_PARSE_BAD;
		l->npatterns++;
		if (!multi || accept_char(c, ')'))
			break;
		if (imap_parse_sp(c))
			return fail(c, "unterminated pattern list");
	}
	if (!imap_parse_at_end(c)) {
		if (imap_parse_sp(c))
			return IMAP_PARSE_BAD;
		if (!next_word_is(c, "RETURN"))
			return fail(c, "expected RETURN");
		c->pos += 7;
		l->extended = true;
		if (parse_list_opts(c, l, true))
			return IMAP_PARSE_BAD;
	}
	return imap_parse_end(c);
}
