/*
 * lmtp_parse.h - the pure parsing half of the LMTP front-end: envelope
 * paths and ESMTP parameters (RFC 5321 section 4.1.2), the recipient names
 * to look up in the store (DESIGN section 4), and the DATA decoder that
 * removes dot-stuffing (RFC 5321 section 4.5.2).
 *
 * Nothing here knows a connection or the store, so each piece can be unit
 * tested or fuzzed alone.  Private to protocols/lmtp/.
 */
#ifndef ONEBOX_LMTP_PARSE_H
#define ONEBOX_LMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Parse a path ("<a@b>" or, with ALLOW_NULL, "<>") followed by optional
 * parameters, in place.  ARG is what follows "FROM:" or "TO:"; spaces before
 * the '<' are tolerated (a common client habit).  A source route
 * ("<@x,@y:a@b>") is accepted and dropped (RFC 5321 section 4.1.1.3).
 * On success *MAILBOX points at the NUL-terminated mailbox ("" for the null
 * path) and *PARAMS at the parameters ("" if none); returns 0.  Returns -1
 * on a syntax error.
 */
int lmtp_parse_path(char *arg, bool allow_null, char **mailbox, char **params);

/*
 * Take the next ESMTP parameter (esmtp-keyword ["=" esmtp-value]) from *P,
 * in place, and advance *P.  *VALUE is NULL when there is no "=".
 * Returns 1 for a parameter, 0 at the end, -1 on a syntax error.
 */
int lmtp_param_next(char **p, char **keyword, char **value);

/* The most names lmtp_user_candidates() produces. */
#define LMTP_MAX_CANDIDATES 5

/*
 * The store user names to try, in order, for recipient MAILBOX (as returned
 * by lmtp_parse_path): a quoted local part is unquoted, a "+detail" is
 * dropped, then "local@domain" as given, "local@domain" with the domain in
 * lower case, "local"; and if the local part has upper-case letters the same
 * two again with it in lower case (RFC 5321 section 2.4 advises against
 * case-sensitive local parts).  Duplicates are left out.  Fills OUT with
 * malloc'd strings the caller frees and returns their number (0 on a
 * malformed mailbox or out of memory).
 */
size_t lmtp_user_candidates(const char *mailbox, char *out[LMTP_MAX_CANDIDATES]);

/*
 * The DATA decoder.  It consumes the bytes after "354" up to and including
 * the terminating "." line, and hands the message content, dot-stuffing
 * removed, to EMIT in runs: a run ends only where a line starts with a dot
 * or where the input does.  Line ends are passed through as received (CRLF
 * or bare LF); the store normalises them.  No line-length limit applies.
 */
enum lmtp_dot_state {
	LMTP_DOT_BOL,    /* at the start of a line */
	LMTP_DOT_DOT,    /* a '.' began this line */
	LMTP_DOT_DOT_CR, /* ".\r" began this line */
	LMTP_DOT_MID,    /* inside a line */
};

struct lmtp_dot_decoder {
	enum lmtp_dot_state state;
};

typedef void (*lmtp_emit_fn)(void *arg, const char *p, size_t len);

/* Start decoding a new message. */
void lmtp_dot_init(struct lmtp_dot_decoder *d);

/*
 * Decode a prefix of P[0..LEN).  Returns the number of bytes consumed; when
 * the terminator was consumed, sets *DONE and stops right after it, so the
 * bytes that follow (pipelined commands) are left to the caller.  Otherwise
 * consumes everything.
 */
size_t lmtp_dot_decode(struct lmtp_dot_decoder *d, const char *p, size_t len,
                       lmtp_emit_fn emit, void *arg, bool *done);

#endif
