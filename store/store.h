/*
 * store.h - the onebox message store: users, mailboxes, messages, flags,
 * the change feed, and message bodies stored once, shared by reference.
 *
 * One LMDB environment holds everything.  Reads are short LMDB read
 * transactions taken by the caller (store_read_begin); writes are described
 * as a request (store_req) and applied by one writer thread that groups all
 * queued requests into one durable commit.  The store knows nothing of any
 * protocol's syntax; the front-ends know nothing of LMDB.
 *
 * Threading: a store opened with a libuv loop (the daemon) runs a writer
 * thread and calls completion and watch callbacks on that loop's thread.
 * A store opened without a loop (the CLI) applies requests synchronously
 * in the calling thread with store_req_run().  Several processes may have the
 * same store open at once; LMDB serialises their writers.
 */
#ifndef ONEBOX_STORE_H
#define ONEBOX_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct store store;
typedef struct store_txn store_txn;
typedef struct store_req store_req;
typedef struct store_msg store_msg;
typedef struct store_watch store_watch;

/* Results.  Every function returning int returns one of these. */
enum store_status {
	STORE_OK = 0,
	STORE_NOTFOUND,  /* no such user, mailbox or message */
	STORE_EXISTS,    /* the user or mailbox already exists */
	STORE_INVALID,   /* a bad argument (empty name, too long, ...) */
	STORE_OVERQUOTA, /* the user's quota would be exceeded */
	STORE_TEMPFAIL,  /* temporary: I/O error, out of memory; retry later */
	STORE_CORRUPT,   /* the data folder is not a onebox store, or damaged */
	STORE_MODIFIED,  /* (per operation only) store_req_set_flags_if: the
	                  * message changed after the caller's modseq */
	STORE_NOSPACE,   /* temporary: the disk (ENOSPC, EDQUOT) or the map
	                  * (storage.max_size) is full; retry once there is room.
	                  * A kind of STORE_TEMPFAIL that callers may name. */
};

/* A short English phrase for a status, for logs and CLI messages. */
const char *store_strerror(int status);

/* System flags, as a bit set.  Keywords are a separate 64-bit set indexed
 * by a per-mailbox keyword table (IMAP issue). */
enum {
	STORE_F_SEEN = 1u << 0,
	STORE_F_ANSWERED = 1u << 1,
	STORE_F_FLAGGED = 1u << 2,
	STORE_F_DELETED = 1u << 3,
	STORE_F_DRAFT = 1u << 4,
};

/* Special-use attributes of a mailbox (RFC 6154), as a bit set. */
enum {
	STORE_USE_SENT = 1u << 0,
	STORE_USE_DRAFTS = 1u << 1,
	STORE_USE_TRASH = 1u << 2,
	STORE_USE_JUNK = 1u << 3,
	STORE_USE_ARCHIVE = 1u << 4,
};

struct store_options {
	size_t map_size;            /* initial LMDB map size in bytes; 0: default (1 GiB) */
	size_t max_map_size;        /* the map doubles when full up to this; 0: no limit */
	uint32_t expunge_retention; /* seconds an expunged message's body is kept; 0: none */
	bool readonly;              /* open for reading only (onebox check) */
	/* The quota of a user without a setting of their own (quota.storage
	 * and quota.messages in the config); 0: no limit.  Every process that
	 * opens the store must pass the same values: the writer of each
	 * process enforces the ones it was given. */
	uint64_t default_quota_bytes;
	uint64_t default_quota_messages;
};

/*
 * Open (creating if needed) the store in directory PATH.  With LOOP set, a
 * writer thread is started and callbacks run on LOOP; with LOOP NULL the
 * store is synchronous (use store_req_run).  On failure returns non-zero,
 * leaves *OUT NULL and writes a human sentence naming PATH into ERR.
 * A folder that holds files that are not a onebox store is refused with
 * STORE_CORRUPT and never modified.
 */
int store_open(store **out, const char *path, const struct store_options *opt,
               uv_loop_t *loop, char *err, size_t errlen);

/*
 * Stop accepting requests, wait for every queued request to be committed
 * and its callback run, stop the writer thread and close the environment.
 * With a loop, must be called on the loop thread; it runs the loop's pending
 * completions itself.  All read transactions must have ended.
 * (Clarification:) with a loop, the store's libuv handles are closed with
 * uv_close, so the caller must let the loop run again (uv_run) for their
 * close callbacks before uv_loop_close.  Watches still registered are
 * freed; do not call store_watch_remove on them afterwards.
 */
void store_close(store *s);

/* ---------------------------------------------------------------- reads */

/*
 * Begin a short read transaction.  It sees the store as of the last commit
 * and nothing after.  Pointers returned by the lookups below point into the
 * map and stay valid until store_read_end().  Keep it short: a long reader
 * pins pages and grows the file.  Returns NULL only on an LMDB failure.
 */
store_txn *store_read_begin(store *s);
void store_read_end(store_txn *t);

struct store_user {
	uint32_t id;
	const char *name;        /* NUL-terminated, valid until the txn ends */
	const char *pass_hash;   /* crypt(3) string, NUL-terminated; "" if none */
	uint64_t used_bytes;     /* sum of message sizes in all mailboxes */
	uint64_t used_messages;
	/* The limits in force: the user's own setting, or the store's
	 * default when they have none (store_options); 0: no limit. */
	uint64_t quota_bytes;
	uint64_t quota_messages;
	/* The user's own setting as stored: STORE_QUOTA_DEFAULT (none: the
	 * default applies), STORE_QUOTA_NONE (no limit, whatever the default)
	 * or the limit itself. */
	uint64_t own_quota_bytes;
	uint64_t own_quota_messages;
	/* RFC 5803 SCRAM-SHA-256 secret ("SCRAM-SHA-256$iter:salt$StoredKey:
	 * ServerKey"), NUL-terminated; "" if none (users whose password was
	 * set before SCRAM existed). */
	const char *scram;
};

/* Look NAME up.  STORE_OK or STORE_NOTFOUND. */
int store_user_get(store_txn *t, const char *name, struct store_user *out);

/* Call FN for each user in name order; FN returns non-zero to stop. */
int store_user_foreach(store_txn *t, int (*fn)(const struct store_user *, void *),
                       void *arg);

struct store_mailbox {
	uint32_t id;
	uint32_t user_id;
	const char *name;       /* UTF-8, '/'-separated, "INBOX" for the inbox */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t messages;      /* count of messages (including \Deleted ones) */
	uint32_t unseen;        /* messages without \Seen */
	uint32_t deleted;       /* messages with \Deleted */
	uint64_t bytes;         /* sum of the messages' sizes */
	uint32_t special_use;   /* STORE_USE_* */
	/* Whether the name is subscribed is not a property of the mailbox:
	 * see store_subscribed(). */
};

/* Look up mailbox NAME of user USER_ID ("INBOX" is case-insensitive). */
int store_mailbox_get(store_txn *t, uint32_t user_id, const char *name,
                      struct store_mailbox *out);
/* Look up a mailbox by id. */
int store_mailbox_get_id(store_txn *t, uint32_t mailbox_id, struct store_mailbox *out);
/* Call FN for each mailbox of USER_ID in name order; FN non-zero stops. */
int store_mailbox_foreach(store_txn *t, uint32_t user_id,
                          int (*fn)(const struct store_mailbox *, void *), void *arg);
/* Find the user's mailbox with special-use bit USE (e.g. STORE_USE_TRASH). */
int store_mailbox_by_use(store_txn *t, uint32_t user_id, uint32_t use,
                         struct store_mailbox *out);

/*
 * Subscriptions (IMAP SUBSCRIBE, LSUB, LIST (SUBSCRIBED)) are a per-user
 * set of mailbox names, kept apart from the mailboxes: a name stays
 * subscribed when its mailbox is deleted or renamed, and is subscribed
 * again when a mailbox of that name comes back (RFC 3501 §6.3.6, RFC 9051
 * §6.3.6 and §6.3.7).  "INBOX" is matched case-insensitively.
 */

/* Call FN for each name USER_ID subscribes to, in bytewise name order,
 * whether or not a mailbox has it; FN returns non-zero to stop.  NAME is
 * NUL-terminated and valid only during the call. */
int store_subscription_foreach(store_txn *t, uint32_t user_id,
                               int (*fn)(const char *name, void *arg), void *arg);
/* STORE_OK if USER_ID subscribes to NAME, else STORE_NOTFOUND. */
int store_subscribed(store_txn *t, uint32_t user_id, const char *name);

struct store_message {
	uint32_t uid;
	uint32_t flags;         /* STORE_F_* */
	uint64_t keywords;      /* bit i: keyword i of the mailbox's table */
	uint64_t modseq;
	int64_t internal_date;  /* seconds since the epoch */
	int64_t save_date;
	uint32_t size;          /* octets, CRLF line ends: exactly what is served */
	uint32_t lines;         /* number of lines (for TOP and BODY line counts) */
	uint32_t header_size;   /* octets of the header including the blank line */
	uint8_t body_id[32];    /* the body's key (store_body_number) */
};

/* Look up one message by UID.  STORE_OK or STORE_NOTFOUND (expunged). */
int store_message_get(store_txn *t, uint32_t mailbox_id, uint32_t uid,
                      struct store_message *out);

/*
 * Call FN for each message of MAILBOX_ID with UID >= FIRST_UID in UID order;
 * FN returns non-zero to stop.  Reads only the small per-message records,
 * never a body.
 */
int store_message_foreach(store_txn *t, uint32_t mailbox_id, uint32_t first_uid,
                          int (*fn)(const struct store_message *, void *), void *arg);

/* The number of body BODY_ID: bodies are numbered as they are written,
 * and a number is never given twice.  0 for a body written before
 * 2026-12-07, whose id is the SHA-256 of its bytes. */
uint64_t store_body_number(const uint8_t body_id[32]);

/*
 * Point *DATA at the stored bytes of body BODY_ID (CRLF line ends) and set
 * *LEN.  Valid until the txn ends.  Bodies are immutable: a caller that
 * streams a large body may copy a slice, end the txn and come back later
 * for the next slice with the same BODY_ID; STORE_NOTFOUND then means the
 * body has since been removed.
 */
int store_body_get(store_txn *t, const uint8_t body_id[32], const char **data,
                   size_t *len);

/* Change feed. */
enum store_change_kind { STORE_CHANGE_FLAGS = 1, STORE_CHANGE_EXPUNGE = 2 };
struct store_change {
	uint64_t modseq;
	uint32_t uid;
	int kind;               /* STORE_CHANGE_*: FLAGS also covers a new message */
};
/*
 * Call FN for every change in MAILBOX_ID with modseq > SINCE, in modseq
 * order: each present message whose last change is newer (kind FLAGS) and
 * each message expunged since (kind EXPUNGE, from its tombstone).  The cost
 * is proportional to the number of changes, not to the mailbox size.
 */
int store_changes_since(store_txn *t, uint32_t mailbox_id, uint64_t since,
                        int (*fn)(const struct store_change *, void *), void *arg);

/* --------------------------------------------------------------- writes */

/*
 * A message being received.  Bytes are appended as they arrive; line ends
 * are normalised to CRLF (a bare LF or bare CR becomes CRLF) and the line
 * counts are computed on the way.  A store_msg is reference
 * counted so one received message can be delivered to many recipients and
 * stored once.
 */
store_msg *store_msg_new(void);
void store_msg_append(store_msg *m, const char *p, size_t len);
/* Finish the message: no more appends.  Returns its size in octets. */
size_t store_msg_finish(store_msg *m);
size_t store_msg_size(const store_msg *m); /* octets so far, after normalising */
const char *store_msg_data(const store_msg *m);
void store_msg_ref(store_msg *m);
void store_msg_unref(store_msg *m);

/*
 * A write request: an ordered list of operations applied atomically (all or
 * none) in the writer's next commit.  Build it, then hand it to
 * store_req_submit() (daemon) or store_req_run() (CLI); either takes
 * ownership.  Each operation's own result is available to the callback
 * through store_req_result(); the first failing operation makes the whole
 * request fail with its status and nothing of it is stored.
 */
store_req *store_req_new(void);

/* Add user NAME with password hash HASH (crypt(3) string) and its INBOX and
 * the default special-use mailboxes (Drafts, Sent, Trash, Junk, Archive),
 * all subscribed. */
void store_req_user_add(store_req *r, const char *name, const char *hash);
/* Delete user NAME, its mailboxes, messages and subscriptions (bodies lose
 * a reference). */
void store_req_user_del(store_req *r, const char *name);
/* Replace user NAME's password hash (and drop its SCRAM secret). */
void store_req_user_passwd(store_req *r, const char *name, const char *hash);
/* The same two with the user's SCRAM secret (RFC 5803 string, at most 255
 * octets; NULL or "" for none). */
void store_req_user_add_scram(store_req *r, const char *name, const char *hash,
                              const char *scram);
void store_req_user_passwd_scram(store_req *r, const char *name, const char *hash,
                                 const char *scram);
/* Set user NAME's own quota, each value STORE_QUOTA_DEFAULT (follow the
 * store's default), STORE_QUOTA_NONE (no limit) or a limit.  A store
 * opened without defaults treats STORE_QUOTA_DEFAULT as no limit, as a 0
 * always meant before defaults existed (docs/store.md). */
#define STORE_QUOTA_DEFAULT ((uint64_t)0)
#define STORE_QUOTA_NONE UINT64_MAX
void store_req_user_quota(store_req *r, const char *name, uint64_t bytes,
                          uint64_t messages);

/* Store finished message M in mailbox MAILBOX of user USER (by name; the
 * mailbox NULL means INBOX) with FLAGS and INTERNAL_DATE (0: now).  Takes a
 * reference on M.  The result carries the new UID and the UIDVALIDITY. */
void store_req_deliver(store_req *r, const char *user, const char *mailbox,
                       store_msg *m, uint32_t flags, int64_t internal_date);

/* Add and remove flags of message UID of MAILBOX_ID.  A UID that is gone
 * is skipped (not an error).  Bumps the modseq only if flags change. */
void store_req_flags(store_req *r, uint32_t mailbox_id, uint32_t uid,
                     uint32_t add, uint32_t remove);

/* Expunge message UID of MAILBOX_ID, leaving a tombstone.  A UID that is
 * already gone is skipped. */
void store_req_expunge(store_req *r, uint32_t mailbox_id, uint32_t uid);

/* Move message UID of MAILBOX_ID to mailbox DEST_ID under a new UID there,
 * with its flags except those in DROP_FLAGS; the body is not copied.  A UID
 * that is already gone is skipped. */
void store_req_move(store_req *r, uint32_t mailbox_id, uint32_t uid,
                    uint32_t dest_id, uint32_t drop_flags);

/* Added by the store (purely additive): the operations IMAP COPY, CREATE,
 * DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE need. */

/* Copy message UID of MAILBOX_ID to DEST_ID (same user) under a new UID,
 * flags kept; the body gains a reference, it is not copied.  Counts
 * against the quota (STORE_OVERQUOTA).  A UID that is gone is skipped.
 * The result carries the new UID and the destination's UIDVALIDITY. */
void store_req_copy(store_req *r, uint32_t mailbox_id, uint32_t uid, uint32_t dest_id);
/* Create mailbox NAME of USER with SPECIAL_USE (STORE_USE_*, usually 0).
 * Subscriptions are not touched (a caller that wants the new name
 * subscribed adds store_req_subscribe).  STORE_EXISTS if it exists,
 * STORE_INVALID for a bad name.  The result carries the new mailbox id and
 * its UIDVALIDITY. */
void store_req_mailbox_create(store_req *r, const char *user, const char *name,
                              uint32_t special_use);
/* Delete a mailbox and its messages (their bodies lose a reference).
 * INBOX cannot be deleted (STORE_INVALID).  Child mailboxes are separate
 * mailboxes: the caller deletes or keeps them.  A subscription to the
 * name stays. */
void store_req_mailbox_delete(store_req *r, uint32_t mailbox_id);
/* Rename a mailbox, keeping its id, UIDs and UIDVALIDITY.  Only that one
 * mailbox: the caller renames children with further operations.  INBOX
 * cannot be renamed here (STORE_INVALID); STORE_EXISTS if NEW_NAME is taken.
 * Subscriptions stay with the names: the old name stays subscribed if it
 * was, the new one is subscribed only if it already was. */
void store_req_mailbox_rename(store_req *r, uint32_t mailbox_id, const char *new_name);
/* Add mailbox name NAME to user USER's subscriptions, or remove it (with
 * SUBSCRIBED false); either is idempotent and neither needs a mailbox of
 * that name (the caller decides whether one must exist).  STORE_NOTFOUND
 * for no such user, STORE_INVALID for a name a mailbox could not have. */
void store_req_subscribe(store_req *r, const char *user, const char *name, bool subscribed);

/*
 * IMAP additions.  Keywords are names (RFC 3501 flag-keyword atoms); each
 * mailbox keeps a table of at most 64 of them, and a message's keywords are
 * a bit set over that table.  Names are compared case-insensitively and a
 * new one is added to the table when first set; a 65th distinct keyword
 * makes the operation fail with STORE_INVALID.
 */
enum store_flag_mode { STORE_FLAGS_ADD, STORE_FLAGS_REMOVE, STORE_FLAGS_REPLACE };

/* Append finished message M to MAILBOX_ID with system FLAGS, keywords
 * KEYWORDS[0..NKW-1] and INTERNAL_DATE (0: now); the APPEND of IMAP.
 * Counted against the owner's quota.  Takes a reference on M.  The result
 * carries the new UID and the UIDVALIDITY. */
void store_req_append(store_req *r, uint32_t mailbox_id, store_msg *m, uint32_t flags,
                      const char *const *keywords, size_t nkw, int64_t internal_date);

/* Change the flags of message UID of MAILBOX_ID: add, remove, or replace
 * the system FLAGS and the keywords KEYWORDS[0..NKW-1] (STORE of IMAP).
 * A UID that is gone is skipped (its result's uid is 0; not an error).
 * Bumps the message's modseq only if something changed. */
void store_req_set_flags(store_req *r, uint32_t mailbox_id, uint32_t uid,
                         enum store_flag_mode mode, uint32_t flags,
                         const char *const *keywords, size_t nkw);

/*
 * Added for CONDSTORE (RFC 7162 §3.1.3, STORE ... (UNCHANGEDSINCE n)):
 * store_req_set_flags, but only if the message's modseq is still <=
 * UNCHANGEDSINCE when the writer applies the operation; the test and the
 * write happen in the same write transaction, so no other change can slip
 * between them.  Outcomes, in the operation's result:
 *  - the message passed: as store_req_set_flags (status STORE_OK, uid,
 *    modseq after the change, which is the old one if nothing changed);
 *  - the message is newer: nothing is changed, status STORE_MODIFIED, uid
 *    set, modseq the message's current one.  This is a per-operation
 *    outcome, not a failure: the other operations of the request are
 *    applied and committed, and store_req_status() stays STORE_OK unless
 *    some other operation failed (which fails the whole request as usual,
 *    and every result then carries that failure instead);
 *  - the message is gone: skipped, status STORE_OK, uid 0.
 * Every modseq is >= 1, so UNCHANGEDSINCE 0 always gives STORE_MODIFIED
 * for a message that exists, as §3.1.3 requires.
 */
void store_req_set_flags_if(store_req *r, uint32_t mailbox_id, uint32_t uid,
                            enum store_flag_mode mode, uint32_t flags,
                            const char *const *keywords, size_t nkw,
                            uint64_t unchangedsince);

/* The keyword table of MAILBOX_ID: NAMES[i] is keyword bit i (NULL where
 * unused), up to 64 entries; *N is one past the highest bit used.  Names
 * point into the map, valid until the txn ends. */
int store_mailbox_keywords(store_txn *t, uint32_t mailbox_id, const char *names[64],
                           size_t *n);

/* The MIME structure of body BODY_ID as serialised at ingest by
 * mime_serialize() (store/mime.h), valid until the txn ends; load it with
 * mime_load() over the body's bytes.  STORE_NOTFOUND if none was stored
 * (the caller then parses the body itself). */
int store_body_mime(store_txn *t, const uint8_t body_id[32], const void **blob,
                    size_t *len);

struct store_result {
	int status;             /* STORE_* */
	uint32_t mailbox_id;    /* deliver/append/move/copy: the mailbox written
	                         * to; mailbox create: the new mailbox */
	uint32_t uid;           /* deliver/move: the new UID */
	uint32_t uidvalidity;
	/* Added (additive): set_flags and set_flags_if: the message's modseq
	 * after the operation (unchanged when nothing changed or the result
	 * is STORE_MODIFIED); 0 for other operations and for a message gone. */
	uint64_t modseq;
};

/* The number of operations in R, and the result of operation I. */
size_t store_req_count(const store_req *r);
const struct store_result *store_req_result(const store_req *r, size_t i);
/* The request's overall status: STORE_OK or that of the first failure. */
int store_req_status(const store_req *r);

typedef void (*store_req_cb)(store_req *r, void *arg);

/*
 * Queue R for the writer thread.  CB runs on the loop thread after the
 * commit holding R is durable on disk (or has failed), then R is freed.
 * Requests queued together are committed together (group commit).
 * Only for a store opened with a loop.
 */
void store_req_submit(store *s, store_req *r, store_req_cb cb, void *arg);

/* Apply R now in this thread in its own durable transaction; return its
 * status and free it.  For a store opened without a loop. */
int store_req_run(store *s, store_req *r);

/* Free a request that was never submitted. */
void store_req_free(store_req *r);

/*
 * Watch MAILBOX_ID: FN runs on the loop thread after any commit that may have
 * changed it (by this process's writer or, within a second, by another
 * process such as `onebox deliver`).  Spurious calls are allowed: FN compares
 * the mailbox's highestmodseq with what it knows.  Only with a loop.
 */
store_watch *store_watch_add(store *s, uint32_t mailbox_id,
                             void (*fn)(void *arg, uint32_t mailbox_id), void *arg);
void store_watch_remove(store_watch *w);

#endif
