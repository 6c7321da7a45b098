/*
 * imap_mutf7.h - modified UTF-7 mailbox names (RFC 3501 section 5.1.3).
 *
 * IMAP4rev1 clients name mailboxes in modified UTF-7 on the wire; the store
 * keeps names in UTF-8.  These two pure functions convert between the two.
 * Both are strict: they produce, and accept, only the one canonical form the
 * RFC allows, so a name has exactly one spelling on each side.  After ENABLE
 * UTF8=ACCEPT (RFC 6855 section 3) the front-end skips them entirely.
 */
#ifndef ONEBOX_IMAP_MUTF7_H
#define ONEBOX_IMAP_MUTF7_H

#include <stddef.h>

/*
 * The largest output imap_mutf7_encode() can produce for LEN input octets,
 * including the terminating NUL.  The worst case is an isolated control
 * character, which costs "&" + three base64 characters + "-".
 */
#define IMAP_MUTF7_ENCODED_MAX(len) ((len) * 5 + 1)

/*
 * Decode the modified UTF-7 name SRC (LEN octets, no NUL needed) into UTF-8
 * at DST, which has room for DSTCAP octets; DSTCAP = LEN + 1 always suffices,
 * since no decoded character is longer than its encoding.  The result is NUL
 * terminated and its length, without the NUL, stored in *DSTLEN.
 *
 * Returns 0 on success and -1 when SRC is not canonical modified UTF-7:
 * an octet outside printable US-ASCII, an "&" run that is not closed by "-",
 * a base64 character outside the modified alphabet, leftover bits that are
 * not zero or amount to a whole character, an encoded printable US-ASCII
 * character, an empty or null shift ("-&" between two runs), a lone or
 * reversed UTF-16 surrogate, a decoded NUL, or an output that would not fit.
 * DST is unspecified after a failure.
 */
int imap_mutf7_decode(const char *src, size_t len, char *dst, size_t dstcap,
		      size_t *dstlen);

/*
 * Encode the UTF-8 name SRC (LEN octets) as modified UTF-7 at DST, which has
 * room for DSTCAP octets (IMAP_MUTF7_ENCODED_MAX(LEN) always suffices).  The
 * result is NUL terminated and its length stored in *DSTLEN.  Consecutive
 * non-printable characters share one base64 run, as the RFC requires.
 *
 * Returns 0 on success and -1 when SRC is not valid UTF-8 (overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences), contains NUL,
 * or the output does not fit.
 */
int imap_mutf7_encode(const char *src, size_t len, char *dst, size_t dstcap,
		      size_t *dstlen);

/*
 * Return 1 when the LEN octets at S are valid UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF) with no NUL, else 0.  Used for
 * mailbox names and quoted strings when UTF-8 is enabled.
 */
int imap_utf8_valid(const char *s, size_t len);

#endif
