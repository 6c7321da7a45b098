/*
 * imap_parser.h - the IMAP command assembler and argument parser.
 *
 * Nothing here does I/O or knows the store.  It has two layers:
 *
 *  1. The assembler (imap_asm_*) is fed the client's input one line (without
 *     CRLF) or one run of literal bytes at a time, and says after each step
 *     whether the command is complete, a literal must be read first (and
 *     whether the client waits for a "+" continuation), or the command is
 *     refused.  It enforces the size limits and gathers the whole command,
 *     line parts and literal data, into one buffer, recording where each
 *     literal lies so the parser can tell literal data from command text.
 *
 *  2. The parser (imap_cmd_* and imap_parse_*) reads an assembled command:
 *     imap_cmd_parse() takes the tag, the command name and a UID prefix; the
 *     command handler then calls the typed imap_parse_* helpers in the order
 *     its grammar gives (RFC 3501 section 9, RFC 9051 section 9).  A helper
 *     that fails leaves a short reason in cmd->error, meant for "tag BAD
 *     reason".  Everything a helper returns lives in the command's arena and
 *     stays valid until the next imap_cmd_parse() or imap_cmd_free().
 *
 * The parser is strict where the grammar is strict and never reads outside
 * the command buffer; results are bounded (nesting depth, arena size).
 *
 * Not fed to the assembler: the lines that follow AUTHENTICATE (SASL
 * responses) and the "DONE" that ends IDLE.  The front-end reads those raw.
 */
#ifndef ONEBOX_IMAP_PARSER_H
#define ONEBOX_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* Limits and literal modes                                             */
/* ------------------------------------------------------------------ */

/* Which non-synchronizing literals the server advertised (RFC 7888). */
enum imap_literal_mode {
	IMAP_LITERAL_SYNC_ONLY, /* neither: "{N+}" is a client error */
	IMAP_LITERAL_PLUS,      /* LITERAL+: "{N+}" of any size */
	IMAP_LITERAL_MINUS,     /* LITERAL-: "{N+}" only up to 4096 octets */
};

/* RFC 7888 section 5: the largest non-synchronizing literal under LITERAL-. */
#define IMAP_LITERAL_MINUS_MAX 4096

/* The deepest nesting of parentheses the parser follows (search keys,
 * generic extension values). */
#define IMAP_MAX_DEPTH 64

/* The longest tag the assembler remembers for an early refusal. */
#define IMAP_TAG_MAX 64

struct imap_limits {
	/* Longest line part (text between CRLFs), in octets.  RFC 2683
	 * section 3.2.1.5 asks servers to take at least 8000. */
	size_t max_line;
	/* Most octets in one command: its line parts, plus its literals
	 * unless the command is APPEND. */
	size_t max_command;
	/* Most literal octets in one APPEND command (APPENDLIMIT, RFC 7889);
	 * its line parts still count against max_command. */
	size_t max_append;
	/* A refused non-synchronizing literal up to this size is read and
	 * thrown away; a bigger one closes the connection (see
	 * imap_asm_line()).  0: always close.  One refused only for being
	 * over LITERAL-'s 4096 octets is read up to the size a synchronizing
	 * literal could have had instead (max_append for APPEND, else
	 * max_command), if that is more. */
	size_t max_discard;
	enum imap_literal_mode literal_mode;
};

/* ------------------------------------------------------------------ */
/* Layer 1: the command assembler                                       */
/* ------------------------------------------------------------------ */

/* Where a literal lies in the assembled command buffer. */
struct imap_literal {
	size_t marker; /* offset of its "{" (or the "~" of "~{") */
	size_t data;   /* offset of its first data octet */
	size_t len;    /* its length in octets */
	bool nonsync;  /* sent as "{N+}" */
	bool literal8; /* sent as "~{N}" (RFC 3516) */
};

/* What the front-end does next; returned by imap_asm_line() and
 * imap_asm_literal(). */
enum imap_asm_status {
	/* The command is whole: parse it with imap_cmd_parse(). */
	IMAP_ASM_COMPLETE,
	/* Read imap_asm_literal_left() octets and pass them to
	 * imap_asm_literal().  If imap_asm_needs_continuation() is true the
	 * client waits: send "+ ..." first. */
	IMAP_ASM_LITERAL,
	/* More of the command follows as the next line: pass it to
	 * imap_asm_line() (after a literal's data, the command goes on). */
	IMAP_ASM_NEED_LINE,
	/* The command is refused: answer it now with imap_asm_error() (see
	 * imap_asm_error_code() for TOOBIG) tagged with imap_asm_tag(), or
	 * untagged when there is no tag.  Then go on feeding: if the client
	 * still sends bytes of the refused command the assembler swallows them
	 * (it returns IMAP_ASM_LITERAL or IMAP_ASM_NEED_LINE while it does, and
	 * IMAP_ASM_DISCARDED at the end); otherwise the next line is a new
	 * command. */
	IMAP_ASM_REJECT,
	/* The tail of a refused command has been swallowed; nothing to answer.
	 * The next line is a new command. */
	IMAP_ASM_DISCARDED,
	/* A refused non-synchronizing literal is too large to swallow (see
	 * max_discard): send "* BYE" with imap_asm_error() ("* BYE [TOOBIG]"
	 * for the two literal size errors) and close the connection. */
	IMAP_ASM_CLOSE,
};

/* Why a command was refused. */
enum imap_asm_error {
	IMAP_ASM_OK,
	IMAP_ASM_ERR_LINE_TOO_LONG,
	IMAP_ASM_ERR_COMMAND_TOO_LONG,
	/* Over max_command or max_append: answer "NO [TOOBIG]" (RFC 4469)
	 * for APPEND, else BAD. */
	IMAP_ASM_ERR_LITERAL_TOO_BIG,
	/* "{N+}" over 4096 under LITERAL-: the BAD must carry [TOOBIG] for
	 * APPEND, and a BYE should (RFC 7888 section 5).  Answered "BAD
	 * [TOOBIG]" whatever the command, so a client can tell that a
	 * synchronizing literal would do. */
	IMAP_ASM_ERR_LITERAL_MINUS,
	IMAP_ASM_ERR_NONSYNC,         /* "{N+}" without LITERAL+/LITERAL- */
	IMAP_ASM_ERR_BAD_LITERAL,     /* malformed or absurd literal size */
	IMAP_ASM_ERR_NOMEM,
};

struct imap_asm {
	struct imap_limits lim;
	char *buf; /* the command so far, NUL terminated */
	size_t len, cap;
	struct imap_literal *lits;
	size_t nlits, lits_cap;
	size_t literal_left;    /* data octets still expected */
	size_t append_literals; /* literal octets so far in an APPEND */
	int state;              /* private */
	bool is_append;
	bool discarding;
	bool continuation;
	enum imap_asm_error err;
	char tag[IMAP_TAG_MAX + 1];
	size_t tag_len;
};

/*
 * Prepare ASM for a connection with the limits LIM (copied).  Allocates
 * nothing until the first line arrives.  A zero max_line, max_command or
 * max_append means 8192, 65536 and 64 MiB.  Release with imap_asm_free().
 */
void imap_asm_init(struct imap_asm *a, const struct imap_limits *lim);

/*
 * Change the literal mode on a live connection, for example after a
 * configuration reload.  Takes effect at the next literal announced.
 */
void imap_asm_set_literal_mode(struct imap_asm *a, enum imap_literal_mode m);

/* Release ASM's buffers.  ASM may be initialised again afterwards. */
void imap_asm_free(struct imap_asm *a);

/*
 * Feed one input line LINE of LEN octets, without its CRLF; it may hold NUL
 * octets.  Call it for the first line of a command and whenever the previous
 * call returned IMAP_ASM_NEED_LINE.  The line is copied.
 *
 * A line that ends in "{N}", "{N+}", "~{N}" or "~{N+}" announces a literal;
 * the status is then IMAP_ASM_LITERAL, or IMAP_ASM_REJECT when the literal
 * breaks a limit or the mode.  A refused synchronizing literal is simply
 * never sent: the client waits for "+" and receives the tagged answer
 * instead (RFC 3501 section 7.5).  A refused non-synchronizing literal is
 * already on its way (RFC 7888 section 4): if it is at most max_discard
 * octets (more under LITERAL-, see struct imap_limits) the assembler
 * swallows it and the rest of the command, otherwise the status is
 * IMAP_ASM_CLOSE and the connection must be closed after a BYE.  An
 * over-long line is refused the same way; its trailing literal
 * announcement, if any, is still honoured so that input stays in step.
 */
enum imap_asm_status imap_asm_line(struct imap_asm *a, const char *line,
				   size_t len);

/*
 * Feed up to LEN octets of literal data from P.  Call it while the last
 * status was IMAP_ASM_LITERAL, or after IMAP_ASM_REJECT when
 * imap_asm_in_literal() is true; it takes at most imap_asm_literal_left()
 * octets (possibly zero, for "{0}") and stores their number in *USED.
 * Returns IMAP_ASM_LITERAL while more data is due, then IMAP_ASM_NEED_LINE:
 * the command always goes on with another line, even a refused one whose
 * literal is being swallowed.
 */
enum imap_asm_status imap_asm_literal(struct imap_asm *a, const char *p,
				      size_t len, size_t *used);

/* Octets of literal data still expected. */
size_t imap_asm_literal_left(const struct imap_asm *a);

/* True when the next input is literal data (accepted or being swallowed). */
bool imap_asm_in_literal(const struct imap_asm *a);

/* True when the literal just announced is synchronizing and accepted, so
 * the client waits for a "+" continuation before sending it. */
bool imap_asm_needs_continuation(const struct imap_asm *a);

/* The refusal's reason, as text for "BAD"/"NO"/"BYE" ("command too long",
 * ...), and as a code; valid after IMAP_ASM_REJECT or IMAP_ASM_CLOSE. */
const char *imap_asm_error(const struct imap_asm *a);
enum imap_asm_error imap_asm_error_code(const struct imap_asm *a);

/* The tag of the command in progress, or NULL when its first line did not
 * start with a valid tag of at most IMAP_TAG_MAX octets. */
const char *imap_asm_tag(const struct imap_asm *a);

/*
 * Forget the command in progress, if any, and its refusal state, so the next
 * line starts a new command; for example after STARTTLS, when pipelined
 * cleartext input is thrown away (RFC 3501 section 6.2.1).  A new command
 * also starts implicitly with the first imap_asm_line() after
 * IMAP_ASM_COMPLETE, IMAP_ASM_DISCARDED or a refusal that left nothing to
 * swallow; that call invalidates the previous command's buffer and so every
 * result parsed from it.
 */
void imap_asm_reset(struct imap_asm *a);

/* ------------------------------------------------------------------ */
/* Layer 2: the parser                                                  */
/* ------------------------------------------------------------------ */

/* A counted string.  S is NUL terminated unless it came from
 * imap_parse_append() (message data may hold NULs); LEN is authoritative. */
struct imap_str {
	const char *s;
	size_t len;
};

/* The per-command bump allocator; freed as a whole. */
struct imap_arena_chunk;
struct imap_arena {
	struct imap_arena_chunk *head;
	size_t total; /* octets handed out since the last reset */
	size_t limit; /* a request past this fails */
};

/* Parser options, from the session's state. */
enum {
	IMAP_PARSE_UTF8 = 1 << 0,   /* UTF8=ACCEPT or IMAP4rev2 enabled: names
				     * and quoted strings are UTF-8 */
	IMAP_PARSE_BINARY = 1 << 1, /* BINARY advertised: literal8 allowed */
};

/* Return codes of the imap_parse_* helpers. */
enum {
	IMAP_PARSE_OK = 0,
	IMAP_PARSE_BAD = -1,        /* answer "tag BAD cmd->error" */
	IMAP_PARSE_BADCHARSET = -2, /* answer "tag NO [BADCHARSET ...]" */
};

struct imap_cmd {
	/* Results of imap_cmd_parse(). */
	struct imap_str tag;  /* NUL terminated; empty when unparsable */
	char name[24];        /* upper case; "FETCH" for "UID FETCH" */
	bool uid;             /* the UID prefix was given */
	const char *error;    /* reason of the last failure, static text */

	/* Private cursor state. */
	const char *buf;
	size_t len, pos;
	const struct imap_literal *lits;
	size_t nlits, next_lit;
	unsigned flags;
	int depth;
	struct imap_arena arena;
};

/*
 * Prepare CMD.  ARENA_LIMIT caps the memory one command's results may take
 * (0 means 16 MiB).  Release with imap_cmd_free().
 */
void imap_cmd_init(struct imap_cmd *cmd, size_t arena_limit);

/* Release CMD's arena. */
void imap_cmd_free(struct imap_cmd *cmd);

/*
 * Start parsing the command assembled in A (after IMAP_ASM_COMPLETE), with
 * options FLAGS (IMAP_PARSE_*).  Frees the previous command's results, then
 * reads the tag, SP, the command name and, for "UID", SP and the second
 * name, leaving the cursor just after the name (at the SP before the first
 * argument, or at the end).  Only FETCH, STORE, COPY, MOVE, SEARCH and
 * EXPUNGE may follow "UID".  CMD refers to A's buffer: A must not be reset
 * while CMD's results are in use.  Returns IMAP_PARSE_OK or IMAP_PARSE_BAD;
 * on failure cmd->tag is still set if the tag itself was valid.
 */
int imap_cmd_parse(struct imap_cmd *cmd, const struct imap_asm *a,
		   unsigned flags);

/*
 * Same as imap_cmd_parse() for a command held in BUF (LEN octets) with the
 * literals LITS; for tests and for callers that assemble by other means.
 */
int imap_cmd_parse_buf(struct imap_cmd *cmd, const char *buf, size_t len,
		       const struct imap_literal *lits, size_t nlits,
		       unsigned flags);

/* Allocate N zeroed octets from CMD's arena; NULL past the arena limit. */
void *imap_cmd_alloc(struct imap_cmd *cmd, size_t n);

/* --- cursor ---------------------------------------------------------- */

/* Consume exactly one SP (RFC 9051 section 9, note 2: no other spacing). */
int imap_parse_sp(struct imap_cmd *cmd);

/* Succeed only at the end of the command ("unexpected extra arguments"). */
int imap_parse_end(struct imap_cmd *cmd);

/* True at the end of the command. */
bool imap_parse_at_end(const struct imap_cmd *cmd);

/* True when the next octet is C (nothing is consumed). */
bool imap_parse_peek(const struct imap_cmd *cmd, char c);

/* --- strings ---------------------------------------------------------- */

/* An atom (1*ATOM-CHAR), returned as given. */
int imap_parse_atom(struct imap_cmd *cmd, struct imap_str *out);

/* An astring: 1*ASTRING-CHAR (atom plus "]"), quoted or literal.  Quoted
 * strings are unescaped; NUL is refused everywhere, and 8-bit octets in a
 * quoted string unless IMAP_PARSE_UTF8 is set (then they must be UTF-8). */
int imap_parse_astring(struct imap_cmd *cmd, struct imap_str *out);

/* A string: quoted or literal only. */
int imap_parse_string(struct imap_cmd *cmd, struct imap_str *out);

/* An nstring: string or NIL; NIL gives out->s == NULL. */
int imap_parse_nstring(struct imap_cmd *cmd, struct imap_str *out);

/* A non-negative number below 2^32 (RFC 3501 "number"). */
int imap_parse_number(struct imap_cmd *cmd, uint32_t *out);

/* A number64 (0 .. 2^63-1), as for mod-sequences (RFC 7162 section 7). */
int imap_parse_number64(struct imap_cmd *cmd, uint64_t *out);

/*
 * A mailbox name: an astring, returned as UTF-8.  Any case of "INBOX" is
 * returned as "INBOX" (RFC 3501 section 5.1).  Without IMAP_PARSE_UTF8 the
 * name is decoded from modified UTF-7 and a malformed one is refused; with
 * it the name must be valid UTF-8 and is taken as is (RFC 6855 section 3).
 */
int imap_parse_mailbox(struct imap_cmd *cmd, struct imap_str *out);

/* A list-mailbox (LIST/LSUB pattern): like a mailbox, but the atom form may
 * also hold the wildcards "%" and "*".  INBOX is not folded: a pattern is
 * matched, not named. */
int imap_parse_list_mailbox(struct imap_cmd *cmd, struct imap_str *out);

/* --- flags and sets --------------------------------------------------- */

struct imap_flags {
	struct imap_str *v; /* each "\Name" or keyword as given */
	size_t n;
};

/* A flag-list "(" [flag *(SP flag)] ")".  A flag is "\" atom or an atom;
 * "\*" is refused (it exists only in PERMANENTFLAGS). */
int imap_parse_flag_list(struct imap_cmd *cmd, struct imap_flags *out);

struct imap_range {
	uint32_t lo, hi; /* lo <= hi */
};

/*
 * A sequence set as parsed.  Ranges without "*" are in R, sorted and
 * merged.  "*" is the largest number in use, unknown to the parser, so
 * every element that mentions it is folded into STAR_LO..STAR_HI: "n:*" is
 * the span between n and the maximum in either order (RFC 9051 seq-range),
 * and all such spans contain the maximum, so their union is the span from
 * min(STAR_LO, max) to max(STAR_HI, max).  A bare "*" leaves STAR_LO =
 * UINT32_MAX and STAR_HI = 0.  Use imap_seqset_resolve() to get plain
 * ranges.  DOLLAR means the set was "$", the saved search result (RFC 5182).
 */
struct imap_seqset {
	struct imap_range *r;
	size_t n;
	bool star;
	uint32_t star_lo, star_hi;
	bool dollar;
};

/* A sequence-set (or "$").  Refuses 0 (RFC 3501 nz-number), numbers past
 * 2^32-1, empty elements and stray characters. */
int imap_parse_seqset(struct imap_cmd *cmd, struct imap_seqset *out);

/*
 * Resolve SET against MAX, the largest sequence number or UID in use, into a
 * sorted merged array of plain ranges allocated from CMD's arena (*OUT,
 * *NOUT).  A "$" set resolves to nothing: the caller substitutes the saved
 * result.  With MAX == 0 (empty mailbox) "*" contributes nothing.
 * Returns IMAP_PARSE_OK, or IMAP_PARSE_BAD when the arena is exhausted.
 */
int imap_seqset_resolve(struct imap_cmd *cmd, const struct imap_seqset *set,
			uint32_t max, struct imap_range **out, size_t *nout);

/* True when N is in RANGES (sorted, merged, as made by the functions above). */
bool imap_ranges_contain(const struct imap_range *r, size_t n, uint32_t v);

/* --- dates ------------------------------------------------------------ */

struct imap_date {
	int year, mon, day; /* mon 1..12 */
};

struct imap_datetime {
	struct imap_date date;
	int hour, min, sec;
	int zone; /* minutes east of UTC */
};

/* A date: d-MMM-yyyy, bare or quoted; month names in any case.  The day
 * must exist in that month (leap years counted). */
int imap_parse_date(struct imap_cmd *cmd, struct imap_date *out);

/* A date-time: "dd-MMM-yyyy hh:mm:ss +zzzz", quoted.  The grammar's day is
 * " d" or "dd" (date-day-fixed); a bare "d" is taken too, as some clients
 * send it and it cannot be mistaken for anything else.  Fields are range
 * checked (leap second 60 allowed, zone minutes below 60). */
int imap_parse_datetime(struct imap_cmd *cmd, struct imap_datetime *out);

/* Seconds since the epoch for D at 00:00 UTC. */
time_t imap_date_to_time(const struct imap_date *d);

/* Seconds since the epoch for DT, its zone applied. */
time_t imap_datetime_to_time(const struct imap_datetime *dt);

/* --- FETCH ------------------------------------------------------------ */

enum imap_fetch_kind {
	IMAP_FETCH_FLAGS,
	IMAP_FETCH_INTERNALDATE,
	IMAP_FETCH_RFC822,        /* = BODY[] with \Seen, answered as RFC822 */
	IMAP_FETCH_RFC822_HEADER, /* = BODY.PEEK[HEADER] */
	IMAP_FETCH_RFC822_SIZE,
	IMAP_FETCH_RFC822_TEXT,   /* = BODY[TEXT] */
	IMAP_FETCH_ENVELOPE,
	IMAP_FETCH_BODY,          /* BODY without a section: no extension data */
	IMAP_FETCH_BODYSTRUCTURE,
	IMAP_FETCH_UID,
	IMAP_FETCH_BODY_SECTION,  /* BODY[...] and BODY.PEEK[...] */
	IMAP_FETCH_BINARY,        /* BINARY[...] and BINARY.PEEK[...] */
	IMAP_FETCH_BINARY_SIZE,
	IMAP_FETCH_MODSEQ,
	IMAP_FETCH_SAVEDATE,      /* RFC 8514 */
	IMAP_FETCH_EMAILID,       /* RFC 8474 */
	IMAP_FETCH_THREADID,      /* RFC 8474 */
};

enum imap_section_text {
	IMAP_SECTION_ALL,        /* "[]" or "[1.2]": the whole part */
	IMAP_SECTION_HEADER,
	IMAP_SECTION_HEADER_FIELDS,
	IMAP_SECTION_HEADER_FIELDS_NOT,
	IMAP_SECTION_TEXT,
	IMAP_SECTION_MIME,       /* only after a part number */
};

struct imap_section {
	uint32_t *part; /* part numbers, each >= 1 */
	size_t nparts;
	enum imap_section_text text;
	struct imap_str *fields; /* HEADER.FIELDS(.NOT) names, as given */
	size_t nfields;
};

struct imap_fetch_att {
	enum imap_fetch_kind kind;
	bool peek;                   /* .PEEK given: do not set \Seen */
	struct imap_section section; /* BODY_SECTION, BINARY, BINARY_SIZE */
	bool partial;
	uint64_t origin, count;      /* <origin.count>, count >= 1 */
	struct imap_fetch_att *next;
};

struct imap_fetch {
	struct imap_fetch_att *atts; /* in the order given, macros expanded */
	size_t natts;
	bool changedsince_set;       /* (CHANGEDSINCE n), RFC 7162 §3.1.4.1 */
	uint64_t changedsince;
	bool vanished;               /* (VANISHED), UID FETCH only, §3.2.6 */
};

/*
 * The FETCH arguments after the sequence set and its SP: a macro (ALL, FAST,
 * FULL: expanded per RFC 3501 section 6.4.5), one attribute, or a
 * parenthesised list, then optionally SP and a modifier list.  BINARY forms
 * need IMAP_PARSE_BINARY.  An unknown attribute is refused naming it.
 */
int imap_parse_fetch(struct imap_cmd *cmd, struct imap_fetch *out);

/* --- STORE ------------------------------------------------------------ */

enum imap_store_op { IMAP_STORE_REPLACE, IMAP_STORE_ADD, IMAP_STORE_REMOVE };

struct imap_store {
	enum imap_store_op op;
	bool silent;
	struct imap_flags flags;
	bool unchangedsince_set; /* RFC 7162 section 3.1.3 */
	uint64_t unchangedsince;
};

/* The STORE arguments after the sequence set and its SP: an optional
 * "(UNCHANGEDSINCE n)" and SP, then [+|-]FLAGS[.SILENT] SP and a flag list
 * or flags separated by SP. */
int imap_parse_store(struct imap_cmd *cmd, struct imap_store *out);

/* --- SEARCH ----------------------------------------------------------- */

enum imap_search_op {
	IMAP_SK_AND, IMAP_SK_OR, IMAP_SK_NOT,
	IMAP_SK_ALL, IMAP_SK_ANSWERED, IMAP_SK_DELETED, IMAP_SK_DRAFT,
	IMAP_SK_FLAGGED, IMAP_SK_NEW, IMAP_SK_OLD, IMAP_SK_RECENT,
	IMAP_SK_SEEN, IMAP_SK_UNANSWERED, IMAP_SK_UNDELETED,
	IMAP_SK_UNDRAFT, IMAP_SK_UNFLAGGED, IMAP_SK_UNSEEN,
	IMAP_SK_KEYWORD, IMAP_SK_UNKEYWORD,                 /* str */
	IMAP_SK_BCC, IMAP_SK_BODY, IMAP_SK_CC, IMAP_SK_FROM,
	IMAP_SK_SUBJECT, IMAP_SK_TEXT, IMAP_SK_TO,          /* str */
	IMAP_SK_HEADER,                                     /* str2: str */
	IMAP_SK_BEFORE, IMAP_SK_ON, IMAP_SK_SINCE,          /* date */
	IMAP_SK_SENTBEFORE, IMAP_SK_SENTON, IMAP_SK_SENTSINCE,
	IMAP_SK_SAVEDBEFORE, IMAP_SK_SAVEDON, IMAP_SK_SAVEDSINCE,
	IMAP_SK_SAVEDATESUPPORTED,                          /* RFC 8514 */
	IMAP_SK_LARGER, IMAP_SK_SMALLER,                    /* num */
	IMAP_SK_OLDER, IMAP_SK_YOUNGER,                     /* num: seconds */
	IMAP_SK_MODSEQ,                   /* num; str, str2 if the ext given */
	IMAP_SK_SEQSET, IMAP_SK_UID,                        /* set */
};

struct imap_search_key {
	enum imap_search_op op;
	struct imap_search_key *child; /* AND, OR (two), NOT (one) */
	struct imap_search_key *next;  /* sibling */
	struct imap_str str, str2;     /* HEADER: str2 is the field name */
	struct imap_date date;
	uint64_t num;
	struct imap_seqset set;
};

enum {
	IMAP_SEARCH_RET_MIN = 1 << 0,
	IMAP_SEARCH_RET_MAX = 1 << 1,
	IMAP_SEARCH_RET_ALL = 1 << 2,
	IMAP_SEARCH_RET_COUNT = 1 << 3,
	IMAP_SEARCH_RET_SAVE = 1 << 4,
};

struct imap_search {
	struct imap_search_key *root; /* an AND of the top-level keys */
	bool esearch;     /* RETURN (...) given: answer with ESEARCH */
	unsigned ret;     /* IMAP_SEARCH_RET_*; RETURN () means ALL */
	bool modseq_used; /* a MODSEQ key appears (RFC 7162 §3.1.5) */
};

/*
 * The SEARCH arguments after the command name's SP: [RETURN (opts) SP]
 * [CHARSET name SP] keys.  Keys juxtaposed are ANDed; OR takes two, NOT one,
 * and parentheses group (RFC 3501 section 6.4.4), to IMAP_MAX_DEPTH levels.
 * CHARSET UTF-8 and US-ASCII are accepted; any other returns
 * IMAP_PARSE_BADCHARSET.  Unknown keys and RETURN options are refused.
 */
int imap_parse_search(struct imap_cmd *cmd, struct imap_search *out);

/* --- SORT and THREAD (RFC 5256) ---------------------------------------- */

enum imap_sort_key {
	IMAP_SORT_ARRIVAL, IMAP_SORT_CC, IMAP_SORT_DATE, IMAP_SORT_FROM,
	IMAP_SORT_SIZE, IMAP_SORT_SUBJECT, IMAP_SORT_TO,
	IMAP_SORT_DISPLAYFROM, IMAP_SORT_DISPLAYTO,        /* RFC 5957 */
};

/* The most sort criteria one SORT may give. */
#define IMAP_SORT_MAX 16

struct imap_sort {
	struct {
		enum imap_sort_key key;
		bool reverse;
	} crit[IMAP_SORT_MAX];
	size_t ncrit;
	struct imap_search search; /* keys only: never RETURN */
};

/*
 * The SORT arguments after the command name's SP (RFC 5256 §5):
 * "(" [REVERSE SP] key *(SP [REVERSE SP] key) ")" SP charset 1*(SP key).
 * The charset is mandatory (no CHARSET word); UTF-8 and US-ASCII are
 * accepted, any other returns IMAP_PARSE_BADCHARSET.
 */
int imap_parse_sort(struct imap_cmd *cmd, struct imap_sort *out);

enum imap_thread_alg { IMAP_THREAD_ORDEREDSUBJECT, IMAP_THREAD_REFERENCES };

struct imap_thread {
	enum imap_thread_alg alg;
	struct imap_search search;
};

/* The THREAD arguments after the command name's SP: algorithm SP charset
 * 1*(SP key).  An unknown algorithm is refused (BAD); the charset as for
 * SORT. */
int imap_parse_thread(struct imap_cmd *cmd, struct imap_thread *out);

/* --- mailbox commands ------------------------------------------------- */

enum {
	IMAP_STATUS_MESSAGES = 1 << 0,
	IMAP_STATUS_RECENT = 1 << 1,
	IMAP_STATUS_UIDNEXT = 1 << 2,
	IMAP_STATUS_UIDVALIDITY = 1 << 3,
	IMAP_STATUS_UNSEEN = 1 << 4,
	IMAP_STATUS_DELETED = 1 << 5,       /* RFC 9051 */
	IMAP_STATUS_SIZE = 1 << 6,          /* RFC 9051 */
	IMAP_STATUS_HIGHESTMODSEQ = 1 << 7, /* RFC 7162 */
	IMAP_STATUS_APPENDLIMIT = 1 << 8,   /* RFC 7889 */
	IMAP_STATUS_MAILBOXID = 1 << 9,     /* RFC 8474 */
};

/* A STATUS item list "(" item *(SP item) ")" into a mask of IMAP_STATUS_*. */
int imap_parse_status_items(struct imap_cmd *cmd, unsigned *mask);

struct imap_select_params {
	bool condstore;
	bool qresync;
	uint32_t uidvalidity;
	uint64_t modseq;
	struct imap_seqset known_uids;   /* empty when not given */
	struct imap_seqset known_seqs;   /* seq-match-data, both or neither */
	struct imap_seqset known_seq_uids;
};

/* Optional SELECT/EXAMINE parameters: nothing at the end of the command,
 * else SP "(" CONDSTORE / QRESYNC (...) ")" (RFC 7162 section 3.2.5).  The
 * sets given to QRESYNC may not contain "*" or "$". */
int imap_parse_select_params(struct imap_cmd *cmd,
			     struct imap_select_params *out);

struct imap_append {
	struct imap_str mailbox;
	struct imap_flags flags;   /* n == 0 when not given */
	bool has_date;
	struct imap_datetime date;
	struct imap_str message;   /* points into the command buffer */
	bool literal8;             /* sent as ~{N} (or UTF8 (~{N})) */
	bool utf8;                 /* the RFC 6855 "UTF8 (...)" form */
};

/* The APPEND arguments after the command name's SP: mailbox [SP flag-list]
 * [SP date-time] SP message, where the message is a literal, or a literal8
 * with IMAP_PARSE_BINARY, or "UTF8 (" literal8 ")" with IMAP_PARSE_UTF8.
 * A quoted message is refused; so is NUL in a plain literal (RFC 3516). */
int imap_parse_append(struct imap_cmd *cmd, struct imap_append *out);

/* ENABLE's capability names, upper-cased, at least one (RFC 5161). */
int imap_parse_enable(struct imap_cmd *cmd, struct imap_str **caps,
		      size_t *ncaps);

struct imap_id_pair {
	struct imap_str field, value; /* value.s NULL for NIL */
};

/* ID's argument: NIL (*N = 0, *PAIRS = NULL) or a list of string/nstring
 * pairs (RFC 2971 section 3.3). */
int imap_parse_id(struct imap_cmd *cmd, struct imap_id_pair **pairs,
		  size_t *n);

/* A LIST selection or return option (RFC 5258 section 3), name upper-cased. */
struct imap_list_opt {
	struct imap_str name;
	struct imap_str value; /* raw "(...)" text of its value, or empty */
};

enum {
	IMAP_LIST_SEL_SUBSCRIBED = 1 << 0,
	IMAP_LIST_SEL_REMOTE = 1 << 1,
	IMAP_LIST_SEL_RECURSIVEMATCH = 1 << 2,
	IMAP_LIST_SEL_SPECIAL_USE = 1 << 3, /* RFC 6154 */
	IMAP_LIST_RET_SUBSCRIBED = 1 << 8,
	IMAP_LIST_RET_CHILDREN = 1 << 9,
	IMAP_LIST_RET_STATUS = 1 << 10,     /* RFC 5819 */
	IMAP_LIST_RET_SPECIAL_USE = 1 << 11,
};

struct imap_list {
	bool extended;                 /* any RFC 5258 syntax was used */
	struct imap_str reference;     /* UTF-8 */
	struct imap_str *patterns;     /* UTF-8, at least one */
	size_t npatterns;
	struct imap_list_opt *sel, *ret;
	size_t nsel, nret;
	unsigned known;                /* IMAP_LIST_* for recognised options */
	unsigned status_items;         /* with IMAP_LIST_RET_STATUS */
};

/* The LIST arguments after the command name's SP: [selection options SP]
 * reference SP (pattern / "(" patterns ")") [SP RETURN (options)].  Unknown
 * options are kept in SEL/RET for the handler to judge; RECURSIVEMATCH
 * without a base option is refused (RFC 5258 section 3). */
int imap_parse_list(struct imap_cmd *cmd, struct imap_list *out);

#endif
