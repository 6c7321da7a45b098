/*
 * imap_int.h - what the IMAP front-end's files share: the session, the
 * selected mailbox's view, the command table, and the helpers every
 * command handler uses to answer.
 *
 * imap.c owns the session (input, dispatch, tagged answers, IDLE);
 * imap_view.c owns the view and the untagged updates that keep it in step
 * with the store (RFC 3501 §5.2, §7.4.1); one imap_cmd_*.c file per command
 * or family acts on a parsed command.  Handlers never write to the
 * connection directly: they build responses in s->out and answer through
 * imap_ok/imap_no/imap_bad, which sync the view first where allowed.
 */
#ifndef ONEBOX_IMAP_INT_H
#define ONEBOX_IMAP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/imap/imap_parser.h"
#include "protocols/imap/imap_write.h"
#include "protocols/proto.h"
#include "store/store.h"

/* Session states (RFC 3501 §3), as bits so a command lists where it is valid. */
enum imap_state {
	IMAP_NOTAUTH = 1u << 0,
	IMAP_AUTH = 1u << 1,
	IMAP_SELECTED = 1u << 2,
	IMAP_LOGOUT = 1u << 3,
};
#define IMAP_ANY (IMAP_NOTAUTH | IMAP_AUTH | IMAP_SELECTED)
#define IMAP_AUTHED (IMAP_AUTH | IMAP_SELECTED)

/* What ENABLE turned on (RFC 5161). */
enum {
	IMAP_EN_CONDSTORE = 1u << 0,
	IMAP_EN_QRESYNC = 1u << 1,
	IMAP_EN_UTF8 = 1u << 2,
	IMAP_EN_REV2 = 1u << 3,
};

/*
 * The selected mailbox as this session knows it (RFC 3501 §2.3.1.2):
 * message sequence numbers are indexes into uids[], which is ascending.
 * Four bytes per message; flags are not cached (they are read from the
 * store when reported).  Changes made by anyone (this session included)
 * reach the view only through imap_view_sync(), which reads the store's
 * change feed from view.modseq on.
 */
struct imap_view {
	uint32_t mailbox_id;
	uint32_t uidvalidity;
	bool readonly;          /* EXAMINE, or SELECT of a read-only mailbox */
	uint32_t *uids;         /* uids[seq - 1] */
	uint32_t count, cap;
	struct uid_list *shared; /* non-NULL: uids belongs to this shared list
	                         * (protocols/uidcache.h), copied before any change */
	uint32_t recent_from;   /* UIDs >= this are \Recent in this session */
	uint32_t uidnext;       /* as last reported */
	uint64_t modseq;        /* changes up to here are reflected */
	bool flags_dirty;       /* a keyword was added: resend FLAGS */
	/* Added by imap_view.c (additive): */
	uint32_t first_unseen;  /* after imap_view_open: seq of the first
	                         * message without \Seen, 0 if none */
	struct imap_range *recent; /* this session's \Recent UIDs, as sorted
	                         * ranges (recent_from is recent[0].lo) */
	size_t nrecent;
	uint64_t reported_modseq; /* FETCH FLAGS sent for changes up to here */
	size_t nkeywords;       /* keyword table entries the client was told */
	/* Added for SEARCHRES (additive): the saved search result "$" (RFC
	 * 5182), as ascending UIDs so that an expunge drops a message from it
	 * without renumbering (§2.1).  Empty after SELECT, EXAMINE, CLOSE and
	 * UNSELECT: imap_view_close frees it. */
	uint32_t *saved;
	size_t nsaved;
};

struct imap_session;
typedef void (*imap_handler)(struct imap_session *s, struct imap_cmd *cmd);

/* Command flags. */
enum {
	IMAP_CF_UID = 1u << 0,        /* also valid as "UID <name>" */
	IMAP_CF_NO_EXPUNGE = 1u << 1, /* by sequence number: no untagged EXPUNGE
	                               * may precede its answer (RFC 3501 §7.4.1) */
};

struct imap_command {
	const char *name;  /* upper case */
	imap_handler fn;
	unsigned states;   /* enum imap_state bits where it is allowed */
	unsigned flags;    /* IMAP_CF_* */
};

struct imap_session {
	conn *c;
	enum imap_state state;
	struct imap_asm as;            /* assembles lines and literals */
	struct imap_cmd cmd;           /* the command being executed */
	const struct imap_command *cur; /* its table entry; NULL when idle */
	bool uid;                      /* the current command had the UID prefix */
	struct imap_wbuf out;          /* responses being built; imap_flush sends */

	uint32_t user_id;
	char *user;                    /* canonical name, after login */
	unsigned enabled;              /* IMAP_EN_* */

	struct imap_view view;         /* valid in IMAP_SELECTED */
	store_watch *watch;            /* on view.mailbox_id while selected */

	/*
	 * A command that stopped producing output because the connection was
	 * congested (FETCH of many messages or of large bodies) goes on here:
	 * imap.c's drained handler calls RESUME if it is set, after setting it
	 * to NULL.  CMD_STATE is that command's own state (in the command's
	 * arena, so it goes with the command).  While a command waits this way
	 * it has set busy and paused input.
	 */
	void (*resume)(struct imap_session *s);
	void *cmd_state;

	bool idling;                   /* between "+ idling" and DONE */
	bool busy;                     /* a command waits on the store or auth */
	bool logout;                   /* close after the answer is flushed */
};

/* The command table (imap.c), looked up by imap_command_find. */
const struct imap_command *imap_command_find(const char *name, bool uid);

/* ---------------------------------------------------------- answering */

/* Send what s->out holds to the client. */
void imap_flush(struct imap_session *s);

/*
 * End the current command with a tagged OK/NO/BAD (RFC 3501 §7.1), with an
 * optional response code CODE (without brackets, e.g. "TRYCREATE" or
 * "APPENDUID 38505 3955"; NULL for none) and text.  Before the tagged line,
 * the view is synced (untagged EXISTS, FETCH FLAGS and, unless the command
 * has IMAP_CF_NO_EXPUNGE, EXPUNGE).  Then the output is flushed, the
 * command's memory freed, and input resumed if it was paused.
 */
void imap_ok(struct imap_session *s, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void imap_no(struct imap_session *s, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void imap_bad(struct imap_session *s, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Append an untagged response "* " FMT "\r\n" to s->out. */
void imap_untagged(struct imap_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Writer flags for this session (IMAP_WRITE_UTF8 once UTF-8 is enabled). */
unsigned imap_write_flags(const struct imap_session *s);

/*
 * Hand write request R to the store and finish the command when it is
 * durable: input is paused and the connection held meanwhile; DONE runs on
 * the loop with the finished request (before it is freed) and must answer
 * with imap_ok/no/bad.  If the client is gone by then, DONE is not called.
 */
void imap_submit(struct imap_session *s, store_req *r,
                 void (*done)(struct imap_session *s, store_req *r));

/* ------------------------------------------------------------ the view */

/* Fill s->view for MAILBOX (SELECT/EXAMINE): UIDs of every message, the
 * \Recent claim, and the watch.  0, or a STORE_* status. */
int imap_view_open(struct imap_session *s, const struct store_mailbox *mb, bool readonly);
/* Drop the view and its watch (CLOSE, UNSELECT, a new SELECT, logout). */
void imap_view_close(struct imap_session *s);

/*
 * Bring the view up to date with the store and append the untagged
 * responses that say so to s->out: "* n EXPUNGE" for each message gone
 * (only if EXPUNGE_OK; otherwise expunges wait for a later sync), "* n
 * EXISTS" (and "* n RECENT") when messages arrived, "* n FETCH (FLAGS
 * (...))" for messages whose flags changed, and a new "* FLAGS" list when
 * a keyword appeared.  Cost is proportional to the changes.
 */
void imap_view_sync(struct imap_session *s, bool expunge_ok);

/* The sequence number of UID in the view, or 0. */
uint32_t imap_view_seq(const struct imap_view *v, uint32_t uid);

/*
 * Turn SET (sequence numbers, or UIDs when BY_UID) into the ascending list
 * of UIDs of the view it names; *UIDS is allocated from the command's arena.
 * Per RFC 3501 §6.4.8 a UID range names the UIDs present in it (none is not
 * an error; "*" is the highest UID); a sequence number beyond the view is
 * an error: returns -1 after answering BAD.
 */
int imap_view_resolve(struct imap_session *s, const struct imap_seqset *set, bool by_uid,
                      uint32_t **uids, size_t *n);

/* Append "(\Seen \Flagged kw1 ...)" for system FLAGS and KEYWORDS of the
 * mailbox whose keyword table is NAMES/NNAMES, plus \Recent if RECENT. */
void imap_write_msg_flags(struct imap_wbuf *w, uint32_t flags, uint64_t keywords,
                          const char *const *names, size_t nnames, bool recent);

/* True if UID is \Recent in this session. */
bool imap_view_is_recent(const struct imap_view *v, uint32_t uid);

/* Added (additive): the number of messages of the view that are \Recent in
 * this session, for SELECT's "* n RECENT". */
uint32_t imap_view_recent_count(const struct imap_view *v);
/* Added (additive): append "* FLAGS (...)" and "* OK [PERMANENTFLAGS (...)]"
 * for the selected mailbox's keyword table, as SELECT and a sync send. */
void imap_view_write_flags(struct imap_session *s);
/* Added (additive): the highest UID of MAILBOX_ID some session has claimed
 * as \Recent (0: none), for STATUS RECENT. */
uint32_t imap_recent_claimed(uint32_t mailbox_id);

/* --------------------------------------------- CONDSTORE and QRESYNC */

/* Added (additive), imap_condstore.c.  Turn CONDSTORE on for the session
 * (ENABLE, or any CONDSTORE enabling command of RFC 7162 §3.1): from then
 * on unsolicited FETCH responses carry UID and MODSEQ.  The first time,
 * with a mailbox selected, "* OK [HIGHESTMODSEQ n]" is appended. */
void imap_condstore_enable(struct imap_session *s);
/* After SELECT/EXAMINE's untagged data: the QRESYNC resync (RFC 7162
 * §3.2.5) of P against the fresh view: "* VANISHED (EARLIER)" and "* n
 * FETCH (UID FLAGS MODSEQ)" for what changed after P->modseq, up to the
 * view's modseq (later changes come from the sync at the answer).  Nothing
 * when P->uidvalidity is not the mailbox's.  Cost: the changes since
 * P->modseq.  0, or a STORE_* status (nothing written then). */
struct imap_select_params;
int imap_qresync_select(struct imap_session *s, const struct imap_select_params *p);
/* UID FETCH ... (CHANGEDSINCE SINCE VANISHED), RFC 7162 §3.2.6: append
 * "* VANISHED (EARLIER) uids" for the UIDs of SET expunged after SINCE
 * (up to the view's modseq).  0, or a STORE_* status. */
int imap_vanished_earlier(struct imap_session *s, const struct imap_seqset *set,
                          uint64_t since);

/* Added (additive): empty the saved search result (RFC 5182 §2.1). */
void imap_saved_reset(struct imap_view *v);

/* ------------------------------------------------------ command files */

/* imap_cmd_mailbox.c */
void imap_cmd_select(struct imap_session *s, struct imap_cmd *cmd);   /* SELECT, EXAMINE */
void imap_cmd_create(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_delete(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_rename(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_subscribe(struct imap_session *s, struct imap_cmd *cmd); /* and UNSUBSCRIBE */
void imap_cmd_list(struct imap_session *s, struct imap_cmd *cmd);    /* LIST, LSUB */
void imap_cmd_status(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_close(struct imap_session *s, struct imap_cmd *cmd);   /* CLOSE, UNSELECT */
void imap_cmd_expunge(struct imap_session *s, struct imap_cmd *cmd); /* EXPUNGE, UID EXPUNGE */
/* imap_cmd_fetch.c */
void imap_cmd_fetch(struct imap_session *s, struct imap_cmd *cmd);
/* imap_cmd_search.c */
void imap_cmd_search(struct imap_session *s, struct imap_cmd *cmd);

/* Added (additive), imap_cmd_search.c: the search SORT and THREAD share.
 * Evaluates Q's keys against every message of the view, in slices of
 * short read transactions.  On success returns 0 and fills *OUT; the
 * caller frees OUT->seqs.  Otherwise it has answered the command: -1 after
 * a NO, -2 after a BAD. */
struct imap_search_hits {
	uint32_t *seqs;          /* sequence numbers matched, ascending */
	size_t n;
	uint64_t max_modseq;     /* highest modseq of the matches */
	uint64_t first_modseq, last_modseq; /* of seqs[0] and seqs[n - 1] */
};
int imap_search_run(struct imap_session *s, struct imap_cmd *cmd, const struct imap_search *q,
                    struct imap_search_hits *out);

/* Added (additive), imap_cmd_search.c: parse an RFC 5322 Date: value
 * (§3.3, obsolete forms of §4.3) from unfolded S/LEN into *DT (zone in
 * minutes east of UTC).  Returns 0 when there is no valid date, else
 * IMAP_DATEF_DATE with TIME and ZONE when those were there and valid, or
 * BAD_TIME / BAD_ZONE when they were there but malformed (their fields are
 * then 0). */
enum {
	IMAP_DATEF_DATE = 1u << 0,
	IMAP_DATEF_TIME = 1u << 1,
	IMAP_DATEF_ZONE = 1u << 2,
	IMAP_DATEF_BAD_TIME = 1u << 3,
	IMAP_DATEF_BAD_ZONE = 1u << 4,
};
unsigned imap_date_field_parse(const char *s, size_t len, struct imap_datetime *dt);

/* Added (additive), imap_cmd_sort.c: SORT and THREAD (RFC 5256), with
 * their UID forms. */
void imap_cmd_sort(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_thread(struct imap_session *s, struct imap_cmd *cmd);
/* imap_cmd_store.c */
void imap_cmd_store(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_copy(struct imap_session *s, struct imap_cmd *cmd);    /* COPY, MOVE */
void imap_cmd_append(struct imap_session *s, struct imap_cmd *cmd);

/* Added (additive), imap_cmd_quota.c: QUOTA (RFC 9208), read side. */
void imap_cmd_getquota(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_getquotaroot(struct imap_session *s, struct imap_cmd *cmd);
void imap_cmd_setquota(struct imap_session *s, struct imap_cmd *cmd); /* NO [NOPERM] */

/* Added (additive), imap.c: the most octets one APPEND may carry, as the
 * assembler enforces it; APPENDLIMIT (RFC 7889) in CAPABILITY and STATUS. */
uint64_t imap_append_limit(const struct imap_session *s);

/* imap_envelope.c: ENVELOPE and BODYSTRUCTURE/BODY from the MIME tree
 * (store/mime.h).  The tree's strings point into the message, which must
 * stay mapped while these run.  ENV is mime_envelope(tree) or a
 * message/rfc822 part's env; PART is any part, usually mime_root(tree);
 * EXTENDED adds the extension data (BODYSTRUCTURE), without it the form
 * is FETCH BODY's. */
struct mime_envelope;
struct mime_part;
void imap_write_envelope(struct imap_wbuf *w, const struct mime_envelope *env, unsigned wflags);
void imap_write_bodystructure(struct imap_wbuf *w, const struct mime_part *part,
                              bool extended, unsigned wflags);

#endif
