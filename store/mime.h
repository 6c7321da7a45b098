/*
 * mime.h - the message/MIME parser that runs once per message at delivery
 * (DESIGN §3 "Metadata at ingest"), its compact serialised form, and the
 * decoding helpers SEARCH and the front-ends share.
 *
 * mime_parse() turns the raw, CRLF-normalised octets of a message into a
 * protocol-neutral tree: for every MIME part the offsets of its header and
 * body, its body's line count, its Content-* fields (RFC 2045, 2046, 2183,
 * 2231, 3282, 2557, 1864) and, for the top-level message and every
 * message/rfc822 part, the fields an IMAP ENVELOPE is made of (RFC 3501
 * §7.4.2) with the address lists parsed (RFC 5322 §3.4, §4.4).  It knows no
 * IMAP syntax: the IMAP front-end formats ENVELOPE and BODYSTRUCTURE from it.
 *
 * Malformed input never fails a parse: it degrades to the most useful
 * structure (rules below, at each function).  Work and memory are bounded:
 * O(message size x MIME_MAX_DEPTH) time, at most MIME_MAX_PARTS parts.
 *
 * Conventions.  A struct mime_str with p == NULL is absent (IMAP's NIL); an
 * empty but present value has p != NULL and len 0.  Strings are not NUL
 * terminated.  Case-insensitive tokens (media type and subtype, parameter
 * names, transfer encoding, disposition type) are lower-cased; every other
 * value is kept as written, except where a function says it decodes.  All
 * offsets are octet offsets from the start of the message.
 *
 * Lifetime.  A tree owns its memory (one arena) and points into the message
 * it was parsed from or loaded against: the message octets must stay alive
 * and unchanged until mime_free().  Trees are immutable and may be read from
 * several threads at once.
 */
#ifndef ONEBOX_MIME_H
#define ONEBOX_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on hostile structure.  A multipart or message/rfc822 part that
 * would nest deeper than MIME_MAX_DEPTH (the top-level message is depth 0),
 * or that would need parts beyond MIME_MAX_PARTS, becomes an opaque
 * application/octet-stream leaf flagged MIME_PART_TRUNCATED.  Parameters
 * beyond MIME_MAX_PARAMS in one field, and addresses beyond MIME_MAX_ADDRS in
 * one field, are dropped. */
#define MIME_MAX_DEPTH 64
#define MIME_MAX_PARTS 10000
#define MIME_MAX_PARAMS 128
#define MIME_MAX_ADDRS 4096

struct mime_str {
	const char *p; /* NULL: absent */
	size_t len;
};

/* A Content-Type or Content-Disposition parameter, after RFC 2231
 * processing: continuations (name*0, name*1, ...) are joined in section
 * order up to the first missing section, and extended values
 * (name*=charset'lang'%XX) are percent-decoded and converted to UTF-8.  NAME is then the bare lower-cased name and
 * MIME_PARAM_EXT is set; LANG holds the language tag, if one was given.
 * When the value's charset is unknown to iconv, the joined value is kept
 * still encoded, as a valid single RFC 2231 parameter: NAME ends in "*"
 * and VALUE is "charset'lang'%XX...".  If both "name" and an RFC 2231 form
 * of it are present, only the RFC 2231 one is kept (RFC 6266 §4.3 gives it
 * priority), at the position of whichever came first.
 *
 * IMAP4rev1 strings are 7-bit: a formatter that meets a non-ASCII VALUE
 * with MIME_PARAM_EXT set can write it back as name*=utf-8''%XX. */
enum { MIME_PARAM_EXT = 1u << 0 };
struct mime_param {
	struct mime_str name, value, lang;
	unsigned flags;
};

/* One address of an address list, as IMAP's ENVELOPE has it (RFC 3501
 * §7.4.2).  A mailbox has MAILBOX and HOST set (empty strings when the
 * source lacked them, e.g. "undisclosed-recipients" without a colon), NAME
 * the display name (quoted-pairs removed, words joined by one space,
 * encoded words left raw; for "addr (Comment)" the comment) and ADL the
 * obsolete source route ("@a,@b", RFC 5322 §4.4).  Group syntax: a start
 * marker has MAILBOX = group name and HOST NULL; the end marker has every
 * member NULL. */
struct mime_addr {
	struct mime_str name, adl, mailbox, host;
};
struct mime_addr_list {
	struct mime_addr *v;
	size_t n;
};

/* Address fields of an envelope, in RFC 3501 order. */
enum mime_addr_field {
	MIME_FROM, MIME_SENDER, MIME_REPLY_TO, MIME_TO, MIME_CC, MIME_BCC,
	MIME_ADDR_FIELDS
};

/* ENVELOPE data of one message.  Strings are the first occurrence of the
 * field, unfolded (RFC 5322 §2.2.3) with leading and trailing white space
 * removed, otherwise raw (encoded words are not decoded).  An absent field
 * is NULL; an address field that is absent or has no address is an empty
 * list.  The parser does NOT apply RFC 3501's rule that an empty Sender
 * or Reply-To takes the value of From: that is IMAP's, and the IMAP
 * ENVELOPE formatter applies it. */
struct mime_envelope {
	struct mime_str date, subject, in_reply_to, message_id;
	struct mime_addr_list addr[MIME_ADDR_FIELDS];
};

enum mime_enc {
	MIME_ENC_7BIT, /* also when Content-Transfer-Encoding is absent */
	MIME_ENC_8BIT,
	MIME_ENC_BINARY,
	MIME_ENC_QP,
	MIME_ENC_BASE64,
	MIME_ENC_OTHER, /* an unknown token: the body is opaque */
};

enum {
	/* Content-Type was absent or syntactically invalid: TYPE/SUBTYPE hold
	 * the default (RFC 2045 §5.2, RFC 2046 §5.1.5) and, for text/plain, a
	 * charset=us-ascii parameter. */
	MIME_PART_DEFAULT_TYPE = 1u << 0,
	/* A multipart in which no boundary delimiter line was found: it has one
	 * synthesised empty text/plain child (at the end of its body, all
	 * sizes 0), because IMAP's BODYSTRUCTURE cannot express a multipart
	 * without parts.  Dovecot answers the same. */
	MIME_PART_SYNTHETIC = 1u << 1,
	/* Structure was cut here by MIME_MAX_DEPTH or MIME_MAX_PARTS. */
	MIME_PART_TRUNCATED = 1u << 2,
	/* A multipart whose close-delimiter was missing: its last part runs to
	 * the end of the enclosing data (RFC 2046 §5.1.1 requires it; the
	 * flag is informational). */
	MIME_PART_NO_CLOSE = 1u << 3,
};

/*
 * One MIME part.  HDR is the part's header including the blank line that
 * ends it (IMAP's N.MIME, or HEADER for the top-level message); BODY
 * follows it (IMAP's N, or TEXT).  A header without a blank line runs to
 * the end of the part and the body is empty, at the part's end.  Lines are
 * only ever ended by a header's blank line: a first line with no colon is
 * a malformed header field, not the start of a body.
 *
 * LINES is the number of lines in the body: its CRLFs, plus one if the
 * body is non-empty and does not end with CRLF (a multipart child usually
 * does not: the CRLF before a delimiter belongs to it, RFC 2046 §5.1.1).
 *
 * Children: a multipart has NCHILDREN >= 1 parts in CHILD..next.  A
 * message/rfc822 part has exactly one child, the encapsulated message: its
 * HDR is that message's header (IMAP's N.HEADER), its BODY the
 * message's body (N.TEXT), and the parent's ENV its envelope.  A
 * message/rfc822 part whose transfer encoding is not 7bit/8bit/binary
 * (forbidden by RFC 2046 §5.2.1) is not parsed and becomes
 * application/octet-stream.  Every other part is a leaf, ENV NULL.
 *
 * ID, DESCRIPTION and MD5 are the unfolded raw field values; LOCATION
 * has white space and enclosing quotes removed (RFC 2557 §4.4.1);
 * ENCODING is the lower-cased Content-Transfer-Encoding token (NULL when
 * absent: IMAP shows "7BIT"); DISPOSITION the lower-cased disposition type
 * with DISP_PARAMS; LANGUAGES the Content-Language tags in order.
 */
struct mime_part {
	struct mime_part *parent, *child, *next;
	size_t nchildren;
	struct mime_envelope *env;

	size_t hdr_off, hdr_len, body_off, body_len, lines;
	unsigned flags;
	enum mime_enc enc;

	struct mime_str type, subtype;
	struct mime_param *params;
	size_t nparams;
	struct mime_str id, description, encoding, md5, location;
	struct mime_str disposition;
	struct mime_param *disp_params;
	size_t ndisp_params;
	struct mime_str *languages;
	size_t nlanguages;
};

typedef struct mime_tree mime_tree;

/*
 * Parse the LEN octets of MSG, a message with CRLF line ends.  (Bare LF is
 * tolerated as a line end, so a non-normalised message parses the same
 * way, but offsets always refer to the octets given.)  Returns a new tree,
 * or NULL only when memory runs out: any content, however malformed,
 * yields a tree.  The top-level part's header is the message header and
 * its envelope is mime_envelope(tree).  Multipart bodies are split on
 * lines that are exactly "--" boundary, optionally followed by "--" and
 * transport padding (RFC 2046 §5.1.1); a line that merely starts with the
 * delimiter is not one, so one boundary being a prefix of another is
 * harmless.  Missing Content-Type is text/plain; charset=us-ascii, or
 * message/rfc822 in a multipart/digest; a multipart without a boundary
 * parameter is invalid and so is treated as text/plain (RFC 2045 §5.2).
 */
mime_tree *mime_parse(const char *msg, size_t len);

/* Free a tree from mime_parse() or mime_load().  NULL is allowed. */
void mime_free(mime_tree *tree);

/* The top-level part and the top-level envelope.  Valid until mime_free. */
const struct mime_part *mime_root(const mime_tree *tree);
const struct mime_envelope *mime_envelope(const mime_tree *tree);

/* The number of parts in the tree, the root and synthesised parts
 * included. */
size_t mime_part_count(const mime_tree *tree);

/*
 * Find the part that IMAP part number PATH[0].PATH[1]...PATH[N-1] names
 * (RFC 3501 §6.4.5), N >= 1, numbers from 1.  In a multipart, numbers
 * index children; part 1 of a message that is not multipart is its body,
 * that is, the message's top-level part itself; a message/rfc822 part's
 * numbers index the parts of the encapsulated message in the same way, so
 * that for such a part P, N.HEADER and N.TEXT are P->child's HDR and BODY.
 * Returns NULL if there is no such part.  With N == 0 returns the root.
 */
const struct mime_part *mime_find_part(const mime_tree *tree,
                                       const uint32_t *path, size_t n);

/* The part's charset: its charset parameter, else "us-ascii" for any text type
 * (RFC 2046 §4.1.2), else NULL. */
struct mime_str mime_part_charset(const struct mime_part *part);

/* Case-insensitive lookup of a parameter by lower-case NAME in a list;
 * NULL if absent. */
const struct mime_param *mime_param_get(const struct mime_param *params,
                                        size_t n, const char *name);

/*
 * Serialised form (implemented in mime.c).  mime_serialize() writes TREE into a newly malloc()ed
 * blob (*OUT, *OUTLEN; the caller frees): a version byte and varint-encoded
 * fields; strings that are octets of the message (nearly all of them) are
 * stored as offsets, only decoded or unfolded values as copies.  The form
 * is the same on every host.  Returns 0, or -1 when memory runs out.
 *
 * mime_load() rebuilds the tree from BLOB against the message MSG it was
 * made from.  Every length and offset is checked against BLOBLEN and
 * MSGLEN and the limits above; a blob that fails a check, was made by an
 * unknown version, or has trailing octets gives NULL (as does running out
 * of memory): the caller may then re-parse the message.  The result is
 * equal, field by field, to the tree that was serialised.
 */
int mime_serialize(const mime_tree *tree, unsigned char **out, size_t *outlen);
mime_tree *mime_load(const unsigned char *blob, size_t bloblen,
                     const char *msg, size_t msglen);

/* ---- header fields ---------------------------------------------------- */

/* One header field: NAME (white space before the colon removed, RFC 5322
 * §4.5), VALUE everything after the colon, still folded, without the final
 * CRLF; RAW/RAWLEN the whole field including its final line end (what
 * IMAP's HEADER.FIELDS returns).  A line that has no colon, or that starts
 * with white space at the head of the header, is a malformed field with
 * NAME_LEN 0. */
struct mime_field {
	const char *name, *value, *raw;
	size_t name_len, value_len, rawlen;
};

/*
 * Iterate over the fields of header HDR/LEN from *POS (start at 0).  Returns
 * 1 and fills *F, advancing *POS past the field; returns 0 at the end of
 * the header (its end, or an empty line, which is left unconsumed).
 */
int mime_header_next(const char *hdr, size_t len, size_t *pos,
                     struct mime_field *f);

/* Find the NTH (from 0) field named NAME (ASCII case-insensitive) in
 * HDR/LEN.  Returns 1 and fills *F if found, else 0. */
int mime_header_find(const char *hdr, size_t len, const char *name,
                     size_t nth, struct mime_field *f);

/* ---- decoding --------------------------------------------------------- */

/* A growable output buffer for the decoders.  Start zeroed; free .data
 * with free().  Decoders append to it; they return 0, or -1 when memory
 * runs out (the buffer then holds what was appended so far). */
struct mime_buf {
	char *data;
	size_t len, cap;
};

/* Append LEN octets of S. */
int mime_buf_put(struct mime_buf *out, const void *s, size_t len);

/* Unfold a header value (RFC 5322 §2.2.3: drop each CRLF that is followed
 * by white space) and trim white space at both ends. */
int mime_unfold(struct mime_buf *out, const char *s, size_t len);

/* Decode a base64 body.  Characters outside the alphabet are skipped and
 * "=" ends a quantum, so junk, line breaks and concatenated encodings are
 * tolerated (RFC 2045 §6.8); a trailing partial quantum yields the octets
 * it completes. */
int mime_decode_base64(struct mime_buf *out, const char *s, size_t len);

/* Decode a quoted-printable body (RFC 2045 §6.7): =XX in either case,
 * soft line breaks (with white space after the "=" allowed), trailing white
 * space on a line dropped; an "=" that starts neither is kept as is. */
int mime_decode_qp(struct mime_buf *out, const char *s, size_t len);

/* Decode S/LEN by ENC: base64, quoted-printable, or a copy. */
int mime_decode_body(struct mime_buf *out, enum mime_enc enc,
                     const char *s, size_t len);

/* Convert S/LEN from CHARSET (any name iconv knows; charset names are
 * case-insensitive) to UTF-8 and append it.  US-ASCII and UTF-8 are copied.
 * Returns 0; 1 if CHARSET is unknown (nothing appended); -1 when memory
 * runs out.  Invalid input sequences become U+FFFD. */
int mime_charset_to_utf8(struct mime_buf *out, const char *charset,
                         size_t charset_len, const char *s, size_t len);

/*
 * Decode the RFC 2047 encoded words in header value S/LEN to UTF-8 (for
 * SEARCH and display; ENVELOPE keeps raw values).  B and Q encodings; the
 * RFC 2231 §5 language suffix (charset*lang) is allowed; white space
 * between adjacent encoded words is dropped (RFC 2047 §6.2), and adjacent
 * words in one charset are joined before conversion, so a character split
 * across words survives.  An encoded word with an unknown charset or bad
 * syntax is left as it was.  Other octets, 8-bit ones included, are copied.
 * S should already be unfolded.
 */
int mime_decode_header(struct mime_buf *out, const char *s, size_t len);

/*
 * Does UTF-8 text HAY contain NEEDLE, ignoring case?  This is SEARCH's
 * substring match (RFC 3501 §6.4.4).  Folding is simple one-to-one case
 * folding for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic; other
 * characters match exactly, and invalid UTF-8 octets match only
 * themselves.  An empty needle matches.
 */
bool mime_search_match(const char *hay, size_t haylen,
                       const char *needle, size_t needlelen);

#endif
