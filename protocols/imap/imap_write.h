/*
 * imap_write.h - building IMAP responses in a growable byte buffer.
 *
 * The front-end assembles each response, or a batch of them, in an
 * imap_wbuf and hands the bytes to the connection in one piece.  The
 * helpers here know the wire forms of RFC 3501 section 4: when a value can
 * be an atom, when it must be quoted, when it needs a literal, how NIL and
 * lists look, how mailbox names are encoded and how a set of UIDs is
 * compacted.  They never fail midway: on allocation failure the buffer is
 * marked and later appends do nothing, so callers check once at the end.
 */
#ifndef ONEBOX_IMAP_WRITE_H
#define ONEBOX_IMAP_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/imap/imap_parser.h"

struct imap_wbuf {
	char *data;
	size_t len, cap;
	bool oom; /* an allocation failed; the content is incomplete */
};

/* Strings longer than this go out as literals even when they could be
 * quoted: long quoted strings are harder on clients than literals. */
#define IMAP_WRITE_QUOTED_MAX 1024

/* Writer options, from the session's state. */
enum {
	IMAP_WRITE_UTF8 = 1 << 0, /* UTF-8 enabled: 8-bit text may be quoted
				   * and names are not mUTF-7 encoded */
};

/* Prepare W, empty.  Allocates nothing until the first append. */
void imap_wbuf_init(struct imap_wbuf *w);

/* Release W's memory; W is empty and usable again. */
void imap_wbuf_free(struct imap_wbuf *w);

/* Empty W but keep its memory for the next response. */
void imap_wbuf_reset(struct imap_wbuf *w);

/* Append LEN raw octets from P.  The other helpers are built on this. */
void imap_write_bytes(struct imap_wbuf *w, const void *p, size_t len);

/* Append one raw octet. */
void imap_write_byte(struct imap_wbuf *w, char c);

/* Append the NUL-terminated raw text S (protocol words, not client data). */
void imap_write_str(struct imap_wbuf *w, const char *s);

/* Append "\r\n". */
void imap_write_crlf(struct imap_wbuf *w);

/* Append an unsigned number in decimal. */
void imap_write_u64(struct imap_wbuf *w, uint64_t v);

/* Append "NIL". */
void imap_write_nil(struct imap_wbuf *w);

/* Append a literal: "{LEN}\r\n" and the octets.  Responses never use the
 * non-synchronizing form (RFC 7888 section 3). */
void imap_write_literal(struct imap_wbuf *w, const void *p, size_t len);

/* Append a literal8: "~{LEN}\r\n" and the octets (RFC 3516), for BINARY
 * data that may contain NUL. */
void imap_write_literal8(struct imap_wbuf *w, const void *p, size_t len);

/*
 * Append the string P/LEN as a quoted string when it can be one, else as a
 * literal (RFC 3501 section 4.3): a literal is used when the value holds CR,
 * LF or NUL, holds 8-bit octets (unless IMAP_WRITE_UTF8 is in FLAGS and the
 * value is valid UTF-8), or is longer than IMAP_WRITE_QUOTED_MAX.  Quoted
 * output escapes '"' and '\'.
 */
void imap_write_string(struct imap_wbuf *w, const char *p, size_t len,
		       unsigned flags);

/* As imap_write_string(), but a value that is a valid atom (1*ASTRING-CHAR,
 * not "NIL") is written bare. */
void imap_write_astring(struct imap_wbuf *w, const char *p, size_t len,
			unsigned flags);

/* As imap_write_string(), but P == NULL writes NIL. */
void imap_write_nstring(struct imap_wbuf *w, const char *p, size_t len,
			unsigned flags);

/*
 * Append a mailbox name given in UTF-8: "INBOX" as is, otherwise encoded to
 * modified UTF-7 (RFC 3501 section 5.1.3) unless IMAP_WRITE_UTF8 is set,
 * then written as an astring.  A name that is not valid UTF-8 is written
 * raw as a string; the store should never hold one.
 */
void imap_write_mailbox(struct imap_wbuf *w, const char *name, size_t len,
			unsigned flags);

/* Append "(" FLAGS[0] SP FLAGS[1] ... ")": flags are atoms or "\Atom",
 * written raw. */
void imap_write_flag_list(struct imap_wbuf *w, const char *const *flags,
			  size_t n);

/*
 * Append the numbers V[0..N-1] as a compact sequence set: each run of
 * consecutive ascending values becomes "lo:hi", and runs are joined by ",".
 * The order of V is kept, not sorted: COPYUID's two sets correspond element
 * by element (RFC 4315 section 3), so the source set must be written in the
 * same order as the destination one.  Writes nothing for N == 0.
 */
void imap_write_uid_set(struct imap_wbuf *w, const uint32_t *v, size_t n);

/* Append sorted merged RANGES (as imap_seqset_resolve() makes them), as a
 * sequence set; for VANISHED and MODIFIED. */
void imap_write_ranges(struct imap_wbuf *w, const struct imap_range *r,
		       size_t n);

/*
 * Append the name of a FETCH item as a response gives it, for example
 * "BODY[1.2.HEADER.FIELDS (From Subject)]<0>" (RFC 3501 section 7.4.2: the
 * partial's origin only) or "BINARY.SIZE[3]".  Header names keep the case
 * the client used.  Only for BODY_SECTION, BINARY and BINARY_SIZE items;
 * other kinds write their plain name.
 */
void imap_write_fetch_name(struct imap_wbuf *w,
			   const struct imap_fetch_att *att, unsigned flags);

#endif
