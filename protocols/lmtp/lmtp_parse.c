/*
 * lmtp_parse.c - parsing for the LMTP front-end: envelope paths, ESMTP
 * parameters, recipient lookup names and the dot-stuffed DATA stream.
 *
 * Pure functions over caller buffers; lmtp.c acts on their results.  The
 * grammar is RFC 5321 section 4.1.2, read leniently where real clients
 * differ from it (a space after "FROM:"), strictly where a mistake could
 * deliver to the wrong place.
 */
#include "protocols/lmtp/lmtp_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_alnum(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= 'A' && ch <= 'Z');
}

static char ascii_lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

int lmtp_parse_path(char *arg, bool allow_null, char **mailbox, char **params)
{
	char *p = arg;
	char *start;
	bool quoted = false;

	while (*p == ' ')
		p++;
	if (*p++ != '<')
		return -1;
	/* A source route "@a,@b:" MUST be accepted and SHOULD be ignored
	 * (RFC 5321 section 4.1.2, A-d-l). */
	if (*p == '@') {
		while (*p != ':') {
			if (*p == '\0' || *p == '>' || *p == ' ' || *p == '"')
				return -1;
			p++;
		}
		p++;
	}
	start = p;
	for (; *p != '\0'; p++) {
		if (quoted) {
			if (*p == '\\') {
				if (p[1] == '\0')
					return -1;
				p++;
			} else if (*p == '"') {
				quoted = false;
			}
			continue;
		}
		if (*p == '"')
			quoted = true;
		else if (*p == '>')
			break;
		else if (*p == '<' || *p == ' ' || *p == '\t')
			return -1;
	}
	if (*p != '>')
		return -1;
	*p++ = '\0';
	if (*start == '\0' && !allow_null)
		return -1;
	if (*start == '@')
		return -1;
	if (*p == ' ') {
		while (*p == ' ')
			p++;
	} else if (*p != '\0') {
		return -1;
	}
	*mailbox = start;
	*params = p;
	return 0;
}

int lmtp_param_next(char **pp, char **keyword, char **value)
{
	char *p = *pp;

	while (*p == ' ')
		p++;
	if (*p == '\0') {
		*pp = p;
		return 0;
	}
	/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
	if (!is_alnum((unsigned char)*p))
		return -1;
	*keyword = p;
	while (is_alnum((unsigned char)*p) || *p == '-')
		p++;
	*value = NULL;
	if (*p == '=') {
		*p++ = '\0';
		*value = p;
		/* esmtp-value = 1*(%d33-60 / %d62-126) */
		while ((unsigned char)*p >= 33 && (unsigned char)*p <= 126 && *p != '=')
			p++;
		if (p == *value)
			return -1;
	}
	if (*p == ' ')
		*p++ = '\0';
	else if (*p != '\0')
		return -1;
	*pp = p;
	return 1;
}

/* Append a copy of "A" or "A@B" to OUT unless it is already there. */
static void candidate_add(char *out[], size_t *n, const char *a, const char *b)
{
	char *s;

	if (*n >= LMTP_MAX_CANDIDATES)
		return;
	if (b != NULL) {
		if (asprintf(&s, "%s@%s", a, b) < 0)
			return;
	} else {
		s = strdup(a);
		if (s == NULL)
			return;
	}
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(out[i], s) == 0) {
			free(s);
			return;
		}
	}
	out[(*n)++] = s;
}

/*
 * Split MAILBOX into a malloc'd, unquoted local part and a pointer to the
 * domain (NULL if there is none).  RFC 5321 section 4.1.2: all quoted forms
 * of a local part are equivalent to the unquoted one.
 */
static char *split_mailbox(const char *mailbox, const char **domain)
{
	size_t len = strlen(mailbox);
	char *local = malloc(len + 1);
	const char *p = mailbox;
	size_t n = 0;

	if (local == NULL)
		return NULL;
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (*p == '\0')
				goto bad;
			if (*p == '\\' && *++p == '\0')
				goto bad;
			local[n++] = *p;
		}
		p++;
	} else {
		while (*p != '\0' && *p != '@')
			local[n++] = *p++;
	}
	local[n] = '\0';
	if (*p == '@') {
		if (p[1] == '\0' || strchr(p + 1, '@') != NULL)
			goto bad;
		*domain = p + 1;
	} else if (*p == '\0') {
		*domain = NULL;
	} else {
		goto bad;
	}
	if (n == 0)
		goto bad;
	return local;
bad:
	free(local);
	return NULL;
}

size_t lmtp_user_candidates(const char *mailbox, char *out[LMTP_MAX_CANDIDATES])
{
	const char *domain = NULL;
	char *local = split_mailbox(mailbox, &domain);
	char *lc_domain = NULL;
	char *plus;
	bool upper = false;
	size_t n = 0;

	if (local == NULL)
		return 0;
	/* "alice+lists" is alice (DESIGN section 4); a leading '+' is not a
	 * detail separator, or the name would become empty. */
	plus = strchr(local, '+');
	if (plus != NULL && plus != local)
		*plus = '\0';
	if (domain != NULL) {
		lc_domain = strdup(domain);
		if (lc_domain == NULL)
			goto out;
		for (char *q = lc_domain; *q != '\0'; q++)
			*q = ascii_lower(*q);
		candidate_add(out, &n, local, domain);
		candidate_add(out, &n, local, lc_domain);
	}
	candidate_add(out, &n, local, NULL);
	for (char *q = local; *q != '\0'; q++) {
		if (*q != ascii_lower(*q)) {
			upper = true;
			*q = ascii_lower(*q);
		}
	}
	if (upper) {
		if (lc_domain != NULL)
			candidate_add(out, &n, local, lc_domain);
		candidate_add(out, &n, local, NULL);
	}
out:
	free(lc_domain);
	free(local);
	return n;
}

void lmtp_dot_init(struct lmtp_dot_decoder *d)
{
	d->state = LMTP_DOT_BOL;
}

/*
 * RFC 5321 section 4.5.2: a line that is a single "." ends the data; a line
 * that starts with "." and has more loses that first ".".  The CRLF before
 * the terminating "." belongs to the last line of the message.  A bare LF
 * ends a line too (lenient, as Postfix and Dovecot are).
 */
size_t lmtp_dot_decode(struct lmtp_dot_decoder *d, const char *p, size_t len,
                       lmtp_emit_fn emit, void *arg, bool *done)
{
	size_t i = 0;

	*done = false;
	while (i < len) {
		switch (d->state) {
		case LMTP_DOT_BOL:
			if (p[i] == '.') {
				d->state = LMTP_DOT_DOT;
				i++;
			} else {
				d->state = LMTP_DOT_MID;
			}
			break;
		case LMTP_DOT_DOT:
			if (p[i] == '\n') {
				*done = true;
				return i + 1;
			}
			if (p[i] == '\r') {
				d->state = LMTP_DOT_DOT_CR;
				i++;
			} else {
				/* A stuffed dot: dropped; the byte is content. */
				d->state = LMTP_DOT_MID;
			}
			break;
		case LMTP_DOT_DOT_CR:
			if (p[i] == '\n') {
				*done = true;
				return i + 1;
			}
			/* ".\r" then more: the dot was stuffing, the CR is content. */
			emit(arg, "\r", 1);
			d->state = LMTP_DOT_MID;
			break;
		case LMTP_DOT_MID: {
			/* Content runs to the next line that starts with a dot,
			 * or to the end of the input: one emit for all the lines
			 * between, not one a line (the store's append has a cost
			 * per call, and a 256 KiB message has thousands of lines). */
			size_t j = i;
			for (;;) {
				const char *nl = memchr(p + j, '\n', len - j);
				if (nl == NULL) {
					j = len;
					break;
				}
				j = (size_t)(nl - p) + 1;
				if (j == len || p[j] == '.') {
					d->state = LMTP_DOT_BOL;
					break;
				}
			}
			emit(arg, p + i, j - i);
			i = j;
			break;
		}
		}
	}
	return len;
}
