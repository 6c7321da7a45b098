/*
 * store.c - the onebox message store over one LMDB environment.
 *
 * This file owns the on-disk layout (documented once, in docs/store.md):
 * the named databases, their big-endian keys and versioned records, and
 * every read and write of them.  It also owns the writer thread (group
 * commit of queued requests, map growth on MDB_MAP_FULL), the hand-back of
 * finished requests to the libuv loop, and the change notifications
 * (watches, plus a timer that notices commits made by other processes).
 * Message reception (CRLF normalisation, the MIME parse at ingest) lives
 * in msg.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_int.h"

/* meta "format": magic and version.  Format 2 (2026-11-22) keeps a new
 * body's info record next to its bytes, where an older onebox would not
 * look; format 3 (2026-12-07) numbers new bodies (body_id_make), which an
 * older onebox would read but serve under one EMAILID.  An older onebox
 * must refuse a newer store.  Format 1 and 2 stores are read as they are
 * and become format 3 when opened for writing (docs/store.md). */
#define STORE_FORMAT "onebox-store 3"
#define STORE_FORMAT_1 "onebox-store 1"
#define STORE_FORMAT_2 "onebox-store 2"
#define DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define NAME_MAX_LEN 255                /* user and mailbox names, octets */
#define HASH_MAX_LEN 511                /* crypt(3) strings are far shorter */
#define SCRAM_MAX_LEN 255               /* RFC 5803 strings: about 130 */
#define MAX_READERS 1024                /* concurrent read txns (MDB_NOTLS) */
#define WATCH_POLL_MS 200               /* other-process commit detection */
#define PURGE_BATCH 64                  /* expunged records dropped per commit */
#define REC_VERSION 1
#define KEYWORDS_MAX 64                 /* per-mailbox keyword table entries */
#define KEYWORD_MAX_LEN 255             /* octets of one keyword name */
#define SYSTEM_FLAGS 0x1fu              /* the STORE_F_* bits */

/* ------------------------------------------------------------ the store */

struct store_watch {
	store *s;
	uint32_t mailbox_id;
	void (*fn)(void *arg, uint32_t mailbox_id);
	void *arg;
	struct store_watch *prev, *next;
	bool dead;              /* removed while watchers were being called */
};

/* The bodies the writer wrote last, by fingerprint (body_new). */
#define RECENT_BODIES 1024

struct recent_body {
	uint64_t fp;            /* body_fingerprint of the bytes */
	uint64_t num;           /* the body's number; 0: an empty slot */
};

struct store {
	MDB_env *env;
	MDB_dbi db_main, db_meta, db_users, db_user_ids, db_names, db_mailboxes,
	        db_messages, db_changes, db_bodies, db_body_info, db_expunged,
	        db_keywords, db_body_mime, db_subs;
	/* keywords, body_mime and subscriptions came after format 1's first
	 * release: a read-only open of a store older than them runs without
	 * them (subscriptions are then read from the old per-mailbox bit). */
	bool have_late_dbs;
	bool have_subs;
	struct store_options opt;
	/* Read txns (and the writer's txn) hold this shared; a map resize holds
	 * it exclusive, because mdb_env_set_mapsize needs no live txn. */
	pthread_rwlock_t maplock;

	uv_loop_t *loop;        /* NULL: synchronous store */
	uv_thread_t thread;
	bool thread_started;
	uv_mutex_t mu;          /* guards everything down to writer_last */
	uv_cond_t cond;
	bool stopping;
	store_req *queue_head, *queue_tail;     /* submitted, not yet applied */
	store_req *done_head, *done_tail;       /* applied, callbacks pending */
	uint32_t *touched;                      /* mailboxes the done batches wrote */
	size_t ntouched, captouched;
	bool foreign;           /* another process committed between our commits */
	uint64_t done_commit;   /* LMDB txn id of the last posted batch */
	uint64_t writer_last;   /* LMDB txn id of our writer's last commit */
	/* The runway (below): data.mdb's used length as of our last commit,
	 * how far past it pages are ready, and the used length at which the
	 * writer wakes the runway thread. */
	uint64_t used_end, runway_end, runway_wake_at;
	/* The prepare thread (below): requests waiting for it, in order, and
	 * whether it is working on one. */
	store_req *prep_head, *prep_tail;
	bool prep_busy;
	uv_cond_t prep_cond;
	uv_thread_t prep_thread;
	bool prep_started;
	uv_cond_t runway_cond;
	uv_thread_t runway_thread;
	bool runway_started;
	bool runway_off;        /* the file system has no fallocate: given up */
	int runway_fd;
	size_t psize;           /* LMDB's page size */
	/* Write txns only (they are one at a time): body_new's window. */
	struct recent_body recent[RECENT_BODIES];

	/* Loop thread only. */
	uv_async_t *async;
	uv_timer_t *timer;
	bool timer_running;
	size_t outstanding;     /* submitted requests whose callback has not run */
	uint64_t known_commit;  /* watchers have been told up to this commit */
	struct store_watch *watch_head, *watch_tail;
	size_t nwatches;
	unsigned notifying;     /* depth of watcher calls in progress */
};

struct store_txn {
	store *s;
	MDB_txn *txn;
};

/* -------------------------------------------------------------- requests */

enum op_kind {
	OP_USER_ADD, OP_USER_DEL, OP_USER_PASSWD, OP_USER_QUOTA, OP_DELIVER,
	OP_FLAGS, OP_EXPUNGE, OP_MOVE, OP_COPY, OP_MBOX_CREATE, OP_MBOX_DELETE,
	OP_MBOX_RENAME, OP_SUBSCRIBE, OP_APPEND, OP_SET_FLAGS,
};

struct store_op {
	enum op_kind kind;
	char *user;             /* user name */
	char *str;              /* hash, or mailbox name */
	char *str2;             /* user add/passwd: SCRAM secret, or NULL */
	store_msg *msg;
	uint32_t mailbox_id, uid, dest_id;
	uint32_t add, remove;   /* flags; add also: deliver flags, subscribe */
	uint64_t n1, n2;        /* quota */
	int64_t date;
	enum store_flag_mode mode;      /* set_flags */
	bool if_unchanged;      /* set_flags_if: test the modseq first */
	uint64_t unchangedsince;
	char **kw;              /* append, set_flags: keyword names (copies) */
	size_t nkw;
	bool invalid;           /* built from bad arguments: STORE_INVALID */
};

struct store_req {
	struct store_op *ops;
	struct store_result *res;
	size_t n, cap;
	bool oom;               /* building the request ran out of memory */
	int status;
	store_req_cb cb;
	void *arg;
	store_req *next;
};

const char *store_strerror(int status)
{
	switch (status) {
	case STORE_OK: return "success";
	case STORE_NOTFOUND: return "not found";
	case STORE_EXISTS: return "already exists";
	case STORE_INVALID: return "invalid argument";
	case STORE_OVERQUOTA: return "quota exceeded";
	case STORE_TEMPFAIL: return "temporary failure (I/O error, out of resources)";
	case STORE_CORRUPT: return "not a onebox store, or damaged";
	case STORE_MODIFIED: return "modified since the given modseq";
	case STORE_NOSPACE: return "no space left for the store";
	default: return "unknown error";
	}
}

/* LMDB errors that mean the file is not what we expect, versus the rest
 * (I/O, space, resources), which are worth a retry.  A full disk or map is
 * told apart so that LMTP can say 452 4.3.1 (RFC 3463 "mail system full"). */
static int status_of(int rc)
{
	switch (rc) {
	case 0: return STORE_OK;
	case MDB_NOTFOUND: return STORE_NOTFOUND;
	case MDB_CORRUPTED: case MDB_INVALID: case MDB_VERSION_MISMATCH:
	case MDB_PAGE_NOTFOUND: case MDB_INCOMPATIBLE:
		return STORE_CORRUPT;
	case MDB_MAP_FULL: case ENOSPC: case EDQUOT:
		return STORE_NOSPACE;
	default: return STORE_TEMPFAIL;
	}
}

/* ------------------------------------------------------- byte encoding */

static void be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void be64_put(uint8_t *p, uint64_t v)
{
	be32_put(p, (uint32_t)(v >> 32));
	be32_put(p + 4, (uint32_t)v);
}

static uint64_t be64_get(const uint8_t *p)
{
	return (uint64_t)be32_get(p) << 32 | be32_get(p + 4);
}

/* Records are written into a caller's buffer; OVER flags a too-small one
 * (a bug, but reported as STORE_INVALID rather than a crash). */
struct enc {
	uint8_t *p;
	size_t len, cap;
	bool over;
};

static void enc_bytes(struct enc *e, const void *p, size_t n)
{
	if (e->over || e->cap - e->len < n) {
		e->over = true;
		return;
	}
	if (n)
		memcpy(e->p + e->len, p, n);
	e->len += n;
}

static void enc_u8(struct enc *e, uint8_t v) { enc_bytes(e, &v, 1); }
static void enc_u16(struct enc *e, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	enc_bytes(e, b, 2);
}
static void enc_u32(struct enc *e, uint32_t v) { uint8_t b[4]; be32_put(b, v); enc_bytes(e, b, 4); }
static void enc_u64(struct enc *e, uint64_t v) { uint8_t b[8]; be64_put(b, v); enc_bytes(e, b, 8); }

/* A string: u16 length, the bytes, a NUL (so readers can point into the map). */
static void enc_str(struct enc *e, const char *s, size_t n)
{
	enc_u16(e, (uint16_t)n);
	enc_bytes(e, s, n);
	enc_u8(e, 0);
}

/* Decoding never reads past the value: a short or malformed record sets
 * BAD and the caller reports STORE_CORRUPT. */
struct dec {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

static const uint8_t *dec_take(struct dec *d, size_t n)
{
	if (d->bad || d->len - d->pos < n) {
		d->bad = true;
		return NULL;
	}
	const uint8_t *r = d->p + d->pos;
	d->pos += n;
	return r;
}

static uint8_t dec_u8(struct dec *d) { const uint8_t *p = dec_take(d, 1); return p ? p[0] : 0; }
static uint16_t dec_u16(struct dec *d)
{
	const uint8_t *p = dec_take(d, 2);
	return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}
static uint32_t dec_u32(struct dec *d) { const uint8_t *p = dec_take(d, 4); return p ? be32_get(p) : 0; }
static uint64_t dec_u64(struct dec *d) { const uint8_t *p = dec_take(d, 8); return p ? be64_get(p) : 0; }

static const char *dec_str(struct dec *d, size_t *lenp)
{
	size_t n = dec_u16(d);
	const uint8_t *p = dec_take(d, n + 1);
	if (!p || p[n] != 0) {
		d->bad = true;
		return "";
	}
	if (lenp)
		*lenp = n;
	return (const char *)p;
}

static struct dec dec_of(const MDB_val *v)
{
	struct dec d = { v->mv_data, v->mv_size, 0, false };
	return d;
}

/* ---------------------------------------------------------- the records */

/* users: name -> this.  Later versions may append fields; readers ignore
 * what follows the fields they know.  The SCRAM secret is such a field,
 * appended after the name (records written before it simply end there). */
struct urec {
	struct store_user u;    /* name/pass_hash/scram point into the arrays below */
	int64_t created;
	char hash[HASH_MAX_LEN + 1];
	char name[NAME_MAX_LEN + 1];
	char scram[SCRAM_MAX_LEN + 1];
};

/* The limit in force for a user's own setting OWN and the default DEF. */
static uint64_t quota_in_force(uint64_t own, uint64_t def)
{
	if (own == STORE_QUOTA_DEFAULT)
		return def;
	return own == STORE_QUOTA_NONE ? 0 : own;
}

/* The record holds the user's own quota setting; the limits in force are
 * worked out here with the defaults in O, which are not stored (each
 * process has them from the config it read). */
static int user_decode(const MDB_val *v, const struct store_options *o,
                       struct store_user *u, int64_t *created)
{
	struct dec d = dec_of(v);
	if (dec_u8(&d) != REC_VERSION)
		return STORE_CORRUPT;
	u->id = dec_u32(&d);
	u->used_bytes = dec_u64(&d);
	u->used_messages = dec_u64(&d);
	u->own_quota_bytes = dec_u64(&d);
	u->own_quota_messages = dec_u64(&d);
	u->quota_bytes = quota_in_force(u->own_quota_bytes, o->default_quota_bytes);
	u->quota_messages = quota_in_force(u->own_quota_messages, o->default_quota_messages);
	int64_t c = (int64_t)dec_u64(&d);
	if (created)
		*created = c;
	u->pass_hash = dec_str(&d, NULL);
	u->name = dec_str(&d, NULL);
	u->scram = d.pos < d.len ? dec_str(&d, NULL) : "";
	return d.bad ? STORE_CORRUPT : STORE_OK;
}

/* A copy that survives later writes in the same write txn. */
static int urec_decode(const MDB_val *v, const struct store_options *o, struct urec *r)
{
	int st = user_decode(v, o, &r->u, &r->created);
	if (st)
		return st;
	size_t hl = strlen(r->u.pass_hash), nl = strlen(r->u.name), sl = strlen(r->u.scram);
	if (hl > HASH_MAX_LEN || nl > NAME_MAX_LEN || sl > SCRAM_MAX_LEN)
		return STORE_CORRUPT;
	memcpy(r->hash, r->u.pass_hash, hl + 1);
	memcpy(r->name, r->u.name, nl + 1);
	memcpy(r->scram, r->u.scram, sl + 1);
	r->u.pass_hash = r->hash;
	r->u.name = r->name;
	r->u.scram = r->scram;
	return STORE_OK;
}

static size_t urec_encode(const struct urec *r, uint8_t *buf, size_t cap)
{
	struct enc e = { buf, 0, cap, false };
	enc_u8(&e, REC_VERSION);
	enc_u32(&e, r->u.id);
	enc_u64(&e, r->u.used_bytes);
	enc_u64(&e, r->u.used_messages);
	enc_u64(&e, r->u.own_quota_bytes);
	enc_u64(&e, r->u.own_quota_messages);
	enc_u64(&e, (uint64_t)r->created);
	enc_str(&e, r->hash, strlen(r->hash));
	enc_str(&e, r->name, strlen(r->name));
	if (r->scram[0])
		enc_str(&e, r->scram, strlen(r->scram));
	return e.over ? 0 : e.len;
}

/* mailboxes: id -> this (the id itself is the key). */
struct mrec {
	struct store_mailbox m;
	char name[NAME_MAX_LEN + 1];
};

/* OLD_SUB (if set) gets the record's subscribed byte: the subscription
 * flag of stores made before the `subscriptions` database, read only to
 * migrate it (and by read-only opens of such a store). */
static int mailbox_decode(uint32_t id, const MDB_val *v, struct store_mailbox *m,
                          bool *old_sub)
{
	struct dec d = dec_of(v);
	if (dec_u8(&d) != REC_VERSION)
		return STORE_CORRUPT;
	m->id = id;
	m->user_id = dec_u32(&d);
	m->uidvalidity = dec_u32(&d);
	m->uidnext = dec_u32(&d);
	m->highestmodseq = dec_u64(&d);
	m->messages = dec_u32(&d);
	m->unseen = dec_u32(&d);
	m->deleted = dec_u32(&d);
	m->bytes = dec_u64(&d);
	m->special_use = dec_u32(&d);
	uint8_t sub = dec_u8(&d);
	if (old_sub)
		*old_sub = sub != 0;
	m->name = dec_str(&d, NULL);
	return d.bad ? STORE_CORRUPT : STORE_OK;
}

static int mrec_decode(uint32_t id, const MDB_val *v, struct mrec *r)
{
	int st = mailbox_decode(id, v, &r->m, NULL);
	if (st)
		return st;
	size_t nl = strlen(r->m.name);
	if (nl > NAME_MAX_LEN)
		return STORE_CORRUPT;
	memcpy(r->name, r->m.name, nl + 1);
	r->m.name = r->name;
	return STORE_OK;
}

static size_t mrec_encode(const struct mrec *r, uint8_t *buf, size_t cap)
{
	struct enc e = { buf, 0, cap, false };
	enc_u8(&e, REC_VERSION);
	enc_u32(&e, r->m.user_id);
	enc_u32(&e, r->m.uidvalidity);
	enc_u32(&e, r->m.uidnext);
	enc_u64(&e, r->m.highestmodseq);
	enc_u32(&e, r->m.messages);
	enc_u32(&e, r->m.unseen);
	enc_u32(&e, r->m.deleted);
	enc_u64(&e, r->m.bytes);
	enc_u32(&e, r->m.special_use);
	enc_u8(&e, 0);  /* was the subscribed flag: see mailbox_decode */
	enc_str(&e, r->name, strlen(r->name));
	return e.over ? 0 : e.len;
}

/* messages: (mailbox, uid) -> this fixed record; also the value of an
 * `expunged` entry. */
#define MSG_REC_SIZE (1 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4 + 32)

static int message_decode(uint32_t uid, const MDB_val *v, struct store_message *m)
{
	struct dec d = dec_of(v);
	if (dec_u8(&d) != REC_VERSION)
		return STORE_CORRUPT;
	m->uid = uid;
	m->flags = dec_u32(&d);
	m->keywords = dec_u64(&d);
	m->modseq = dec_u64(&d);
	m->internal_date = (int64_t)dec_u64(&d);
	m->save_date = (int64_t)dec_u64(&d);
	m->size = dec_u32(&d);
	m->lines = dec_u32(&d);
	m->header_size = dec_u32(&d);
	const uint8_t *id = dec_take(&d, 32);
	if (d.bad || !id)
		return STORE_CORRUPT;
	memcpy(m->body_id, id, 32);
	return STORE_OK;
}

static void message_encode(const struct store_message *m, uint8_t buf[MSG_REC_SIZE])
{
	struct enc e = { buf, 0, MSG_REC_SIZE, false };
	enc_u8(&e, REC_VERSION);
	enc_u32(&e, m->flags);
	enc_u64(&e, m->keywords);
	enc_u64(&e, m->modseq);
	enc_u64(&e, (uint64_t)m->internal_date);
	enc_u64(&e, (uint64_t)m->save_date);
	enc_u32(&e, m->size);
	enc_u32(&e, m->lines);
	enc_u32(&e, m->header_size);
	enc_bytes(&e, m->body_id, 32);
}

/*
 * Commits are told apart by LMDB's txn id, which every process sees
 * (mdb_txn_id of a read txn is its snapshot's).  LMDB moves it only when a
 * txn wrote something, so each write txn first sets this key of the main
 * database to its own id: the key costs no page of its own, since any
 * commit that changes a named database rewrites the main database's page
 * with that database's new root anyway.
 */
#define COMMIT_KEY "onebox.txn"

/* Beside it, the same way and for the same reason costing no page: the
 * number the next new body gets (body_number_next). */
#define BODY_NEXT_KEY "onebox.body-next"

/*
 * A body's info record: u32 refcount, u32 size, u32 lines, u32
 * header_size, then the body's MIME blob.  It lives in `bodies` under the
 * body id and one octet more (INFO_TAG), so that it sorts right after the
 * body's bytes and a new body changes one B-tree; a body written before
 * 2026-11-22 has it in body_info under the id, and its blob in body_mime
 * or nowhere (docs/store.md).
 */
#define BODY_INFO_SIZE 16
#define INFO_TAG 1

/* keywords: mailbox id -> the mailbox's keyword table, u8 version, u8
 * count, then COUNT strings; string i is keyword bit i.  Entries are only
 * ever added, so the bits of stored messages keep their meaning. */
static int keywords_decode(const MDB_val *v, const char *names[KEYWORDS_MAX],
                           size_t lens[KEYWORDS_MAX], size_t *n)
{
	struct dec d = dec_of(v);
	if (dec_u8(&d) != REC_VERSION)
		return STORE_CORRUPT;
	size_t count = dec_u8(&d);
	if (count > KEYWORDS_MAX)
		return STORE_CORRUPT;
	for (size_t i = 0; i < count && !d.bad; i++)
		names[i] = dec_str(&d, &lens[i]);
	if (d.bad)
		return STORE_CORRUPT;
	*n = count;
	return STORE_OK;
}

/* ------------------------------------------------------------ key makers */

static size_t key_mb_name(uint8_t *k, uint32_t user_id, const char *name)
{
	size_t n = strlen(name);
	be32_put(k, user_id);
	memcpy(k + 4, name, n);
	return 4 + n;
}

static void key_msg(uint8_t k[8], uint32_t mailbox_id, uint32_t uid)
{
	be32_put(k, mailbox_id);
	be32_put(k + 4, uid);
}

static void key_change(uint8_t k[12], uint32_t mailbox_id, uint64_t modseq)
{
	be32_put(k, mailbox_id);
	be64_put(k + 4, modseq);
}

static MDB_val val_of(const void *p, size_t n)
{
	MDB_val v = { n, (void *)(uintptr_t)p };
	return v;
}

/* ----------------------------------------------------- names and checks */

/* Names are UTF-8 (or at least bytes) without control characters, 1 to 255
 * octets: they become keys and appear in protocol responses. */
static bool name_ok(const char *n)
{
	if (!n)
		return false;
	size_t len = strlen(n);
	if (len == 0 || len > NAME_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)n[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* "INBOX" is case-insensitive (RFC 3501 section 5.1); it is stored as such. */
static const char *mbox_canon(const char *name)
{
	return strcasecmp(name, "INBOX") == 0 ? "INBOX" : name;
}

/* -------------------------------------------------------- the map lock */

/* How many txns this thread holds: a thread that holds one must not try
 * to take the map lock exclusive (it would wait for itself). */
static _Thread_local unsigned maplock_depth;

static void maplock_shared(store *s)
{
	pthread_rwlock_rdlock(&s->maplock);
	maplock_depth++;
}

static void maplock_release(store *s)
{
	maplock_depth--;
	pthread_rwlock_unlock(&s->maplock);
}

/*
 * Begin a txn holding the map lock shared for its life.  MDB_MAP_RESIZED
 * means another process grew the map: adopt its size (which needs no txn of
 * ours alive, hence the exclusive lock) and retry.
 */
static int txn_begin(store *s, unsigned flags, MDB_txn **out)
{
	for (int tries = 0;; tries++) {
		maplock_shared(s);
		int rc = mdb_txn_begin(s->env, NULL, flags, out);
		if (rc != MDB_MAP_RESIZED) {
			if (rc)
				maplock_release(s);
			return rc;
		}
		maplock_release(s);
		if (maplock_depth > 0 || tries >= 8)
			return rc;
		pthread_rwlock_wrlock(&s->maplock);
		mdb_env_set_mapsize(s->env, 0);
		pthread_rwlock_unlock(&s->maplock);
	}
}

/* Double the map after MDB_MAP_FULL, up to max_map_size.  0 on success. */
static int map_grow(store *s)
{
	if (maplock_depth > 0)
		return -1;
	pthread_rwlock_wrlock(&s->maplock);
	MDB_envinfo info;
	int rc = mdb_env_info(s->env, &info);
	size_t cur = info.me_mapsize, want = cur * 2;
	if (rc == 0 && cur > SIZE_MAX / 2)
		rc = -1;
	if (rc == 0 && s->opt.max_map_size && want > s->opt.max_map_size)
		want = s->opt.max_map_size;
	if (rc == 0 && want <= cur)
		rc = -1;
	if (rc == 0)
		rc = mdb_env_set_mapsize(s->env, want);
	pthread_rwlock_unlock(&s->maplock);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ reads */

store_txn *store_read_begin(store *s)
{
	if (!s)
		return NULL;
	store_txn *t = malloc(sizeof *t);
	if (!t)
		return NULL;
	t->s = s;
	if (txn_begin(s, MDB_RDONLY, &t->txn) != 0) {
		free(t);
		return NULL;
	}
	return t;
}

void store_read_end(store_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
	maplock_release(t->s);
	free(t);
}

/* mdb_get with the result as a store status. */
static int tx_get(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t kl, MDB_val *v)
{
	MDB_val key = val_of(k, kl);
	return status_of(mdb_get(txn, dbi, &key, v));
}

struct info_loc {
	MDB_dbi dbi;
	uint8_t key[33];
	size_t klen;
};

/* Where a new body's info record goes. */
static void info_loc_new(store *s, const uint8_t id[32], struct info_loc *l)
{
	l->dbi = s->db_bodies;
	memcpy(l->key, id, 32);
	l->key[32] = INFO_TAG;
	l->klen = 33;
}

/* Find body ID's info record V and where it is. */
static int info_find(MDB_txn *txn, store *s, const uint8_t id[32], struct info_loc *l,
                     MDB_val *v)
{
	info_loc_new(s, id, l);
	int st = tx_get(txn, l->dbi, l->key, l->klen, v);
	if (st != STORE_NOTFOUND)
		return st;
	l->dbi = s->db_body_info;
	l->klen = 32;
	return tx_get(txn, l->dbi, l->key, l->klen, v);
}

static int meta_get_u64(MDB_txn *txn, store *s, const char *key, uint64_t *out)
{
	MDB_val v;
	int st = tx_get(txn, s->db_meta, key, strlen(key), &v);
	if (st == STORE_NOTFOUND) {
		*out = 0;
		return STORE_OK;
	}
	if (st)
		return st;
	if (v.mv_size != 8)
		return STORE_CORRUPT;
	*out = be64_get(v.mv_data);
	return STORE_OK;
}

int store_user_get(store_txn *t, const char *name, struct store_user *out)
{
	if (!t || !name_ok(name))
		return STORE_NOTFOUND;
	MDB_val v;
	int st = tx_get(t->txn, t->s->db_users, name, strlen(name), &v);
	if (st)
		return st;
	return user_decode(&v, &t->s->opt, out, NULL);
}

int store_user_foreach(store_txn *t, int (*fn)(const struct store_user *, void *),
                       void *arg)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->s->db_users, &c);
	if (rc)
		return status_of(rc);
	MDB_val k, v;
	int st = STORE_OK;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct store_user u;
		st = user_decode(&v, &t->s->opt, &u, NULL);
		if (st || fn(&u, arg))
			break;
	}
	mdb_cursor_close(c);
	if (st)
		return st;
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : status_of(rc);
}

static int mailbox_get_id_tx(MDB_txn *txn, store *s, uint32_t id, struct store_mailbox *out)
{
	uint8_t k[4];
	be32_put(k, id);
	MDB_val v;
	int st = tx_get(txn, s->db_mailboxes, k, 4, &v);
	if (st)
		return st;
	return mailbox_decode(id, &v, out, NULL);
}

/* The mailbox id of (USER_ID, NAME), NAME already canonical. */
static int mailbox_lookup_tx(MDB_txn *txn, store *s, uint32_t user_id, const char *name,
                             uint32_t *id)
{
	if (!name_ok(name))
		return STORE_NOTFOUND;
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, user_id, name);
	MDB_val v;
	int st = tx_get(txn, s->db_names, k, kl, &v);
	if (st)
		return st;
	if (v.mv_size != 4)
		return STORE_CORRUPT;
	*id = be32_get(v.mv_data);
	return STORE_OK;
}

int store_mailbox_get(store_txn *t, uint32_t user_id, const char *name,
                      struct store_mailbox *out)
{
	if (!t || !name)
		return STORE_NOTFOUND;
	uint32_t id;
	int st = mailbox_lookup_tx(t->txn, t->s, user_id, mbox_canon(name), &id);
	if (st)
		return st;
	return mailbox_get_id_tx(t->txn, t->s, id, out);
}

int store_mailbox_get_id(store_txn *t, uint32_t mailbox_id, struct store_mailbox *out)
{
	if (!t)
		return STORE_NOTFOUND;
	return mailbox_get_id_tx(t->txn, t->s, mailbox_id, out);
}

/* Walk the mailbox ids of USER_ID in name order (a prefix scan of
 * mailbox_names); FN returns non-zero to stop, and that value is returned
 * as *STOPPED. */
static int mailbox_ids_foreach(MDB_txn *txn, store *s, uint32_t user_id,
                               int (*fn)(uint32_t id, void *arg), void *arg)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn, s->db_names, &c);
	if (rc)
		return status_of(rc);
	uint8_t pk[4];
	be32_put(pk, user_id);
	MDB_val k = val_of(pk, 4), v;
	int st = STORE_OK;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 4 || memcmp(k.mv_data, pk, 4) != 0)
			break;
		if (v.mv_size != 4) {
			st = STORE_CORRUPT;
			break;
		}
		if ((st = fn(be32_get(v.mv_data), arg)) != 0)
			break;
	}
	mdb_cursor_close(c);
	if (st)
		return st;
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : status_of(rc);
}

struct mb_walk {
	store_txn *t;
	int (*fn)(const struct store_mailbox *, void *);
	void *arg;
	uint32_t use;                   /* by_use: the bit wanted */
	struct store_mailbox *found;
	int err;
};

#define WALK_STOP (-1)          /* not a STORE_* value: the walk was stopped */

static int mb_walk_each(uint32_t id, void *arg)
{
	struct mb_walk *w = arg;
	struct store_mailbox m;
	int st = mailbox_get_id_tx(w->t->txn, w->t->s, id, &m);
	if (st) {
		w->err = st;
		return WALK_STOP;
	}
	if (w->found) {
		if (!(m.special_use & w->use))
			return 0;
		*w->found = m;
		return WALK_STOP;
	}
	return w->fn(&m, w->arg) ? WALK_STOP : 0;
}

int store_mailbox_foreach(store_txn *t, uint32_t user_id,
                          int (*fn)(const struct store_mailbox *, void *), void *arg)
{
	struct mb_walk w = { t, fn, arg, 0, NULL, STORE_OK };
	int st = mailbox_ids_foreach(t->txn, t->s, user_id, mb_walk_each, &w);
	if (w.err)
		return w.err;
	return st == WALK_STOP ? STORE_OK : st;
}

int store_mailbox_by_use(store_txn *t, uint32_t user_id, uint32_t use,
                         struct store_mailbox *out)
{
	struct mb_walk w = { t, NULL, NULL, use, out, STORE_OK };
	int st = mailbox_ids_foreach(t->txn, t->s, user_id, mb_walk_each, &w);
	if (w.err)
		return w.err;
	if (st == WALK_STOP)
		return STORE_OK;
	return st ? st : STORE_NOTFOUND;
}

/* ------------------------------------------------------ subscriptions */

/*
 * subscriptions: (u32 user id, mailbox name) -> u8 version.  The key is a
 * name, not a mailbox: it outlives DELETE and RENAME leaves it where it is
 * (RFC 3501 §6.3.6 MUST NOT remove it, RFC 9051 §6.3.6 and §6.3.7).  A
 * read-only open of a store older than the database reads the subscribed
 * byte of the mailbox records instead, as that store's writers did.
 */
struct sub_walk {
	store_txn *t;
	int (*fn)(const char *name, void *arg);
	void *arg;
	int err;
};

static int sub_old_each(uint32_t id, void *arg)
{
	struct sub_walk *w = arg;
	uint8_t k[4];
	be32_put(k, id);
	MDB_val v;
	struct store_mailbox m;
	bool sub = false;
	int st = tx_get(w->t->txn, w->t->s->db_mailboxes, k, 4, &v);
	if (st == STORE_OK)
		st = mailbox_decode(id, &v, &m, &sub);
	if (st) {
		w->err = st;
		return WALK_STOP;
	}
	if (!sub)
		return 0;
	return w->fn(m.name, w->arg) ? WALK_STOP : 0;
}

int store_subscription_foreach(store_txn *t, uint32_t user_id,
                               int (*fn)(const char *name, void *arg), void *arg)
{
	if (!t->s->have_subs) {
		struct sub_walk w = { t, fn, arg, STORE_OK };
		int st = mailbox_ids_foreach(t->txn, t->s, user_id, sub_old_each, &w);
		if (w.err)
			return w.err;
		return st == WALK_STOP ? STORE_OK : st;
	}
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->s->db_subs, &c);
	if (rc)
		return status_of(rc);
	uint8_t pk[4];
	be32_put(pk, user_id);
	MDB_val k = val_of(pk, 4), v;
	int st = STORE_OK;
	char name[NAME_MAX_LEN + 1];
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < 4 || memcmp(k.mv_data, pk, 4) != 0)
			break;
		size_t n = k.mv_size - 4;
		if (n == 0 || n > NAME_MAX_LEN) {
			st = STORE_CORRUPT;
			break;
		}
		memcpy(name, (const uint8_t *)k.mv_data + 4, n);
		name[n] = '\0';
		if (fn(name, arg))
			break;
	}
	mdb_cursor_close(c);
	if (st)
		return st;
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : status_of(rc);
}

int store_subscribed(store_txn *t, uint32_t user_id, const char *name)
{
	if (!t || !name)
		return STORE_NOTFOUND;
	name = mbox_canon(name);
	if (!name_ok(name))
		return STORE_NOTFOUND;
	MDB_val v;
	if (!t->s->have_subs) {
		uint32_t id;
		struct store_mailbox m;
		bool sub = false;
		uint8_t k[4];
		int st = mailbox_lookup_tx(t->txn, t->s, user_id, name, &id);
		if (st)
			return st;
		be32_put(k, id);
		if ((st = tx_get(t->txn, t->s->db_mailboxes, k, 4, &v)) != 0 ||
		    (st = mailbox_decode(id, &v, &m, &sub)) != 0)
			return st == STORE_NOTFOUND ? STORE_CORRUPT : st;
		return sub ? STORE_OK : STORE_NOTFOUND;
	}
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, user_id, name);
	return tx_get(t->txn, t->s->db_subs, k, kl, &v);
}

/* Look a message up; *REC, if not NULL, is where its record is in the map. */
static int message_get_tx(MDB_txn *txn, store *s, uint32_t mailbox_id, uint32_t uid,
                          struct store_message *out, const void **rec)
{
	uint8_t k[8];
	key_msg(k, mailbox_id, uid);
	MDB_val v;
	int st = tx_get(txn, s->db_messages, k, 8, &v);
	if (st)
		return st;
	if (rec)
		*rec = v.mv_data;
	return message_decode(uid, &v, out);
}

/*
 * Readahead.  The map is opened MDB_NORDAHEAD (MADV_RANDOM): a page fault
 * reads the one page, where the kernel would otherwise read around it as
 * much as the disk's read_ahead_kb (8 MiB on the benchmark machine), at
 * every miss, for the one random B-tree leaf a delivery needs
 * (docs/store.md).  Readers that go through the file in order ask for it
 * themselves: a large body whole, and a run of record reads the stretch
 * ahead of it.
 */
#define READ_AHEAD ((size_t)1 << 20)    /* a run of records asks this far */
#define READ_AHEAD_RUN 4                /* after this many forward leaf steps */
#define BODY_AHEAD_MIN ((size_t)16 << 10)

/* LMDB's page size is the system's, which madvise aligns to. */
static void map_willneed(const store *s, const void *p, size_t len)
{
	if (!s->psize)
		return;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(s->psize - 1);
	(void)madvise((void *)a, (uintptr_t)p + len - a, MADV_WILLNEED);
}

/* Per thread: the leaf of the last record read, the forward steps from
 * leaf to nearby leaf in a row, and how far the last request reaches; the
 * last large body asked for (store_body_get). */
static _Thread_local uintptr_t ra_leaf, ra_end;
static _Thread_local unsigned ra_run;
static _Thread_local const void *ra_body;

/* A record at REC was read: if this thread is going through leaves in file
 * order, keep the stretch ahead of it coming. */
static void map_follow(const store *s, const void *rec)
{
	if (!s->psize)
		return;
	uintptr_t pg = (uintptr_t)rec & ~(uintptr_t)(s->psize - 1);
	if (pg == ra_leaf)
		return;
	bool forward = pg > ra_leaf && pg - ra_leaf <= READ_AHEAD;
	ra_leaf = pg;
	ra_run = forward ? ra_run + 1 : 0;
	if (ra_run >= READ_AHEAD_RUN && (pg + READ_AHEAD / 2 >= ra_end || pg < ra_end - READ_AHEAD)) {
		map_willneed(s, (const void *)pg, READ_AHEAD);
		ra_end = pg + READ_AHEAD;
	}
}

int store_message_get(store_txn *t, uint32_t mailbox_id, uint32_t uid,
                      struct store_message *out)
{
	if (!t)
		return STORE_NOTFOUND;
	const void *rec;
	int st = message_get_tx(t->txn, t->s, mailbox_id, uid, out, &rec);
	if (st == STORE_OK)
		map_follow(t->s, rec);
	return st;
}

int store_message_foreach(store_txn *t, uint32_t mailbox_id, uint32_t first_uid,
                          int (*fn)(const struct store_message *, void *), void *arg)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->s->db_messages, &c);
	if (rc)
		return status_of(rc);
	uint8_t k0[8];
	key_msg(k0, mailbox_id, first_uid);
	MDB_val k = val_of(k0, 8), v;
	int st = STORE_OK;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8 || be32_get(k.mv_data) != mailbox_id)
			break;
		map_follow(t->s, v.mv_data);
		struct store_message m;
		st = message_decode(be32_get((const uint8_t *)k.mv_data + 4), &v, &m);
		if (st || fn(&m, arg))
			break;
	}
	mdb_cursor_close(c);
	if (st)
		return st;
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : status_of(rc);
}

int store_body_get(store_txn *t, const uint8_t body_id[32], const char **data,
                   size_t *len)
{
	if (!t)
		return STORE_NOTFOUND;
	MDB_val v;
	int st = tx_get(t->txn, t->s->db_bodies, body_id, 32, &v);
	if (st)
		return st;
	/* A large body's pages are contiguous: read them ahead as one, once.
	 * POP3 RETR and IMAP FETCH look the body up again for each 64 KiB
	 * slice they send, and a WILLNEED over a body already cached still
	 * walks its every page.  (The same address a while later may be
	 * another body; it then goes without the hint, and is read as it
	 * is sent.) */
	if (v.mv_size >= BODY_AHEAD_MIN && v.mv_data != ra_body) {
		map_willneed(t->s, v.mv_data, v.mv_size);
		ra_body = v.mv_data;
	}
	*data = v.mv_size ? v.mv_data : "";
	*len = v.mv_size;
	return STORE_OK;
}

int store_mailbox_keywords(store_txn *t, uint32_t mailbox_id, const char *names[64],
                           size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < KEYWORDS_MAX; i++)
		names[i] = NULL;
	if (!t)
		return STORE_NOTFOUND;
	struct store_mailbox mb;
	int st = mailbox_get_id_tx(t->txn, t->s, mailbox_id, &mb);
	if (st || !t->s->have_late_dbs)
		return st;
	uint8_t k[4];
	be32_put(k, mailbox_id);
	MDB_val v;
	st = tx_get(t->txn, t->s->db_keywords, k, 4, &v);
	if (st == STORE_NOTFOUND)
		return STORE_OK;        /* no keyword used yet */
	if (st)
		return st;
	size_t lens[KEYWORDS_MAX];
	return keywords_decode(&v, names, lens, n);
}

int store_body_mime(store_txn *t, const uint8_t body_id[32], const void **blob,
                    size_t *len)
{
	if (!t)
		return STORE_NOTFOUND;
	MDB_val v;
	struct info_loc l;
	int st = info_find(t->txn, t->s, body_id, &l, &v);
	if (st)
		return st;
	if (v.mv_size > BODY_INFO_SIZE) {
		*blob = (const uint8_t *)v.mv_data + BODY_INFO_SIZE;
		*len = v.mv_size - BODY_INFO_SIZE;
		return STORE_OK;
	}
	/* An older body: its blob, if any, is in body_mime. */
	if (!t->s->have_late_dbs)
		return STORE_NOTFOUND;
	st = tx_get(t->txn, t->s->db_body_mime, body_id, 32, &v);
	if (st)
		return st;
	*blob = v.mv_data;
	*len = v.mv_size;
	return STORE_OK;
}

int store_changes_since(store_txn *t, uint32_t mailbox_id, uint64_t since,
                        int (*fn)(const struct store_change *, void *), void *arg)
{
	if (since == UINT64_MAX)
		return STORE_OK;
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->s->db_changes, &c);
	if (rc)
		return status_of(rc);
	uint8_t k0[12];
	key_change(k0, mailbox_id, since + 1);
	MDB_val k = val_of(k0, 12), v;
	int st = STORE_OK;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 12 || be32_get(k.mv_data) != mailbox_id)
			break;
		if (v.mv_size < 5) {
			st = STORE_CORRUPT;
			break;
		}
		const uint8_t *p = v.mv_data;
		struct store_change ch = {
			.modseq = be64_get((const uint8_t *)k.mv_data + 4),
			.uid = be32_get(p),
			.kind = p[4],
		};
		if (fn(&ch, arg))
			break;
	}
	mdb_cursor_close(c);
	if (st)
		return st;
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : status_of(rc);
}

/* ------------------------------------------------------ write primitives */

/* One write txn.  TXN is the request's child txn while a request is being
 * applied.  FATAL records an LMDB error that dooms the whole txn (map or
 * txn full: the batch is retried after growing the map, or split). */
struct wtx {
	store *s;
	MDB_txn *txn;
	int64_t now;
	int fatal;
	uint32_t *touched;
	size_t ntouched, captouched;
	bool oom;
	/* The next new body's number (0: not read in this txn yet), and what
	 * it was when read: write_run stores it if it moved. */
	uint64_t body_next, body_read;
};

static int w_fail(struct wtx *w, int rc)
{
	if ((rc == MDB_MAP_FULL || rc == MDB_TXN_FULL) && !w->fatal)
		w->fatal = rc;
	return status_of(rc);
}

static int w_get(struct wtx *w, MDB_dbi dbi, const void *k, size_t kl, MDB_val *v)
{
	return tx_get(w->txn, dbi, k, kl, v);
}

static int w_put(struct wtx *w, MDB_dbi dbi, const void *k, size_t kl, const void *d,
                 size_t dl)
{
	MDB_val key = val_of(k, kl), val = val_of(d, dl);
	int rc = mdb_put(w->txn, dbi, &key, &val, 0);
	return rc ? w_fail(w, rc) : STORE_OK;
}

/* Delete a key; a missing key is fine. */
static int w_del(struct wtx *w, MDB_dbi dbi, const void *k, size_t kl)
{
	MDB_val key = val_of(k, kl);
	int rc = mdb_del(w->txn, dbi, &key, NULL);
	return rc == 0 || rc == MDB_NOTFOUND ? STORE_OK : w_fail(w, rc);
}

static int w_meta_put_u64(struct wtx *w, const char *key, uint64_t val)
{
	uint8_t b[8];
	be64_put(b, val);
	return w_put(w, w->s->db_meta, key, strlen(key), b, 8);
}

/* Remember a mailbox the txn changed, so its watchers are called. */
static void w_touch(struct wtx *w, uint32_t mailbox_id)
{
	if (w->ntouched && w->touched[w->ntouched - 1] == mailbox_id)
		return;
	if (w->ntouched == w->captouched) {
		size_t cap = w->captouched ? w->captouched * 2 : 16;
		uint32_t *p = realloc(w->touched, cap * sizeof *p);
		if (!p) {
			w->oom = true;  /* watchers will all be called instead */
			return;
		}
		w->touched = p;
		w->captouched = cap;
	}
	w->touched[w->ntouched++] = mailbox_id;
}

static int w_user_get(struct wtx *w, const char *name, struct urec *r)
{
	MDB_val v;
	int st = w_get(w, w->s->db_users, name, strlen(name), &v);
	return st ? st : urec_decode(&v, &w->s->opt, r);
}

static int w_user_put(struct wtx *w, const struct urec *r)
{
	uint8_t buf[128 + HASH_MAX_LEN + NAME_MAX_LEN + SCRAM_MAX_LEN];
	size_t n = urec_encode(r, buf, sizeof buf);
	if (!n)
		return STORE_INVALID;
	return w_put(w, w->s->db_users, r->name, strlen(r->name), buf, n);
}

/* The owner of a mailbox, found through user_ids (id -> name). */
static int w_user_by_id(struct wtx *w, uint32_t user_id, struct urec *r)
{
	uint8_t k[4];
	be32_put(k, user_id);
	MDB_val v;
	int st = w_get(w, w->s->db_user_ids, k, 4, &v);
	if (st)
		return st == STORE_NOTFOUND ? STORE_CORRUPT : st;
	char name[NAME_MAX_LEN + 1];
	if (v.mv_size == 0 || v.mv_size > NAME_MAX_LEN)
		return STORE_CORRUPT;
	memcpy(name, v.mv_data, v.mv_size);
	name[v.mv_size] = '\0';
	st = w_user_get(w, name, r);
	return st == STORE_NOTFOUND ? STORE_CORRUPT : st;
}

static int w_mbox_get(struct wtx *w, uint32_t id, struct mrec *r)
{
	uint8_t k[4];
	be32_put(k, id);
	MDB_val v;
	int st = w_get(w, w->s->db_mailboxes, k, 4, &v);
	return st ? st : mrec_decode(id, &v, r);
}

static int w_mbox_put(struct wtx *w, const struct mrec *r)
{
	uint8_t k[4], buf[128 + NAME_MAX_LEN];
	be32_put(k, r->m.id);
	size_t n = mrec_encode(r, buf, sizeof buf);
	if (!n)
		return STORE_INVALID;
	return w_put(w, w->s->db_mailboxes, k, 4, buf, n);
}

static int w_mbox_by_name(struct wtx *w, uint32_t user_id, const char *name, struct mrec *r)
{
	uint32_t id;
	int st = mailbox_lookup_tx(w->txn, w->s, user_id, mbox_canon(name), &id);
	if (st)
		return st;
	st = w_mbox_get(w, id, r);
	return st == STORE_NOTFOUND ? STORE_CORRUPT : st;
}

static int w_msg_put(struct wtx *w, uint32_t mailbox_id, const struct store_message *m)
{
	uint8_t k[8], buf[MSG_REC_SIZE];
	key_msg(k, mailbox_id, m->uid);
	message_encode(m, buf);
	return w_put(w, w->s->db_messages, k, 8, buf, sizeof buf);
}

static int w_change_put(struct wtx *w, uint32_t mailbox_id, uint64_t modseq, uint32_t uid,
                        int kind)
{
	uint8_t k[12], v[5];
	key_change(k, mailbox_id, modseq);
	be32_put(v, uid);
	v[4] = (uint8_t)kind;
	return w_put(w, w->s->db_changes, k, 12, v, 5);
}

static int w_change_del(struct wtx *w, uint32_t mailbox_id, uint64_t modseq)
{
	uint8_t k[12];
	key_change(k, mailbox_id, modseq);
	return w_del(w, w->s->db_changes, k, 12);
}

/* ------------------------------------------------------ keyword tables */

/* A mailbox's keyword table, copied out of the map so that later writes
 * in the txn cannot invalidate it.  About 16 KiB: callers allocate it. */
struct kwtab {
	uint32_t mailbox_id;
	size_t n;
	bool dirty;             /* a name was added: write it back */
	char name[KEYWORDS_MAX][KEYWORD_MAX_LEN + 1];
};

/* A keyword is an IMAP flag-keyword, an atom (RFC 3501 section 9: no SP,
 * CTL, 8-bit octet or any of ( ) { % * " \ ]), here also capped in
 * length: names land in every FLAGS response of the mailbox. */
static bool keyword_ok(const char *k)
{
	if (!k)
		return false;
	size_t len = strlen(k);
	if (len == 0 || len > KEYWORD_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c))
			return false;
	}
	return true;
}

static bool keywords_ok(char *const *kw, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!keyword_ok(kw[i]))
			return false;
	return true;
}

static int kwtab_load(struct wtx *w, uint32_t mailbox_id, struct kwtab *t)
{
	t->mailbox_id = mailbox_id;
	t->n = 0;
	t->dirty = false;
	uint8_t k[4];
	be32_put(k, mailbox_id);
	MDB_val v;
	int st = w_get(w, w->s->db_keywords, k, 4, &v);
	if (st == STORE_NOTFOUND)
		return STORE_OK;
	if (st)
		return st;
	const char *names[KEYWORDS_MAX];
	size_t lens[KEYWORDS_MAX];
	if ((st = keywords_decode(&v, names, lens, &t->n)) != 0)
		return st;
	for (size_t i = 0; i < t->n; i++) {
		if (lens[i] > KEYWORD_MAX_LEN)
			return STORE_CORRUPT;
		memcpy(t->name[i], names[i], lens[i] + 1);
	}
	return STORE_OK;
}

/* Write T back, encoding straight into the map (MDB_RESERVE). */
static int kwtab_save(struct wtx *w, struct kwtab *t)
{
	size_t size = 2;
	for (size_t i = 0; i < t->n; i++)
		size += 2 + strlen(t->name[i]) + 1;
	uint8_t k[4];
	be32_put(k, t->mailbox_id);
	MDB_val key = val_of(k, 4), val = { size, NULL };
	int rc = mdb_put(w->txn, w->s->db_keywords, &key, &val, MDB_RESERVE);
	if (rc)
		return w_fail(w, rc);
	struct enc e = { val.mv_data, 0, size, false };
	enc_u8(&e, REC_VERSION);
	enc_u8(&e, (uint8_t)t->n);
	for (size_t i = 0; i < t->n; i++)
		enc_str(&e, t->name[i], strlen(t->name[i]));
	if (e.over || e.len != size)
		return STORE_INVALID;
	t->dirty = false;
	return STORE_OK;
}

/* The bit of keyword NAME (compared case-insensitively, RFC 3501 section
 * 2.3.2), adding it to T if ADD.  -1: absent and not added; -2: T is full. */
static int kwtab_bit(struct kwtab *t, const char *name, bool add)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcasecmp(t->name[i], name) == 0)
			return (int)i;
	if (!add)
		return -1;
	if (t->n == KEYWORDS_MAX)
		return -2;
	memcpy(t->name[t->n], name, strlen(name) + 1);  /* keyword_ok bounded it */
	t->dirty = true;
	return (int)t->n++;
}

/* The bit set of names KW[0..N-1] in T, adding new ones if ADD; a 65th
 * distinct name is STORE_INVALID. */
static int kwtab_bits(struct kwtab *t, char *const *kw, size_t n, bool add, uint64_t *bits)
{
	*bits = 0;
	for (size_t i = 0; i < n; i++) {
		int b = kwtab_bit(t, kw[i], add);
		if (b == -2)
			return STORE_INVALID;
		if (b >= 0)
			*bits |= (uint64_t)1 << b;
	}
	return STORE_OK;
}

/*
 * Keyword bits are per mailbox: carry a message's BITS from mailbox SRC's
 * table over to DST's, adding names DST lacks.  A name that no longer fits
 * in DST's full table is dropped rather than failing a COPY or MOVE (RFC
 * 3501 section 6.4.7: flags SHOULD be preserved).
 */
static int keywords_remap(struct wtx *w, uint32_t src, uint32_t dst, uint64_t *bits)
{
	if (src == dst || *bits == 0)
		return STORE_OK;
	struct kwtab *t = malloc(2 * sizeof *t);
	if (!t)
		return STORE_TEMPFAIL;
	int st = kwtab_load(w, src, &t[0]);
	if (!st)
		st = kwtab_load(w, dst, &t[1]);
	uint64_t out = 0;
	for (size_t i = 0; !st && i < t[0].n; i++) {
		if (!(*bits & (uint64_t)1 << i))
			continue;
		int b = kwtab_bit(&t[1], t[0].name[i], true);
		if (b >= 0)
			out |= (uint64_t)1 << b;
	}
	if (!st && t[1].dirty)
		st = kwtab_save(w, &t[1]);
	free(t);
	if (!st)
		*bits = out;
	return st;
}

/* ----------------------------------------------------------- the bodies */

/*
 * Write the info record at L: INFO (refcount and sizes) followed by BLOB,
 * the MIME structure msg.c serialised at ingest (the writer only copies
 * it).  One record next to the bytes, so a new body changes one B-tree and
 * not three: every page a commit dirties is one more scattered write for
 * its flush to wait on (docs/benchmarks.md).
 */
static int info_put(struct wtx *w, const struct info_loc *l, const uint8_t info[BODY_INFO_SIZE],
                    const void *blob, size_t bloblen)
{
	if (bloblen == 0)
		return w_put(w, l->dbi, l->key, l->klen, info, BODY_INFO_SIZE);
	uint8_t *b = malloc(BODY_INFO_SIZE + bloblen);
	if (!b)
		return STORE_TEMPFAIL;
	memcpy(b, info, BODY_INFO_SIZE);
	memcpy(b + BODY_INFO_SIZE, blob, bloblen);
	int st = w_put(w, l->dbi, l->key, l->klen, b, BODY_INFO_SIZE + bloblen);
	free(b);
	return st;
}

/* Give the body whose info record V is at L reference count REFS. */
static int body_refs_set(struct wtx *w, const struct info_loc *l, const MDB_val *v,
                         uint32_t refs)
{
	/* V points into the map, which the put may change: copy it first. */
	uint8_t *b = malloc(v->mv_size);
	if (!b)
		return STORE_TEMPFAIL;
	memcpy(b, v->mv_data, v->mv_size);
	be32_put(b, refs);
	int st = w_put(w, l->dbi, l->key, l->klen, b, v->mv_size);
	free(b);
	return st;
}

/* Take a reference on body ID, which must exist. */
static int body_ref(struct wtx *w, const uint8_t id[32])
{
	MDB_val v;
	struct info_loc l;
	int st = info_find(w->txn, w->s, id, &l, &v);
	if (st == STORE_OK) {
		if (v.mv_size < BODY_INFO_SIZE)
			return STORE_CORRUPT;
		uint32_t refs = be32_get(v.mv_data);
		if (refs == UINT32_MAX)
			return STORE_INVALID;
		return body_refs_set(w, &l, &v, refs + 1);
	}
	return st == STORE_NOTFOUND ? STORE_CORRUPT : st; /* a missing body */
}

/*
 * A body's id, its key in `bodies`: eight zero octets, the body's number
 * (big-endian u64), sixteen zero octets.  Numbers rise, so every new body
 * and its info record go at the end of the ids' range, into the same few
 * leaves, which the cache keeps: a key spread at random over the tree, as
 * a content hash is, made each delivery read a leaf back from the disk
 * under memory pressure (docs/benchmarks.md).  A body written before
 * 2026-12-07 is keyed by the SHA-256 of its bytes, which starts with
 * eight zero octets with a chance of 2^-64; both kinds are read alike.
 */
static void body_id_make(uint64_t num, uint8_t id[32])
{
	memset(id, 0, 32);
	be64_put(id + 8, num);
}

uint64_t store_body_number(const uint8_t body_id[32])
{
	static const uint8_t zero[16];
	if (memcmp(body_id, zero, 8) != 0 || memcmp(body_id + 16, zero, 16) != 0)
		return 0;
	return be64_get(body_id + 8);
}

/* The highest number of a body in `bodies` (0 if none), at the end of
 * the ids' range. */
static int body_number_last(struct wtx *w, uint64_t *out)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(w->txn, w->s->db_bodies, &c);
	if (rc)
		return w_fail(w, rc);
	uint8_t k[32];
	memset(k, 0, 8);
	memset(k + 8, 0xff, 24);        /* past every id's number */
	MDB_val key = val_of(k, sizeof k), v;
	rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
	rc = mdb_cursor_get(c, &key, &v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
	/* A body's key or its info record's (the same 32 octets and a tag). */
	*out = rc == 0 && key.mv_size >= 32 ? store_body_number(key.mv_data) : 0;
	mdb_cursor_close(c);
	return rc && rc != MDB_NOTFOUND ? w_fail(w, rc) : STORE_OK;
}

/* The number of the new body the writer adds next.  Numbers are never
 * given twice (an EMAILID names one content for good, RFC 8474 section
 * 5.1), so the next one is kept under BODY_NEXT_KEY, read once a txn and
 * written back before its commit (write_run); a store that has none yet
 * starts past the highest number in `bodies`. */
static int body_number_next(struct wtx *w, uint64_t *out)
{
	if (w->body_next == 0) {
		MDB_val v;
		int st = w_get(w, w->s->db_main, BODY_NEXT_KEY, strlen(BODY_NEXT_KEY), &v);
		if (st == STORE_OK && v.mv_size == 8) {
			w->body_next = be64_get(v.mv_data);
		} else if (st == STORE_OK || st == STORE_NOTFOUND) {
			uint64_t last;
			if ((st = body_number_last(w, &last)) != 0)
				return st;
			w->body_next = last + 1;
		} else {
			return st;
		}
		w->body_read = w->body_next;
	}
	if (w->body_next == 0 || w->body_next == UINT64_MAX)
		return STORE_INVALID;   /* 2^64 bodies: not in this universe */
	*out = w->body_next++;
	return STORE_OK;
}

/* What body_new tells bodies apart by before comparing them: the size and
 * a mix of the first and the last 4 KiB (the Received lines on top and
 * the end of the text differ between any two messages but copies). */
#define FP_SPAN 4096

static uint64_t fp_mix(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t x;
		memcpy(&x, p + i, 8);
		h = (h ^ x) * 0x9e3779b97f4a7c15u;
		h ^= h >> 29;
	}
	for (size_t i = n & ~(size_t)7; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3u;
	return h;
}

static uint64_t body_fingerprint(const struct store_msg_info *mi)
{
	size_t n = mi->size;
	uint64_t h = fp_mix(0xcbf29ce484222325u ^ n, mi->data, n < FP_SPAN ? n : FP_SPAN);
	if (n > FP_SPAN)
		h = fp_mix(h, mi->data + (n > 2 * FP_SPAN ? n - FP_SPAN : FP_SPAN),
		           n > 2 * FP_SPAN ? FP_SPAN : n - FP_SPAN);
	return h;
}

/*
 * Store the bytes of MI as a body and set ID to it, with a reference
 * taken.  The same bytes as one of the bodies written last (RECENT_BODIES
 * of them, by fingerprint, then compared octet by octet) take a reference
 * on that body instead: one message to 30 recipients costs one body, in
 * one LMTP transaction or in several close together, as an MTA splits a
 * long recipient list.  Any other copy costs a body of its own, its
 * bytes being looked for nowhere else (docs/store.md, "Single instance").
 */
static int body_new(struct wtx *w, const struct store_msg_info *mi, uint8_t id[32])
{
	uint64_t fp = body_fingerprint(mi);
	struct recent_body *rb = &w->s->recent[fp % RECENT_BODIES];
	MDB_val v;
	if (rb->num && rb->fp == fp) {
		body_id_make(rb->num, id);
		/* The slot may name a body since deleted, or one of an aborted
		 * txn whose number went to other bytes: the bytes decide. */
		if (w_get(w, w->s->db_bodies, id, 32, &v) == STORE_OK && v.mv_size == mi->size &&
		    memcmp(v.mv_data, mi->data, mi->size) == 0)
			return body_ref(w, id);
	}
	uint64_t num;
	int st = body_number_next(w, &num);
	if (st)
		return st;
	body_id_make(num, id);
	uint8_t info[BODY_INFO_SIZE];
	be32_put(info, 1);
	be32_put(info + 4, (uint32_t)mi->size);
	be32_put(info + 8, (uint32_t)mi->lines);
	be32_put(info + 12, (uint32_t)mi->header_size);
	if ((st = w_put(w, w->s->db_bodies, id, 32, mi->data, mi->size)) != 0)
		return st;
	struct info_loc l;
	info_loc_new(w->s, id, &l);
	if ((st = info_put(w, &l, info, mi->mime, mi->mime ? mi->mime_len : 0)) != 0)
		return st;
	rb->fp = fp;
	rb->num = num;
	return STORE_OK;
}

/* Drop a reference; the bytes go when the last one does. */
static int body_unref(struct wtx *w, const uint8_t id[32])
{
	MDB_val v;
	struct info_loc l;
	int st = info_find(w->txn, w->s, id, &l, &v);
	if (st == STORE_NOTFOUND)
		return STORE_OK;        /* already gone: nothing to release */
	if (st)
		return st;
	if (v.mv_size < BODY_INFO_SIZE)
		return STORE_CORRUPT;
	uint32_t refs = be32_get(v.mv_data);
	if (refs > 1)
		return body_refs_set(w, &l, &v, refs - 1);
	if ((st = w_del(w, l.dbi, l.key, l.klen)) != 0 ||
	    (st = w_del(w, w->s->db_body_mime, id, 32)) != 0)
		return st;
	return w_del(w, w->s->db_bodies, id, 32);
}

/*
 * Drop the body reference of an expunged message: at once, or (with
 * expunge_retention) by recording it in `expunged`, keyed by time first so
 * the purge reads only the expired front of the table.
 */
static int body_release_expunged(struct wtx *w, uint32_t mailbox_id,
                                 const struct store_message *m)
{
	if (w->s->opt.expunge_retention == 0)
		return body_unref(w, m->body_id);
	uint8_t k[16], buf[MSG_REC_SIZE];
	be64_put(k, (uint64_t)w->now);
	be32_put(k + 8, mailbox_id);
	be32_put(k + 12, m->uid);
	message_encode(m, buf);
	return w_put(w, w->s->db_expunged, k, 16, buf, sizeof buf);
}

/* Release retained bodies whose time is up; bounded so no commit grows
 * much because of it.  Errors other than map/txn full are left for the
 * next commit to meet. */
static void purge_expunged(struct wtx *w)
{
	MDB_cursor *c;
	if (mdb_cursor_open(w->txn, w->s->db_expunged, &c) != 0)
		return;
	if (w->now < 0 || (uint64_t)w->now < w->s->opt.expunge_retention) {
		mdb_cursor_close(c);
		return;
	}
	uint64_t limit = (uint64_t)w->now - w->s->opt.expunge_retention;
	for (int i = 0; i < PURGE_BATCH && !w->fatal; i++) {
		MDB_val k, v;
		if (mdb_cursor_get(c, &k, &v, MDB_FIRST) != 0)
			break;
		if (k.mv_size != 16 || be64_get(k.mv_data) > limit)
			break;
		struct store_message m;
		bool ok = message_decode(0, &v, &m) == STORE_OK;
		int rc = mdb_cursor_del(c, 0);
		if (rc) {
			w_fail(w, rc);
			break;
		}
		if (ok)
			body_unref(w, m.body_id);
	}
	mdb_cursor_close(c);
}

/* ---------------------------------------------------- message primitives */

static void counters_add(struct mrec *mb, const struct store_message *m, int sign)
{
	uint32_t d = sign > 0 ? 1u : (uint32_t)-1;
	mb->m.messages += d;
	if (!(m->flags & STORE_F_SEEN))
		mb->m.unseen += d;
	if (m->flags & STORE_F_DELETED)
		mb->m.deleted += d;
	if (sign > 0)
		mb->m.bytes += m->size;
	else
		mb->m.bytes -= m->size;
}

/* Add M to MB under the next UID and modseq, and write MB back. */
static int msg_insert(struct wtx *w, struct mrec *mb, struct store_message *m)
{
	if (mb->m.uidnext == 0 || mb->m.uidnext == UINT32_MAX)
		return STORE_INVALID;   /* UIDs exhausted (RFC 3501 2.3.1.1) */
	m->uid = mb->m.uidnext++;
	m->modseq = ++mb->m.highestmodseq;
	int st = w_msg_put(w, mb->m.id, m);
	if (!st)
		st = w_change_put(w, mb->m.id, m->modseq, m->uid, STORE_CHANGE_FLAGS);
	if (st)
		return st;
	counters_add(mb, m, 1);
	w_touch(w, mb->m.id);
	return w_mbox_put(w, mb);
}

/* Remove message M (as read) from MB leaving an EXPUNGE tombstone, and
 * write MB back.  The body reference is the caller's business. */
static int msg_remove(struct wtx *w, struct mrec *mb, const struct store_message *m)
{
	uint8_t k[8];
	key_msg(k, mb->m.id, m->uid);
	int st = w_del(w, w->s->db_messages, k, 8);
	if (!st)
		st = w_change_del(w, mb->m.id, m->modseq);
	if (!st)
		st = w_change_put(w, mb->m.id, ++mb->m.highestmodseq, m->uid,
		                  STORE_CHANGE_EXPUNGE);
	if (st)
		return st;
	counters_add(mb, m, -1);
	w_touch(w, mb->m.id);
	return w_mbox_put(w, mb);
}

/* Add NAME (canonical) to, or with ON false remove it from, USER_ID's
 * subscriptions; either is idempotent. */
static int sub_set(struct wtx *w, uint32_t user_id, const char *name, bool on)
{
	static const uint8_t rec[1] = { REC_VERSION };
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, user_id, name);
	if (on)
		return w_put(w, w->s->db_subs, k, kl, rec, sizeof rec);
	return w_del(w, w->s->db_subs, k, kl);
}

/* Create mailbox NAME for USER_ID.  UIDVALIDITY = max(now, last issued + 1)
 * so a deleted and recreated mailbox never reuses one (RFC 3501 2.3.1.1). */
static int mbox_create(struct wtx *w, uint32_t user_id, const char *name, uint32_t use,
                       struct mrec *out)
{
	if (!name_ok(name))
		return STORE_INVALID;
	name = mbox_canon(name);
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, user_id, name);
	MDB_val v;
	int st = w_get(w, w->s->db_names, k, kl, &v);
	if (st == STORE_OK)
		return STORE_EXISTS;
	if (st != STORE_NOTFOUND)
		return st;
	uint64_t next_id, last_uv;
	if ((st = meta_get_u64(w->txn, w->s, "next_mailbox_id", &next_id)) != 0 ||
	    (st = meta_get_u64(w->txn, w->s, "last_uidvalidity", &last_uv)) != 0)
		return st;
	if (next_id == 0)
		next_id = 1;
	uint64_t uv = (uint64_t)w->now > last_uv ? (uint64_t)w->now : last_uv + 1;
	if (next_id > UINT32_MAX || uv > UINT32_MAX)
		return STORE_INVALID;
	struct mrec r;
	memset(&r, 0, sizeof r);
	r.m.id = (uint32_t)next_id;
	r.m.user_id = user_id;
	r.m.uidvalidity = (uint32_t)uv;
	r.m.uidnext = 1;
	r.m.highestmodseq = 1;  /* messages get modseqs > 1: never 0 (RFC 7162) */
	r.m.special_use = use;
	memcpy(r.name, name, strlen(name) + 1);
	r.m.name = r.name;
	uint8_t idb[4];
	be32_put(idb, r.m.id);
	if ((st = w_meta_put_u64(w, "next_mailbox_id", next_id + 1)) != 0 ||
	    (st = w_meta_put_u64(w, "last_uidvalidity", uv)) != 0 ||
	    (st = w_put(w, w->s->db_names, k, kl, idb, 4)) != 0 ||
	    (st = w_mbox_put(w, &r)) != 0)
		return st;
	w_touch(w, r.m.id);
	if (out) {
		*out = r;
		out->m.name = out->name;
	}
	return STORE_OK;
}

/* Delete every key of DBI that starts with the 4-byte PREFIX, calling EACH
 * (if set) with each value first. */
static int del_prefix(struct wtx *w, MDB_dbi dbi, uint32_t prefix,
                      int (*each)(struct wtx *w, const MDB_val *k, const MDB_val *v))
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(w->txn, dbi, &c);
	if (rc)
		return w_fail(w, rc);
	uint8_t pk[4];
	be32_put(pk, prefix);
	int st = STORE_OK;
	for (;;) {
		MDB_val k = val_of(pk, 4), v;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		if (rc == MDB_NOTFOUND)
			break;
		if (rc) {
			st = w_fail(w, rc);
			break;
		}
		if (k.mv_size < 4 || memcmp(k.mv_data, pk, 4) != 0)
			break;
		if (each && (st = each(w, &k, &v)) != 0)
			break;
		if ((rc = mdb_cursor_del(c, 0)) != 0) {
			st = w_fail(w, rc);
			break;
		}
	}
	mdb_cursor_close(c);
	return st;
}

static int unref_message_body(struct wtx *w, const MDB_val *k, const MDB_val *v)
{
	struct store_message m;
	int st = message_decode(0, v, &m);
	return st ? st : body_unref(w, m.body_id);
}

/* Remove mailbox MB and all it holds; the owner's usage is the caller's. */
static int mbox_destroy(struct wtx *w, const struct mrec *mb)
{
	int st = del_prefix(w, w->s->db_messages, mb->m.id, unref_message_body);
	if (!st)
		st = del_prefix(w, w->s->db_changes, mb->m.id, NULL);
	if (st)
		return st;
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, mb->m.user_id, mb->name);
	if ((st = w_del(w, w->s->db_names, k, kl)) != 0)
		return st;
	be32_put(k, mb->m.id);
	if ((st = w_del(w, w->s->db_keywords, k, 4)) != 0)
		return st;
	w_touch(w, mb->m.id);
	return w_del(w, w->s->db_mailboxes, k, 4);
}

/* ------------------------------------------------------------ operations */

static const struct {
	const char *name;
	uint32_t use;
} default_mailboxes[] = {
	{ "INBOX", 0 },
	{ "Drafts", STORE_USE_DRAFTS },
	{ "Sent", STORE_USE_SENT },
	{ "Trash", STORE_USE_TRASH },
	{ "Junk", STORE_USE_JUNK },
	{ "Archive", STORE_USE_ARCHIVE },
};

static int op_user_add(struct wtx *w, const struct store_op *op)
{
	const char *hash = op->str ? op->str : "";
	const char *scram = op->str2 ? op->str2 : "";
	if (!name_ok(op->user) || strlen(hash) > HASH_MAX_LEN || strlen(scram) > SCRAM_MAX_LEN)
		return STORE_INVALID;
	struct urec r;
	int st = w_user_get(w, op->user, &r);
	if (st == STORE_OK)
		return STORE_EXISTS;
	if (st != STORE_NOTFOUND)
		return st;
	uint64_t next;
	if ((st = meta_get_u64(w->txn, w->s, "next_user_id", &next)) != 0)
		return st;
	if (next == 0)
		next = 1;
	if (next > UINT32_MAX)
		return STORE_INVALID;
	memset(&r, 0, sizeof r);
	r.u.id = (uint32_t)next;
	r.created = w->now;
	memcpy(r.hash, hash, strlen(hash) + 1);
	memcpy(r.scram, scram, strlen(scram) + 1);
	memcpy(r.name, op->user, strlen(op->user) + 1);
	uint8_t k[4];
	be32_put(k, r.u.id);
	if ((st = w_meta_put_u64(w, "next_user_id", next + 1)) != 0 ||
	    (st = w_user_put(w, &r)) != 0 ||
	    (st = w_put(w, w->s->db_user_ids, k, 4, r.name, strlen(r.name))) != 0)
		return st;
	for (size_t i = 0; i < sizeof default_mailboxes / sizeof default_mailboxes[0]; i++) {
		st = mbox_create(w, r.u.id, default_mailboxes[i].name,
		                 default_mailboxes[i].use, NULL);
		if (!st)
			st = sub_set(w, r.u.id, default_mailboxes[i].name, true);
		if (st)
			return st;
	}
	return STORE_OK;
}

struct id_list {
	uint32_t *ids;
	size_t n, cap;
	bool oom;
};

static int collect_id(uint32_t id, void *arg)
{
	struct id_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		uint32_t *p = realloc(l->ids, cap * sizeof *p);
		if (!p) {
			l->oom = true;
			return WALK_STOP;
		}
		l->ids = p;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return 0;
}

static int op_user_del(struct wtx *w, const struct store_op *op)
{
	struct urec r;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	int st = w_user_get(w, op->user, &r);
	if (st)
		return st;
	struct id_list l = { NULL, 0, 0, false };
	st = mailbox_ids_foreach(w->txn, w->s, r.u.id, collect_id, &l);
	if (l.oom)
		st = STORE_TEMPFAIL;
	for (size_t i = 0; st == STORE_OK && i < l.n; i++) {
		struct mrec mb;
		st = w_mbox_get(w, l.ids[i], &mb);
		if (st == STORE_OK)
			st = mbox_destroy(w, &mb);
	}
	free(l.ids);
	if (!st)
		st = del_prefix(w, w->s->db_subs, r.u.id, NULL);
	if (st)
		return st;
	uint8_t k[4];
	be32_put(k, r.u.id);
	if ((st = w_del(w, w->s->db_user_ids, k, 4)) != 0)
		return st;
	return w_del(w, w->s->db_users, r.name, strlen(r.name));
}

static int op_user_passwd(struct wtx *w, const struct store_op *op)
{
	const char *hash = op->str ? op->str : "";
	const char *scram = op->str2 ? op->str2 : "";
	if (strlen(hash) > HASH_MAX_LEN || strlen(scram) > SCRAM_MAX_LEN)
		return STORE_INVALID;
	struct urec r;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	int st = w_user_get(w, op->user, &r);
	if (st)
		return st;
	memcpy(r.hash, hash, strlen(hash) + 1);
	/* A new password without a SCRAM secret drops the old secret: it
	 * would still accept the old password. */
	memcpy(r.scram, scram, strlen(scram) + 1);
	return w_user_put(w, &r);
}

static int op_user_quota(struct wtx *w, const struct store_op *op)
{
	struct urec r;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	int st = w_user_get(w, op->user, &r);
	if (st)
		return st;
	r.u.own_quota_bytes = op->n1;
	r.u.own_quota_messages = op->n2;
	return w_user_put(w, &r);
}

static bool quota_allows(const struct urec *u, uint64_t bytes)
{
	if (u->u.quota_bytes && (u->u.used_bytes + bytes > u->u.quota_bytes ||
	                         u->u.used_bytes + bytes < u->u.used_bytes))
		return false;
	if (u->u.quota_messages && u->u.used_messages + 1 > u->u.quota_messages)
		return false;
	return true;
}

/* The message of OP (deliver, append), finished and within limits. */
static int op_msg_info(const struct store_op *op, struct store_msg_info *mi)
{
	store_msg_seal(op->msg);        /* a synchronous store's (the prepare thread's) */
	if (!store_msg_info_get(op->msg, mi))
		return STORE_TEMPFAIL;
	return mi->size > UINT32_MAX ? STORE_INVALID : STORE_OK;
}

/* Store the message MI in MB of owner U with FLAGS and KEYWORDS (bits of
 * MB's table): quota, the body reference, the record, the counters and
 * the owner's usage.  Deliver and append both end here. */
static int msg_store(struct wtx *w, struct urec *u, struct mrec *mb,
                     const struct store_msg_info *mi, uint32_t flags, uint64_t keywords,
                     int64_t date, struct store_result *res)
{
	if (!quota_allows(u, mi->size))
		return STORE_OVERQUOTA;
	struct store_message m;
	memset(&m, 0, sizeof m);
	int st = body_new(w, mi, m.body_id);
	if (st)
		return st;
	m.flags = flags & SYSTEM_FLAGS;
	m.keywords = keywords;
	m.internal_date = date ? date : w->now;
	m.save_date = w->now;
	m.size = (uint32_t)mi->size;
	m.lines = mi->lines > UINT32_MAX ? UINT32_MAX : (uint32_t)mi->lines;
	m.header_size = (uint32_t)mi->header_size;
	if ((st = msg_insert(w, mb, &m)) != 0)
		return st;
	u->u.used_bytes += m.size;
	u->u.used_messages++;
	if ((st = w_user_put(w, u)) != 0)
		return st;
	res->mailbox_id = mb->m.id;
	res->uid = m.uid;
	res->uidvalidity = mb->m.uidvalidity;
	return STORE_OK;
}

static int op_deliver(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	struct store_msg_info mi;
	int st = op_msg_info(op, &mi);
	if (st)
		return st;
	struct urec u;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	if ((st = w_user_get(w, op->user, &u)) != 0)
		return st;
	struct mrec mb;
	if ((st = w_mbox_by_name(w, u.u.id, op->str ? op->str : "INBOX", &mb)) != 0)
		return st;
	return msg_store(w, &u, &mb, &mi, op->add, 0, op->date, res);
}

/* APPEND (RFC 3501 section 6.3.11): deliver by mailbox id, with keywords. */
static int op_append(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	struct store_msg_info mi;
	int st = op_msg_info(op, &mi);
	if (st)
		return st;
	if (op->invalid || !keywords_ok(op->kw, op->nkw))
		return STORE_INVALID;
	struct mrec mb;
	if ((st = w_mbox_get(w, op->mailbox_id, &mb)) != 0)
		return st;
	struct urec u;
	if ((st = w_user_by_id(w, mb.m.user_id, &u)) != 0)
		return st;
	uint64_t kw = 0;
	if (op->nkw) {
		struct kwtab *t = malloc(sizeof *t);
		if (!t)
			return STORE_TEMPFAIL;
		st = kwtab_load(w, mb.m.id, t);
		if (!st)
			st = kwtab_bits(t, op->kw, op->nkw, true, &kw);
		if (!st && t->dirty)
			st = kwtab_save(w, t);
		free(t);
		if (st)
			return st;
	}
	return msg_store(w, &u, &mb, &mi, op->add, kw, op->date, res);
}

/* Give message M of MB the flags NF and keywords NK if they differ: a new
 * modseq, its change-feed entry moved, the counters kept.  Nothing that
 * changes nothing bumps a modseq (RFC 7162 section 3.2). */
static int msg_flags_set(struct wtx *w, struct mrec *mb, struct store_message *m,
                         uint32_t nf, uint64_t nk)
{
	if (nf == m->flags && nk == m->keywords)
		return STORE_OK;
	counters_add(mb, m, -1);
	int st = w_change_del(w, mb->m.id, m->modseq);
	if (st)
		return st;
	m->flags = nf;
	m->keywords = nk;
	m->modseq = ++mb->m.highestmodseq;
	counters_add(mb, m, 1);
	if ((st = w_msg_put(w, mb->m.id, m)) != 0 ||
	    (st = w_change_put(w, mb->m.id, m->modseq, m->uid, STORE_CHANGE_FLAGS)) != 0)
		return st;
	w_touch(w, mb->m.id);
	return w_mbox_put(w, mb);
}

static int op_flags(struct wtx *w, const struct store_op *op)
{
	struct mrec mb;
	int st = w_mbox_get(w, op->mailbox_id, &mb);
	if (st)
		return st;
	struct store_message m;
	st = message_get_tx(w->txn, w->s, mb.m.id, op->uid, &m, NULL);
	if (st == STORE_NOTFOUND)
		return STORE_OK;        /* expunged meanwhile: skipped */
	if (st)
		return st;
	uint32_t nf = (m.flags | (op->add & SYSTEM_FLAGS)) & ~op->remove;
	return msg_flags_set(w, &mb, &m, nf, m.keywords);
}

/* STORE (RFC 3501 section 6.4.6) over system flags and keywords.  Names
 * are resolved in the mailbox's table; ADD and REPLACE add new ones. */
static int set_flags_in(struct wtx *w, const struct store_op *op, struct store_result *res,
                        struct kwtab *t)
{
	struct mrec mb;
	int st = w_mbox_get(w, op->mailbox_id, &mb);
	if (st)
		return st;
	struct store_message m;
	st = message_get_tx(w->txn, w->s, mb.m.id, op->uid, &m, NULL);
	if (st == STORE_NOTFOUND)
		return STORE_OK;        /* expunged meanwhile: skipped, uid 0 */
	if (st)
		return st;
	if (op->if_unchanged && m.modseq > op->unchangedsince) {
		/* RFC 7162 §3.1.3: a newer message is left alone and named in
		 * MODIFIED; req_apply keeps this from failing the request. */
		res->mailbox_id = mb.m.id;
		res->uid = m.uid;
		res->uidvalidity = mb.m.uidvalidity;
		res->modseq = m.modseq;
		return STORE_MODIFIED;
	}
	uint64_t kw = 0;
	if (op->nkw) {
		if ((st = kwtab_load(w, mb.m.id, t)) != 0 ||
		    (st = kwtab_bits(t, op->kw, op->nkw, op->mode != STORE_FLAGS_REMOVE, &kw)) != 0)
			return st;
	}
	uint32_t fl = op->add & SYSTEM_FLAGS, nf;
	uint64_t nk;
	switch (op->mode) {
	case STORE_FLAGS_ADD:
		nf = m.flags | fl;
		nk = m.keywords | kw;
		break;
	case STORE_FLAGS_REMOVE:
		nf = m.flags & ~fl;
		nk = m.keywords & ~kw;
		break;
	case STORE_FLAGS_REPLACE:
		nf = fl;
		nk = kw;
		break;
	default:
		return STORE_INVALID;
	}
	/* A new name always sets a bit no message had, so the table is
	 * written only along with a real change. */
	if (op->nkw && t->dirty && (st = kwtab_save(w, t)) != 0)
		return st;
	if ((st = msg_flags_set(w, &mb, &m, nf, nk)) != 0)
		return st;
	res->mailbox_id = mb.m.id;
	res->uid = m.uid;
	res->uidvalidity = mb.m.uidvalidity;
	res->modseq = m.modseq;
	return STORE_OK;
}

static int op_set_flags(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	if (op->invalid || !keywords_ok(op->kw, op->nkw) ||
	    (op->mode != STORE_FLAGS_ADD && op->mode != STORE_FLAGS_REMOVE &&
	     op->mode != STORE_FLAGS_REPLACE))
		return STORE_INVALID;
	struct kwtab *t = NULL;
	if (op->nkw && (t = malloc(sizeof *t)) == NULL)
		return STORE_TEMPFAIL;
	int st = set_flags_in(w, op, res, t);
	free(t);
	return st;
}

static int op_expunge(struct wtx *w, const struct store_op *op)
{
	struct mrec mb;
	int st = w_mbox_get(w, op->mailbox_id, &mb);
	if (st)
		return st;
	struct store_message m;
	st = message_get_tx(w->txn, w->s, mb.m.id, op->uid, &m, NULL);
	if (st == STORE_NOTFOUND)
		return STORE_OK;
	if (st)
		return st;
	if ((st = msg_remove(w, &mb, &m)) != 0)
		return st;
	struct urec u;
	if ((st = w_user_by_id(w, mb.m.user_id, &u)) != 0)
		return st;
	u.u.used_bytes -= u.u.used_bytes < m.size ? u.u.used_bytes : m.size;
	u.u.used_messages -= u.u.used_messages ? 1 : 0;
	if ((st = w_user_put(w, &u)) != 0)
		return st;
	return body_release_expunged(w, mb.m.id, &m);
}

/* MOVE (RFC 6851) and COPY: the body is shared, never copied; a move keeps
 * the reference count, a copy adds one and counts against the quota. */
static int op_move_copy(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	bool move = op->kind == OP_MOVE;
	struct mrec src, dst;
	int st = w_mbox_get(w, op->mailbox_id, &src);
	if (st)
		return st;
	if ((st = w_mbox_get(w, op->dest_id, &dst)) != 0)
		return st;
	if (src.m.user_id != dst.m.user_id)
		return STORE_INVALID;
	struct store_message m;
	st = message_get_tx(w->txn, w->s, src.m.id, op->uid, &m, NULL);
	if (st == STORE_NOTFOUND)
		return STORE_OK;
	if (st)
		return st;
	if (move) {
		if ((st = msg_remove(w, &src, &m)) != 0)
			return st;
	} else {
		struct urec u;
		if ((st = w_user_by_id(w, src.m.user_id, &u)) != 0)
			return st;
		if (!quota_allows(&u, m.size))
			return STORE_OVERQUOTA;
		u.u.used_bytes += m.size;
		u.u.used_messages++;
		if ((st = w_user_put(w, &u)) != 0 || (st = body_ref(w, m.body_id)) != 0)
			return st;
	}
	if ((st = keywords_remap(w, src.m.id, op->dest_id, &m.keywords)) != 0)
		return st;
	/* Re-read: with SRC == DEST the source write above changed it. */
	if ((st = w_mbox_get(w, op->dest_id, &dst)) != 0)
		return st;
	m.flags &= ~op->remove;
	m.save_date = w->now;
	if ((st = msg_insert(w, &dst, &m)) != 0)
		return st;
	res->mailbox_id = dst.m.id;
	res->uid = m.uid;
	res->uidvalidity = dst.m.uidvalidity;
	return STORE_OK;
}

static int op_mbox_create(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	struct urec u;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	int st = w_user_get(w, op->user, &u);
	if (st)
		return st;
	struct mrec mb;
	if ((st = mbox_create(w, u.u.id, op->str, op->add, &mb)) != 0)
		return st;
	res->mailbox_id = mb.m.id;
	res->uidvalidity = mb.m.uidvalidity;
	return STORE_OK;
}

static int op_mbox_delete(struct wtx *w, const struct store_op *op)
{
	struct mrec mb;
	int st = w_mbox_get(w, op->mailbox_id, &mb);
	if (st)
		return st;
	if (strcmp(mb.name, "INBOX") == 0)
		return STORE_INVALID;   /* RFC 3501 6.3.4 */
	struct urec u;
	if ((st = w_user_by_id(w, mb.m.user_id, &u)) != 0)
		return st;
	if ((st = mbox_destroy(w, &mb)) != 0)
		return st;
	u.u.used_bytes -= u.u.used_bytes < mb.m.bytes ? u.u.used_bytes : mb.m.bytes;
	u.u.used_messages -= u.u.used_messages < mb.m.messages ? u.u.used_messages
	                                                       : mb.m.messages;
	return w_user_put(w, &u);
}

static int op_mbox_rename(struct wtx *w, const struct store_op *op)
{
	if (!name_ok(op->str))
		return STORE_INVALID;
	const char *to = mbox_canon(op->str);
	struct mrec mb;
	int st = w_mbox_get(w, op->mailbox_id, &mb);
	if (st)
		return st;
	if (strcmp(mb.name, "INBOX") == 0 || strcmp(to, "INBOX") == 0)
		return STORE_INVALID;
	uint8_t k[4 + NAME_MAX_LEN];
	size_t kl = key_mb_name(k, mb.m.user_id, to);
	MDB_val v;
	if ((st = w_get(w, w->s->db_names, k, kl, &v)) == STORE_OK)
		return STORE_EXISTS;
	if (st != STORE_NOTFOUND)
		return st;
	uint8_t idb[4];
	be32_put(idb, mb.m.id);
	if ((st = w_put(w, w->s->db_names, k, kl, idb, 4)) != 0)
		return st;
	kl = key_mb_name(k, mb.m.user_id, mb.name);
	if ((st = w_del(w, w->s->db_names, k, kl)) != 0)
		return st;
	memcpy(mb.name, to, strlen(to) + 1);
	w_touch(w, mb.m.id);
	return w_mbox_put(w, &mb);
}

/* SUBSCRIBE and UNSUBSCRIBE: a name, whether or not a mailbox has it. */
static int op_subscribe(struct wtx *w, const struct store_op *op)
{
	if (!name_ok(op->str))
		return STORE_INVALID;
	struct urec u;
	if (!name_ok(op->user))
		return STORE_NOTFOUND;
	int st = w_user_get(w, op->user, &u);
	if (st)
		return st;
	return sub_set(w, u.u.id, mbox_canon(op->str), op->add != 0);
}

static int op_apply(struct wtx *w, const struct store_op *op, struct store_result *res)
{
	switch (op->kind) {
	case OP_USER_ADD: return op_user_add(w, op);
	case OP_USER_DEL: return op_user_del(w, op);
	case OP_USER_PASSWD: return op_user_passwd(w, op);
	case OP_USER_QUOTA: return op_user_quota(w, op);
	case OP_DELIVER: return op_deliver(w, op, res);
	case OP_FLAGS: return op_flags(w, op);
	case OP_EXPUNGE: return op_expunge(w, op);
	case OP_MOVE: case OP_COPY: return op_move_copy(w, op, res);
	case OP_MBOX_CREATE: return op_mbox_create(w, op, res);
	case OP_MBOX_DELETE: return op_mbox_delete(w, op);
	case OP_MBOX_RENAME: return op_mbox_rename(w, op);
	case OP_SUBSCRIBE: return op_subscribe(w, op);
	case OP_APPEND: return op_append(w, op, res);
	case OP_SET_FLAGS: return op_set_flags(w, op, res);
	}
	return STORE_INVALID;
}

/* Mark every operation of R as failed with ST: nothing of R is stored. */
static void req_fail(store_req *r, int st)
{
	r->status = st;
	for (size_t i = 0; i < r->n; i++) {
		memset(&r->res[i], 0, sizeof r->res[i]);
		r->res[i].status = st;
	}
}

/*
 * Apply R in a child txn of the batch's txn: a request that fails (unknown
 * user, over quota) is rolled back alone and the others still commit.
 */
static void req_apply(struct wtx *w, MDB_txn *parent, store_req *r)
{
	for (size_t i = 0; i < r->n; i++)
		memset(&r->res[i], 0, sizeof r->res[i]);
	if (r->oom) {
		req_fail(r, STORE_TEMPFAIL);
		return;
	}
	MDB_txn *child;
	int rc = mdb_txn_begin(w->s->env, parent, 0, &child);
	if (rc) {
		req_fail(r, w_fail(w, rc));
		return;
	}
	size_t mark = w->ntouched;
	int st = STORE_OK;
	w->txn = child;
	for (size_t i = 0; i < r->n && st == STORE_OK; i++) {
		st = op_apply(w, &r->ops[i], &r->res[i]);
		r->res[i].status = st;
		if (st == STORE_MODIFIED)
			st = STORE_OK;  /* an outcome of that operation alone (store.h) */
	}
	w->txn = parent;
	if (st == STORE_OK && (rc = mdb_txn_commit(child)) != 0)
		st = w_fail(w, rc);
	else if (st != STORE_OK)
		mdb_txn_abort(child);
	if (st) {
		w->ntouched = mark;
		req_fail(r, st);
	}
	r->status = st;
}

/* ------------------------------------------------------------ the runway */

/*
 * New pages of data.mdb, made ready before the writer needs them.  A store
 * that grows writes each commit's new pages past the old end of the file,
 * and the kernel must first find page-cache pages for them.  On a virtual
 * machine whose host takes back the guest's free memory, each such page
 * costs a fault in the host, 12-25 us there (docs/store.md): 1-1.6 ms
 * per 256 KiB message, in the one writer thread every delivery waits for.
 * The runway thread keeps the stretch past LMDB's last page allocated
 * (fallocate: blocks that read back as zeros) and read once, so that those
 * pages are in the page cache when the writer's pwrite gets there, and the
 * fault was taken on this thread instead.  It never writes a byte of the
 * file: a crash leaves a longer file whose tail LMDB does not look at (it
 * goes by the last page number of its meta page; check_length).  The
 * stretch is a quarter of the used length, between RUNWAY_MIN and
 * RUNWAY_MAX, so a small store costs next to nothing.
 */
#define RUNWAY_MIN ((uint64_t)1 << 20)
#define RUNWAY_MAX ((uint64_t)64 << 20)
#define RUNWAY_STEP ((uint64_t)4 << 20)         /* fallocate, then read, this much */
#define RUNWAY_READ ((size_t)1 << 20)
#define RUNWAY_RETRY_MS 30000                   /* after ENOSPC and the like */

/* data.mdb's used length: LMDB's last page, from the newest meta page
 * (read through the map, hence the map lock). */
static uint64_t used_end(store *s)
{
	MDB_envinfo info;
	if (!s->psize)
		return 0;
	maplock_shared(s);
	int rc = mdb_env_info(s->env, &info);
	maplock_release(s);
	return rc ? 0 : ((uint64_t)info.me_last_pgno + 1) * s->psize;
}

static uint64_t runway_len(uint64_t used)
{
	uint64_t len = used / 4;
	return len < RUNWAY_MIN ? RUNWAY_MIN : len > RUNWAY_MAX ? RUNWAY_MAX : len;
}

/* Allocate [OFF, OFF+LEN) of FD and read it into the page cache.  0, or
 * the errno that stopped it. */
static int runway_fill(int fd, uint64_t off, uint64_t len, char *buf)
{
	int rc;
	do
		rc = fallocate(fd, 0, (off_t)off, (off_t)len);
	while (rc != 0 && errno == EINTR);
	if (rc != 0)
		return errno;
	for (uint64_t done = 0; done < len;) {
		size_t want = len - done < RUNWAY_READ ? (size_t)(len - done) : RUNWAY_READ;
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		done += (uint64_t)n;
	}
	return 0;
}

static void runway_main(void *arg)
{
	store *s = arg;
	char *buf = malloc(RUNWAY_READ);
	uv_mutex_lock(&s->mu);
	while (!s->stopping && buf) {
		uint64_t used = s->used_end;
		uint64_t ready = s->runway_end > used ? s->runway_end : used;
		uint64_t want = used + runway_len(used);
		if (ready >= want) {
			/* Woken again once the writer has used half of it. */
			s->runway_wake_at = ready - runway_len(used) / 2;
			uv_cond_wait(&s->runway_cond, &s->mu);
			continue;
		}
		uint64_t len = want - ready < RUNWAY_STEP ? want - ready : RUNWAY_STEP;
		uv_mutex_unlock(&s->mu);
		int err = runway_fill(s->runway_fd, ready, len, buf);
		uv_mutex_lock(&s->mu);
		if (err == EOPNOTSUPP || err == ENOSYS || err == EBADF) {
			s->runway_off = true;   /* not on this file system: never mind */
			break;
		}
		if (err) {
			/* The disk is full, say: LMDB will say so where it matters;
			 * try again later. */
			s->runway_wake_at = UINT64_MAX;
			uv_cond_timedwait(&s->runway_cond, &s->mu,
			                  (uint64_t)RUNWAY_RETRY_MS * 1000000);
			continue;
		}
		if (ready + len > s->runway_end)
			s->runway_end = ready + len;
	}
	s->runway_wake_at = UINT64_MAX;
	uv_mutex_unlock(&s->mu);
	free(buf);
}

/*
 * One durable write txn applying REQS: set COMMIT_KEY (so that the txn id
 * moves: how other processes notice us), apply each request, purge expired
 * retained bodies, commit.  MDB_MAP_FULL anywhere aborts the lot, doubles the map and tries
 * again.  Returns 0, or the LMDB error that made the txn fail (then no
 * request is stored and their statuses are the caller's to set).
 */
static int write_run(store *s, store_req **reqs, size_t n, struct wtx *w, bool *foreign)
{
	for (;;) {
		MDB_txn *txn;
		w->s = s;
		w->fatal = 0;
		w->ntouched = 0;
		w->oom = false;
		w->body_next = w->body_read = 0;
		int rc = txn_begin(s, 0, &txn);
		if (rc)
			return rc;
		w->txn = txn;
		w->now = (int64_t)time(NULL);
		uint64_t id = (uint64_t)mdb_txn_id(txn);
		uint8_t idb[8];
		be64_put(idb, id);
		if (w_put(w, s->db_main, COMMIT_KEY, strlen(COMMIT_KEY), idb, 8) != 0)
			rc = w->fatal ? w->fatal : MDB_PANIC;
		for (size_t i = 0; rc == 0 && i < n && !w->fatal; i++)
			req_apply(w, txn, reqs[i]);
		if (rc == 0 && !w->fatal)
			purge_expunged(w);
		if (rc == 0 && !w->fatal && w->body_next != w->body_read) {
			be64_put(idb, w->body_next);
			if (w_put(w, s->db_main, BODY_NEXT_KEY, strlen(BODY_NEXT_KEY), idb, 8) != 0)
				rc = w->fatal ? w->fatal : MDB_PANIC;
		}
		if (rc == 0 && w->fatal)
			rc = w->fatal;
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
		maplock_release(s);
		if (rc == 0) {
			uint64_t end = used_end(s);
			uv_mutex_lock(&s->mu);
			if (id - 1 != s->writer_last)
				*foreign = true;
			s->writer_last = id;
			if (end > s->used_end) {
				s->used_end = end;
				if (s->runway_started && end > s->runway_wake_at)
					uv_cond_signal(&s->runway_cond);
			}
			uv_mutex_unlock(&s->mu);
			return 0;
		}
		if (rc == MDB_MAP_FULL && map_grow(s) == 0)
			continue;
		return rc;
	}
}

/* Less room than this beside data.mdb after a failed write means the disk
 * is full: a short write leaves next to nothing free. */
#define DISK_FULL_SLACK ((uint64_t)1 << 20)

/*
 * The status of a write txn that failed with RC.  LMDB turns a short write
 * into EIO ("filesystem full?", says its source) and passes ENOSPC only
 * when nothing at all was written, so EIO is told apart from a failing
 * disk by the room left on the data folder's filesystem (what this process
 * may use: root may dip into the reserved blocks).
 */
static int commit_status(store *s, int rc)
{
	int st = status_of(rc);
	if (st == STORE_OK)
		return STORE_TEMPFAIL;
	const char *dir = NULL;
	struct statvfs fs;
	if (rc == EIO && mdb_env_get_path(s->env, &dir) == 0 && dir && statvfs(dir, &fs) == 0) {
		uint64_t avail = geteuid() == 0 ? fs.f_bfree : fs.f_bavail;
		if (avail * fs.f_frsize < DISK_FULL_SLACK)
			return STORE_NOSPACE;
	}
	return st;
}

/*
 * Apply a group of requests.  If one txn cannot hold them all (too many
 * dirty pages, or the map cannot grow any more), split the group so that
 * only the request that does not fit fails.
 */
static void batch_apply(store *s, store_req **reqs, size_t n, struct wtx *w, bool *foreign)
{
	int rc = write_run(s, reqs, n, w, foreign);
	if (rc == 0)
		return;
	if ((rc == MDB_TXN_FULL || rc == MDB_MAP_FULL) && n > 1) {
		size_t half = n / 2;
		struct wtx w2 = { 0 };
		batch_apply(s, reqs, half, w, foreign);
		batch_apply(s, reqs + half, n - half, &w2, foreign);
		for (size_t i = 0; i < w2.ntouched; i++)
			w_touch(w, w2.touched[i]);
		free(w2.touched);
		return;
	}
	int st = commit_status(s, rc);
	for (size_t i = 0; i < n; i++)
		req_fail(reqs[i], st);
}

/* -------------------------------------------------------- request builders */

store_req *store_req_new(void)
{
	return calloc(1, sizeof(store_req));
}

/* Append an operation; on allocation failure the request is marked so it
 * fails with STORE_TEMPFAIL when applied (callers need not check). */
static struct store_op *req_add(store_req *r, enum op_kind kind)
{
	if (!r)
		return NULL;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4;
		struct store_op *ops = realloc(r->ops, cap * sizeof *ops);
		if (!ops) {
			r->oom = true;
			return NULL;
		}
		r->ops = ops;
		struct store_result *res = realloc(r->res, cap * sizeof *res);
		if (!res) {
			r->oom = true;
			return NULL;
		}
		r->res = res;
		r->cap = cap;
	}
	struct store_op *op = &r->ops[r->n];
	memset(op, 0, sizeof *op);
	memset(&r->res[r->n], 0, sizeof r->res[r->n]);
	op->kind = kind;
	r->n++;
	return op;
}

/* Copy a caller's string into the op; NULL stays NULL. */
static char *req_strdup(store_req *r, const char *s)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		r->oom = true;
	return d;
}

void store_req_user_add(store_req *r, const char *name, const char *hash)
{
	struct store_op *op = req_add(r, OP_USER_ADD);
	if (!op)
		return;
	op->user = req_strdup(r, name);
	op->str = req_strdup(r, hash);
}

void store_req_user_del(store_req *r, const char *name)
{
	struct store_op *op = req_add(r, OP_USER_DEL);
	if (op)
		op->user = req_strdup(r, name);
}

void store_req_user_passwd(store_req *r, const char *name, const char *hash)
{
	store_req_user_passwd_scram(r, name, hash, NULL);
}

void store_req_user_add_scram(store_req *r, const char *name, const char *hash,
                              const char *scram)
{
	struct store_op *op = req_add(r, OP_USER_ADD);
	if (!op)
		return;
	op->user = req_strdup(r, name);
	op->str = req_strdup(r, hash);
	op->str2 = req_strdup(r, scram);
}

void store_req_user_passwd_scram(store_req *r, const char *name, const char *hash,
                                 const char *scram)
{
	struct store_op *op = req_add(r, OP_USER_PASSWD);
	if (!op)
		return;
	op->user = req_strdup(r, name);
	op->str = req_strdup(r, hash);
	op->str2 = req_strdup(r, scram);
}

void store_req_user_quota(store_req *r, const char *name, uint64_t bytes,
                          uint64_t messages)
{
	struct store_op *op = req_add(r, OP_USER_QUOTA);
	if (!op)
		return;
	op->user = req_strdup(r, name);
	op->n1 = bytes;
	op->n2 = messages;
}

/* An unfinished message is finished here, on the caller's thread, so the
 * writer thread never mutates it. */
void store_req_deliver(store_req *r, const char *user, const char *mailbox,
                       store_msg *m, uint32_t flags, int64_t internal_date)
{
	struct store_op *op = req_add(r, OP_DELIVER);
	if (!op)
		return;
	op->user = req_strdup(r, user);
	op->str = req_strdup(r, mailbox);
	op->add = flags;
	op->date = internal_date;
	if (m) {
		store_msg_finish(m);
		store_msg_ref(m);
		op->msg = m;
	}
}

void store_req_flags(store_req *r, uint32_t mailbox_id, uint32_t uid,
                     uint32_t add, uint32_t remove)
{
	struct store_op *op = req_add(r, OP_FLAGS);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->uid = uid;
	op->add = add;
	op->remove = remove;
}

void store_req_expunge(store_req *r, uint32_t mailbox_id, uint32_t uid)
{
	struct store_op *op = req_add(r, OP_EXPUNGE);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->uid = uid;
}

void store_req_move(store_req *r, uint32_t mailbox_id, uint32_t uid,
                    uint32_t dest_id, uint32_t drop_flags)
{
	struct store_op *op = req_add(r, OP_MOVE);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->uid = uid;
	op->dest_id = dest_id;
	op->remove = drop_flags;
}

void store_req_copy(store_req *r, uint32_t mailbox_id, uint32_t uid, uint32_t dest_id)
{
	struct store_op *op = req_add(r, OP_COPY);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->uid = uid;
	op->dest_id = dest_id;
}

void store_req_mailbox_create(store_req *r, const char *user, const char *name,
                              uint32_t special_use)
{
	struct store_op *op = req_add(r, OP_MBOX_CREATE);
	if (!op)
		return;
	op->user = req_strdup(r, user);
	op->str = req_strdup(r, name);
	op->add = special_use;
}

void store_req_mailbox_delete(store_req *r, uint32_t mailbox_id)
{
	struct store_op *op = req_add(r, OP_MBOX_DELETE);
	if (op)
		op->mailbox_id = mailbox_id;
}

void store_req_mailbox_rename(store_req *r, uint32_t mailbox_id, const char *new_name)
{
	struct store_op *op = req_add(r, OP_MBOX_RENAME);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->str = req_strdup(r, new_name);
}

void store_req_subscribe(store_req *r, const char *user, const char *name, bool subscribed)
{
	struct store_op *op = req_add(r, OP_SUBSCRIBE);
	if (!op)
		return;
	op->user = req_strdup(r, user);
	op->str = req_strdup(r, name);
	op->add = subscribed ? 1 : 0;
}

/* Copy the caller's keyword names into OP.  A NULL array with NKW > 0 or a
 * NULL name makes the operation STORE_INVALID when applied. */
static void req_keywords(store_req *r, struct store_op *op, const char *const *kw,
                         size_t nkw)
{
	if (nkw == 0)
		return;
	if (!kw) {
		op->invalid = true;
		return;
	}
	op->kw = calloc(nkw, sizeof *op->kw);
	if (!op->kw) {
		r->oom = true;
		return;
	}
	op->nkw = nkw;
	for (size_t i = 0; i < nkw; i++) {
		if (!kw[i])
			op->invalid = true;
		else
			op->kw[i] = req_strdup(r, kw[i]);
	}
}

/* Like store_req_deliver, the message is finished here, on the caller's
 * thread: its MIME parse happens there, not in the writer. */
void store_req_append(store_req *r, uint32_t mailbox_id, store_msg *m, uint32_t flags,
                      const char *const *keywords, size_t nkw, int64_t internal_date)
{
	struct store_op *op = req_add(r, OP_APPEND);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->add = flags;
	op->date = internal_date;
	req_keywords(r, op, keywords, nkw);
	if (m) {
		store_msg_finish(m);
		store_msg_ref(m);
		op->msg = m;
	}
}

void store_req_set_flags(store_req *r, uint32_t mailbox_id, uint32_t uid,
                         enum store_flag_mode mode, uint32_t flags,
                         const char *const *keywords, size_t nkw)
{
	struct store_op *op = req_add(r, OP_SET_FLAGS);
	if (!op)
		return;
	op->mailbox_id = mailbox_id;
	op->uid = uid;
	op->mode = mode;
	op->add = flags;
	req_keywords(r, op, keywords, nkw);
}

void store_req_set_flags_if(store_req *r, uint32_t mailbox_id, uint32_t uid,
                            enum store_flag_mode mode, uint32_t flags,
                            const char *const *keywords, size_t nkw,
                            uint64_t unchangedsince)
{
	size_t n = r ? r->n : 0;
	store_req_set_flags(r, mailbox_id, uid, mode, flags, keywords, nkw);
	if (r && r->n > n) {
		r->ops[n].if_unchanged = true;
		r->ops[n].unchangedsince = unchangedsince;
	}
}

size_t store_req_count(const store_req *r)
{
	return r ? r->n : 0;
}

const struct store_result *store_req_result(const store_req *r, size_t i)
{
	return r && i < r->n ? &r->res[i] : NULL;
}

int store_req_status(const store_req *r)
{
	return r ? r->status : STORE_TEMPFAIL;
}

void store_req_free(store_req *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->ops[i].user);
		free(r->ops[i].str);
		free(r->ops[i].str2);
		for (size_t j = 0; j < r->ops[i].nkw; j++)
			free(r->ops[i].kw[j]);
		free(r->ops[i].kw);
		store_msg_unref(r->ops[i].msg);
	}
	free(r->ops);
	free(r->res);
	free(r);
}

int store_req_run(store *s, store_req *r)
{
	if (!r)
		return STORE_TEMPFAIL;
	if (!s || s->opt.readonly) {
		store_req_free(r);
		return s ? STORE_INVALID : STORE_TEMPFAIL;
	}
	struct wtx w = { 0 };
	bool foreign = false;
	batch_apply(s, &r, 1, &w, &foreign);
	free(w.touched);
	int st = r->status;
	store_req_free(r);
	return st;
}

/* ---------------------------------------------------------------- watches */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Call the watchers of the sorted mailbox ids IDS, or all of them.  A
 * watcher may remove watches (its own or others) from its callback: those
 * are only marked while we iterate and unlinked afterwards. */
static void watches_notify(store *s, const uint32_t *ids, size_t n, bool all)
{
	s->notifying++;
	for (struct store_watch *w = s->watch_head; w; w = w->next) {
		if (w->dead)
			continue;
		if (all || bsearch(&w->mailbox_id, ids, n, sizeof *ids, cmp_u32))
			w->fn(w->arg, w->mailbox_id);
	}
	if (--s->notifying > 0)
		return;
	struct store_watch *w = s->watch_head;
	while (w) {
		struct store_watch *next = w->next;
		if (w->dead) {
			if (w->prev)
				w->prev->next = w->next;
			else
				s->watch_head = w->next;
			if (w->next)
				w->next->prev = w->prev;
			else
				s->watch_tail = w->prev;
			free(w);
		}
		w = next;
	}
}

/* Every WATCH_POLL_MS while watches exist: a newer txn id than our own
 * writer has told us about is a commit by another process. */
static void on_watch_timer(uv_timer_t *h)
{
	store *s = h->data;
	store_txn *t = store_read_begin(s);
	if (!t)
		return;
	uint64_t v = (uint64_t)mdb_txn_id(t->txn);
	store_read_end(t);
	if (v > s->known_commit) {
		s->known_commit = v;
		watches_notify(s, NULL, 0, true);
	}
}

store_watch *store_watch_add(store *s, uint32_t mailbox_id,
                             void (*fn)(void *arg, uint32_t mailbox_id), void *arg)
{
	if (!s || !s->loop || !fn)
		return NULL;
	store_watch *w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->s = s;
	w->mailbox_id = mailbox_id;
	w->fn = fn;
	w->arg = arg;
	w->prev = s->watch_tail;
	if (s->watch_tail)
		s->watch_tail->next = w;
	else
		s->watch_head = w;
	s->watch_tail = w;
	if (s->nwatches++ == 0 && s->timer && !s->timer_running) {
		uv_timer_start(s->timer, on_watch_timer, WATCH_POLL_MS, WATCH_POLL_MS);
		s->timer_running = true;
	}
	return w;
}

void store_watch_remove(store_watch *w)
{
	if (!w || w->dead)
		return;
	store *s = w->s;
	w->dead = true;
	if (--s->nwatches == 0 && s->timer_running) {
		uv_timer_stop(s->timer);
		s->timer_running = false;
	}
	if (s->notifying)
		return;         /* unlinked when the notification loop ends */
	if (w->prev)
		w->prev->next = w->next;
	else
		s->watch_head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		s->watch_tail = w->prev;
	free(w);
}

/* ----------------------------------------------------------- writer thread */

/* Take everything queued, apply it in one commit, hand it to the loop. */
static void writer_main(void *arg)
{
	store *s = arg;
	struct wtx w = { 0 };
	store_req **batch = NULL;
	size_t cap = 0;
	uv_mutex_lock(&s->mu);
	for (;;) {
		/* Stopping, the writer still takes what the prepare thread has. */
		while (!s->queue_head && (!s->stopping || s->prep_head || s->prep_busy))
			uv_cond_wait(&s->cond, &s->mu);
		if (!s->queue_head)
			break;
		store_req *list = s->queue_head;
		s->queue_head = s->queue_tail = NULL;
		uv_mutex_unlock(&s->mu);

		size_t n = 0;
		for (store_req *r = list; r; r = r->next) {
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				store_req **p = realloc(batch, nc * sizeof *p);
				if (!p)
					break;
				batch = p;
				cap = nc;
			}
			batch[n++] = r;
		}
		bool foreign = false;
		if (n == 0) {
			/* No memory for the batch array: fail them, do not drop them. */
			for (store_req *r = list; r; r = r->next)
				req_fail(r, STORE_TEMPFAIL);
		} else {
			/* Requests past the array (out of memory) wait for the next round. */
			store_req *rest = batch[n - 1]->next;
			batch[n - 1]->next = NULL;
			if (rest) {
				uv_mutex_lock(&s->mu);
				store_req *tail = rest;
				while (tail->next)
					tail = tail->next;
				tail->next = s->queue_head;
				if (!s->queue_head)
					s->queue_tail = tail;
				s->queue_head = rest;
				uv_mutex_unlock(&s->mu);
			}
			batch_apply(s, batch, n, &w, &foreign);
		}

		uv_mutex_lock(&s->mu);
		store_req *tail = list;
		while (tail->next)
			tail = tail->next;
		if (s->done_tail)
			s->done_tail->next = list;
		else
			s->done_head = list;
		s->done_tail = tail;
		if (foreign || w.oom)
			s->foreign = true;
		for (size_t i = 0; i < w.ntouched; i++) {
			if (s->ntouched == s->captouched) {
				size_t nc = s->captouched ? s->captouched * 2 : 64;
				uint32_t *p = realloc(s->touched, nc * sizeof *p);
				if (!p) {
					s->foreign = true;      /* call every watcher instead */
					break;
				}
				s->touched = p;
				s->captouched = nc;
			}
			s->touched[s->ntouched++] = w.touched[i];
		}
		s->done_commit = s->writer_last;
		uv_mutex_unlock(&s->mu);
		uv_async_send(s->async);
		uv_mutex_lock(&s->mu);
	}
	uv_mutex_unlock(&s->mu);
	free(batch);
	free(w.touched);
}

/* On the loop: run the callbacks of finished requests, free them, then
 * call the watchers of the mailboxes those commits touched. */
static void deliver_done(store *s)
{
	uv_mutex_lock(&s->mu);
	store_req *list = s->done_head;
	s->done_head = s->done_tail = NULL;
	uint32_t *ids = s->touched;
	size_t n = s->ntouched;
	s->touched = NULL;
	s->ntouched = s->captouched = 0;
	bool all = s->foreign;
	s->foreign = false;
	uint64_t commit = s->done_commit;
	uv_mutex_unlock(&s->mu);

	while (list) {
		store_req *r = list;
		list = r->next;
		r->next = NULL;
		if (r->cb)
			r->cb(r, r->arg);
		store_req_free(r);
		if (s->outstanding)
			s->outstanding--;
	}
	if (commit > s->known_commit)
		s->known_commit = commit;
	if (n || all) {
		if (n > 1)
			qsort(ids, n, sizeof *ids, cmp_u32);
		watches_notify(s, ids, n, all);
	}
	free(ids);
	/* The async handle keeps the loop alive only while work is in flight. */
	if (s->outstanding == 0 && s->async)
		uv_unref((uv_handle_t *)s->async);
}

static void on_async(uv_async_t *h)
{
	deliver_done(h->data);
}

/* ------------------------------------------------------ the prepare thread */

/*
 * Sealing a message parses its MIME structure: 34 us for the benchmark's
 * 256 KiB messages, about 0.13 ms a MiB (perf).  A request with PREP_MIN
 * octets or more of messages to parse goes to the prepare thread, which
 * seals it and passes it on to the writer, so that one large message does
 * not hold up every other session on the loop; smaller ones are sealed on
 * the loop, where a hand-off to a sleeping thread (25-45 us to wake it
 * on the benchmark machine) would cost more than the parse.  Every
 * request submitted while the prepare thread holds one queues behind it,
 * so the writer still applies requests in the order they were submitted.
 */
#define PREP_MIN ((size_t)1 << 20)

/* One message to many recipients is one operation per recipient, side by
 * side, and one parse: it counts once. */
static size_t req_unsealed(const store_req *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		if (r->ops[i].msg && (i == 0 || r->ops[i].msg != r->ops[i - 1].msg))
			n += store_msg_unsealed(r->ops[i].msg);
	return n;
}

static void req_seal(store_req *r)
{
	for (size_t i = 0; i < r->n; i++)
		store_msg_seal(r->ops[i].msg);
}

/* With S->mu held: queue R for the writer. */
static void writer_enqueue(store *s, store_req *r)
{
	r->next = NULL;
	if (s->queue_tail)
		s->queue_tail->next = r;
	else
		s->queue_head = r;
	s->queue_tail = r;
	uv_cond_signal(&s->cond);
}

static void prep_main(void *arg)
{
	store *s = arg;
	uv_mutex_lock(&s->mu);
	for (;;) {
		while (!s->prep_head && !s->stopping)
			uv_cond_wait(&s->prep_cond, &s->mu);
		store_req *r = s->prep_head;
		if (!r)
			break;                  /* stopping, and nothing left */
		s->prep_head = r->next;
		if (!s->prep_head)
			s->prep_tail = NULL;
		s->prep_busy = true;
		uv_mutex_unlock(&s->mu);
		req_seal(r);
		uv_mutex_lock(&s->mu);
		s->prep_busy = false;
		writer_enqueue(s, r);
	}
	uv_cond_signal(&s->cond);       /* a writer waiting for us may stop */
	uv_mutex_unlock(&s->mu);
}

void store_req_submit(store *s, store_req *r, store_req_cb cb, void *arg)
{
	if (!r)
		return;
	r->cb = cb;
	r->arg = arg;
	r->next = NULL;
	if (!s || !s->loop || s->stopping || s->opt.readonly) {
		/* Misuse; still answer exactly once, on this thread. */
		if (s && !s->loop && !s->opt.readonly) {
			struct wtx w = { 0 };
			bool foreign = false;
			batch_apply(s, &r, 1, &w, &foreign);
			free(w.touched);
		} else {
			req_fail(r, s && s->opt.readonly ? STORE_INVALID : STORE_TEMPFAIL);
		}
		if (cb)
			cb(r, arg);
		store_req_free(r);
		return;
	}
	if (s->outstanding++ == 0)
		uv_ref((uv_handle_t *)s->async);
	uv_mutex_lock(&s->mu);
	/* Behind a request the prepare thread has, in its queue: requests are
	 * applied in the order they were submitted.  Else a large message goes
	 * there, and a small one is sealed here. */
	if (s->prep_started && (s->prep_head || s->prep_busy || req_unsealed(r) >= PREP_MIN)) {
		if (s->prep_tail)
			s->prep_tail->next = r;
		else
			s->prep_head = r;
		s->prep_tail = r;
		uv_cond_signal(&s->prep_cond);
		uv_mutex_unlock(&s->mu);
		return;
	}
	uv_mutex_unlock(&s->mu);
	req_seal(r);
	uv_mutex_lock(&s->mu);
	writer_enqueue(s, r);
	uv_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ open, close */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Join PATH and NAME into a fresh string (NULL if out of memory). */
static char *path_join(const char *path, const char *name)
{
	size_t a = strlen(path), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, path, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

/*
 * Before LMDB touches anything: an existing data.mdb must start with an
 * LMDB meta page (magic 0xBEEFC0DE after the 16-byte page header), and a
 * folder without one must hold nothing but our own lock file (dot files
 * and lost+found are tolerated).
 */
static int precheck(const char *path, bool readonly, char *err, size_t errlen)
{
	char *data = path_join(path, "data.mdb");
	if (!data) {
		set_err(err, errlen, "%s: out of memory", path);
		return STORE_TEMPFAIL;
	}
	int fd = open(data, O_RDONLY | O_CLOEXEC);
	int saved = errno;
	free(data);
	if (fd >= 0) {
		uint8_t hdr[24];
		ssize_t n = read(fd, hdr, sizeof hdr);
		close(fd);
		uint32_t magic = 0, version = 0;
		if (n == (ssize_t)sizeof hdr) {
			memcpy(&magic, hdr + 16, 4);    /* host order, as LMDB writes it */
			memcpy(&version, hdr + 20, 4);
		}
		if (magic != 0xBEEFC0DEu) {
			set_err(err, errlen, "%s/data.mdb is not a onebox store (not an LMDB file); "
			        "refusing to touch it", path);
			return STORE_CORRUPT;
		}
		if (version != 1) {
			set_err(err, errlen, "%s/data.mdb has LMDB format %" PRIu32
			        ", this build reads 1", path, version);
			return STORE_CORRUPT;
		}
		return STORE_OK;
	}
	if (saved != ENOENT) {
		set_err(err, errlen, "%s/data.mdb: %s", path, strerror(saved));
		return saved == EACCES ? STORE_INVALID : STORE_TEMPFAIL;
	}
	if (readonly) {
		set_err(err, errlen, "%s: no onebox store here (no data.mdb)", path);
		return STORE_NOTFOUND;
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		set_err(err, errlen, "%s: cannot create the store folder: %s", path,
		        strerror(errno));
		return STORE_TEMPFAIL;
	}
	DIR *d = opendir(path);
	if (!d) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return STORE_TEMPFAIL;
	}
	struct dirent *e;
	int st = STORE_OK;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strcmp(e->d_name, "lock.mdb") == 0 ||
		    strcmp(e->d_name, "lost+found") == 0)
			continue;
		set_err(err, errlen, "%s holds files that are not a onebox store (e.g. %s); "
		        "use an empty or new folder", path, e->d_name);
		st = STORE_CORRUPT;
		break;
	}
	closedir(d);
	return st;
}

/*
 * After mdb_env_open, before any page is read through the map: data.mdb
 * must be as long as its newest meta page says (last page + 1 pages).  A
 * truncated copy passes LMDB's own checks, which read only the meta pages,
 * and the first read of a missing page is a SIGBUS, not an error.
 */
static int check_length(store *s, const char *path, char *err, size_t errlen)
{
	MDB_envinfo info;
	MDB_stat ms;
	struct stat fs;
	char *data = path_join(path, "data.mdb");
	if (!data) {
		set_err(err, errlen, "%s: out of memory", path);
		return STORE_TEMPFAIL;
	}
	int rc = stat(data, &fs);
	free(data);
	if (rc != 0) {
		set_err(err, errlen, "%s/data.mdb: %s", path, strerror(errno));
		return STORE_TEMPFAIL;
	}
	if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &ms) != 0 ||
	    ms.ms_psize == 0)
		return STORE_OK;        /* nothing to compare with: LMDB will say */
	uint64_t need = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	if ((uint64_t)fs.st_size >= need)
		return STORE_OK;
	set_err(err, errlen, "%s/data.mdb is truncated: %" PRIu64 " bytes where its last "
	        "commit needs %" PRIu64 "; refusing to touch it (restore it from a backup)",
	        path, (uint64_t)fs.st_size, need);
	return STORE_CORRUPT;
}

struct db_name {
	const char *name;
	MDB_dbi *dbi;
};

/* Write the meta record of a new store (the one place its keys are set). */
static int init_meta(store *s, MDB_txn *txn)
{
	struct wtx w = { .s = s, .txn = txn };
	if (w_put(&w, s->db_meta, "format", 6, STORE_FORMAT, strlen(STORE_FORMAT)) != 0 ||
	    w_meta_put_u64(&w, "next_user_id", 1) != 0 ||
	    w_meta_put_u64(&w, "next_mailbox_id", 1) != 0 ||
	    w_meta_put_u64(&w, "last_uidvalidity", 0) != 0)
		return w.fatal ? w.fatal : MDB_PANIC;
	return 0;
}

#define SUBS_DB "subscriptions"

/*
 * A store made before `subscriptions` kept a subscribed byte in each
 * mailbox record.  Copy every set byte into the new database, in the txn
 * that creates it: the database's existence is the mark that this was
 * done, so it happens once, whole or not at all, whichever process opens
 * the store for writing first.  A record that does not decode is left to
 * the reads that will report it.  Returns an LMDB code.
 */
static int subs_migrate(store *s, MDB_txn *txn)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(txn, s->db_mailboxes, &c);
	if (rc)
		return rc;
	MDB_val k, v;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		struct store_mailbox m;
		bool sub = false;
		if (k.mv_size != 4 || mailbox_decode(be32_get(k.mv_data), &v, &m, &sub) != 0 ||
		    !sub || !name_ok(m.name))
			continue;
		uint8_t key[4 + NAME_MAX_LEN];
		static const uint8_t rec[1] = { REC_VERSION };
		MDB_val sk = val_of(key, key_mb_name(key, m.user_id, m.name));
		MDB_val sv = val_of(rec, sizeof rec);
		if ((rc = mdb_put(txn, s->db_subs, &sk, &sv, 0)) != 0)
			break;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Create databases DBS in one write txn, and with INIT also the meta record
 * of a new store; the map grows if even that does not fit.  Used for a new
 * store, and for an older one opened for writing: it gets the databases it
 * lacks (keywords, body_mime, subscriptions), and the current format
 * string (formats 1 and 2 become 3: nothing else to change, see
 * STORE_FORMAT).
 * Whether `subscriptions` is new is asked inside the write txn, so two
 * processes opening an old store at once migrate it only once.
 */
static int create_dbs(store *s, const struct db_name *dbs, size_t n, bool init,
                      const char *path, char *err, size_t errlen)
{
	int rc;
	for (;;) {
		MDB_txn *txn;
		bool migrate = false;
		if ((rc = txn_begin(s, 0, &txn)) != 0)
			break;
		if (!init) {
			MDB_dbi d;
			rc = mdb_dbi_open(txn, SUBS_DB, 0, &d);
			migrate = rc == MDB_NOTFOUND;
			if (migrate)
				rc = 0;
		}
		for (size_t i = 0; rc == 0 && i < n; i++)
			rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
		if (rc == 0 && init)
			rc = init_meta(s, txn);
		if (rc == 0 && migrate)
			rc = subs_migrate(s, txn);
		if (rc == 0 && !init) {
			MDB_val fk = val_of("format", 6);
			MDB_val fv = val_of(STORE_FORMAT, strlen(STORE_FORMAT));
			rc = mdb_put(txn, s->db_meta, &fk, &fv, 0);
		}
		if (rc)
			mdb_txn_abort(txn);
		else
			rc = mdb_txn_commit(txn);
		maplock_release(s);
		if (rc == MDB_MAP_FULL && map_grow(s) == 0)
			continue;
		break;
	}
	if (rc) {
		set_err(err, errlen, "%s: cannot %s the store: %s", path,
		        init ? "initialise" : "upgrade", mdb_strerror(rc));
		return status_of(rc) ? status_of(rc) : STORE_TEMPFAIL;
	}
	s->have_late_dbs = true;
	s->have_subs = true;
	return STORE_OK;
}

/* Open (or create) the named databases and check, or write, the meta
 * record that says this is a onebox store. */
static int open_dbs(store *s, const char *path, char *err, size_t errlen)
{
	struct db_name dbs[] = {
		{ "meta", &s->db_meta }, { "users", &s->db_users },
		{ "user_ids", &s->db_user_ids }, { "mailbox_names", &s->db_names },
		{ "mailboxes", &s->db_mailboxes }, { "messages", &s->db_messages },
		{ "changes", &s->db_changes }, { "bodies", &s->db_bodies },
		{ "body_info", &s->db_body_info }, { "expunged", &s->db_expunged },
		/* Added later in format 1: created when missing (see below). */
		{ "keywords", &s->db_keywords }, { "body_mime", &s->db_body_mime },
		{ SUBS_DB, &s->db_subs },
	};
	size_t ndbs = sizeof dbs / sizeof dbs[0];
	size_t nrequired = ndbs - 3;
	bool late_missing = false, subs_missing = false, format_old = false;
	MDB_txn *txn;
	int rc = txn_begin(s, MDB_RDONLY, &txn);
	if (rc) {
		set_err(err, errlen, "%s: %s", path, mdb_strerror(rc));
		return status_of(rc);
	}
	MDB_dbi main_dbi;
	MDB_stat ms = { 0 };
	rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
	if (rc == 0)
		rc = mdb_stat(txn, main_dbi, &ms);
	s->db_main = main_dbi;
	bool empty = rc == 0 && ms.ms_entries == 0;
	int st = STORE_OK;
	if (rc == 0 && !empty) {
		rc = mdb_dbi_open(txn, "meta", 0, &s->db_meta);
		MDB_val v;
		if (rc == 0)
			rc = tx_get(txn, s->db_meta, "format", 6, &v) == STORE_OK ? 0 : MDB_NOTFOUND;
		if (rc == 0 && ((v.mv_size == strlen(STORE_FORMAT_1) &&
		                 memcmp(v.mv_data, STORE_FORMAT_1, v.mv_size) == 0) ||
		                (v.mv_size == strlen(STORE_FORMAT_2) &&
		                 memcmp(v.mv_data, STORE_FORMAT_2, v.mv_size) == 0)))
			format_old = true;
		else if (rc == 0 && (v.mv_size != strlen(STORE_FORMAT) ||
		                     memcmp(v.mv_data, STORE_FORMAT, v.mv_size) != 0)) {
			set_err(err, errlen, "%s/data.mdb is an LMDB file of another format "
			        "(\"%.*s\"); refusing to touch it", path,
			        (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data);
			st = STORE_CORRUPT;
		} else if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
			set_err(err, errlen, "%s/data.mdb is an LMDB file but not a onebox "
			        "store (no meta record); refusing to touch it", path);
			st = STORE_CORRUPT;
		}
		for (size_t i = 1; rc == 0 && st == STORE_OK && i < nrequired; i++)
			rc = mdb_dbi_open(txn, dbs[i].name, 0, dbs[i].dbi);
		for (size_t i = nrequired; rc == 0 && st == STORE_OK && i < ndbs; i++) {
			int lrc = mdb_dbi_open(txn, dbs[i].name, 0, dbs[i].dbi);
			if (lrc == MDB_NOTFOUND && dbs[i].dbi == &s->db_subs)
				subs_missing = true;
			else if (lrc == MDB_NOTFOUND)
				late_missing = true;
			else
				rc = lrc;
		}
	}
	if (st == STORE_OK && rc) {
		set_err(err, errlen, "%s: %s", path, mdb_strerror(rc));
		st = status_of(rc);
	}
	if (st == STORE_OK)
		rc = mdb_txn_commit(txn);       /* keeps the dbi handles */
	else
		mdb_txn_abort(txn);
	maplock_release(s);
	if (st)
		return st;
	if (rc) {
		set_err(err, errlen, "%s: %s", path, mdb_strerror(rc));
		return status_of(rc);
	}
	if (!empty && !late_missing && !subs_missing && !format_old) {
		s->have_late_dbs = true;
		s->have_subs = true;
		return STORE_OK;
	}
	if (!empty && s->opt.readonly) {
		/* An older store, read as it is. */
		s->have_late_dbs = !late_missing;
		s->have_subs = !subs_missing;
		return STORE_OK;
	}
	if (!empty)
		return create_dbs(s, dbs + nrequired, ndbs - nrequired, false, path, err, errlen);
	if (s->opt.readonly) {
		set_err(err, errlen, "%s: the store is empty (never initialised)", path);
		return STORE_NOTFOUND;
	}
	/* A new store: everything in one txn, growing the map if the caller's
	 * initial size is too small even for that. */
	return create_dbs(s, dbs, ndbs, true, path, err, errlen);
}

static void on_handle_closed(uv_handle_t *h)
{
	free(h);
}

/* Free what store_open built; the writer thread and handles are not ours. */
static void store_free(store *s)
{
	if (s->env)
		mdb_env_close(s->env);
	pthread_rwlock_destroy(&s->maplock);
	free(s->touched);
	free(s);
}

bool store_runway_get(store *s, uint64_t *used, uint64_t *ready)
{
	uv_mutex_lock(&s->mu);
	bool on = s->runway_started && !s->runway_off;
	*used = s->used_end;
	*ready = s->runway_end;
	uv_mutex_unlock(&s->mu);
	return on;
}

/* Start the runway thread of a store open for writing with a loop.  A
 * store that cannot have one works as well without it. */
static void runway_start(store *s, const char *path)
{
	MDB_stat ms;
	char *data = path_join(path, "data.mdb");
	s->runway_fd = -1;
	if (!data || mdb_env_stat(s->env, &ms) != 0) {
		free(data);
		return;
	}
	s->psize = ms.ms_psize;
	s->runway_fd = open(data, O_RDWR | O_CLOEXEC);
	free(data);
	if (s->runway_fd < 0)
		return;
	s->used_end = s->runway_end = used_end(s);
	s->runway_wake_at = 0;
	if (uv_cond_init(&s->runway_cond) != 0)
		goto fail;
	if (uv_thread_create(&s->runway_thread, runway_main, s) != 0) {
		uv_cond_destroy(&s->runway_cond);
		goto fail;
	}
	s->runway_started = true;
	return;
fail:
	close(s->runway_fd);
	s->runway_fd = -1;
}

int store_open(store **out, const char *path, const struct store_options *opt,
               uv_loop_t *loop, char *err, size_t errlen)
{
	if (!out)
		return STORE_INVALID;
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!path || !*path) {
		set_err(err, errlen, "no store path given");
		return STORE_INVALID;
	}
	store *s = calloc(1, sizeof *s);
	if (!s) {
		set_err(err, errlen, "%s: out of memory", path);
		return STORE_TEMPFAIL;
	}
	if (opt)
		s->opt = *opt;
	if (s->opt.readonly)
		loop = NULL;            /* nothing to write, nothing to watch */
	pthread_rwlock_init(&s->maplock, NULL);
	int st = precheck(path, s->opt.readonly, err, errlen);
	if (st) {
		store_free(s);
		return st;
	}
	size_t map = s->opt.map_size ? s->opt.map_size : DEFAULT_MAP_SIZE;
	if (s->opt.max_map_size && map > s->opt.max_map_size)
		map = s->opt.max_map_size;
	unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;     /* see map_follow */
	if (s->opt.readonly) {
		flags |= MDB_RDONLY;
		/* Without a lock file no process has the store open: read it
		 * without creating one. */
		char *lock = path_join(path, "lock.mdb");
		if (lock && access(lock, F_OK) != 0)
			flags |= MDB_NOLOCK;
		free(lock);
	}
	int rc = mdb_env_create(&s->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(s->env, 16);
	if (rc == 0)
		rc = mdb_env_set_maxreaders(s->env, MAX_READERS);
	if (rc == 0)
		rc = mdb_env_set_mapsize(s->env, map);
	if (rc == 0)
		rc = mdb_env_open(s->env, path, flags, 0600);
	if (rc) {
		if (status_of(rc) == STORE_CORRUPT)
			set_err(err, errlen, "%s/data.mdb is not a onebox store: %s", path,
			        mdb_strerror(rc));
		else
			set_err(err, errlen, "%s: cannot open the store: %s", path, mdb_strerror(rc));
		st = status_of(rc) == STORE_CORRUPT ? STORE_CORRUPT
		     : rc == EACCES ? STORE_INVALID : STORE_TEMPFAIL;
		store_free(s);
		return st;
	}
	MDB_stat ms;
	if (mdb_env_stat(s->env, &ms) == 0)
		s->psize = ms.ms_psize;
	/* Another process may have grown the map beyond our size: adopt it. */
	MDB_envinfo info;
	if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize < map)
		mdb_env_set_mapsize(s->env, map);
	if ((st = check_length(s, path, err, errlen)) != 0 ||
	    (st = open_dbs(s, path, err, errlen)) != 0) {
		store_free(s);
		return st;
	}
	MDB_txn *txn;
	if (txn_begin(s, MDB_RDONLY, &txn) == 0) {
		s->writer_last = (uint64_t)mdb_txn_id(txn);
		mdb_txn_abort(txn);
		maplock_release(s);
	}
	s->known_commit = s->done_commit = s->writer_last;
	if (loop) {
		s->loop = loop;
		s->async = malloc(sizeof *s->async);
		s->timer = malloc(sizeof *s->timer);
		if (!s->async || !s->timer || uv_mutex_init(&s->mu) != 0) {
			free(s->async);
			free(s->timer);
			set_err(err, errlen, "%s: out of memory", path);
			store_free(s);
			return STORE_TEMPFAIL;
		}
		uv_cond_init(&s->cond);
		uv_async_init(loop, s->async, on_async);
		s->async->data = s;
		uv_unref((uv_handle_t *)s->async);
		uv_timer_init(loop, s->timer);
		s->timer->data = s;
		uv_unref((uv_handle_t *)s->timer);
		if (uv_thread_create(&s->thread, writer_main, s) != 0) {
			set_err(err, errlen, "%s: cannot start the writer thread", path);
			uv_close((uv_handle_t *)s->async, on_handle_closed);
			uv_close((uv_handle_t *)s->timer, on_handle_closed);
			uv_cond_destroy(&s->cond);
			uv_mutex_destroy(&s->mu);
			store_free(s);
			return STORE_TEMPFAIL;
		}
		s->thread_started = true;
		if (uv_cond_init(&s->prep_cond) == 0) {
			if (uv_thread_create(&s->prep_thread, prep_main, s) == 0)
				s->prep_started = true;
			else
				uv_cond_destroy(&s->prep_cond);
		}
		runway_start(s, path);
	} else {
		uv_mutex_init(&s->mu);
		uv_cond_init(&s->cond);
	}
	*out = s;
	return STORE_OK;
}

/*
 * Drain and stop: the writer commits everything queued, then the callbacks
 * and watchers run here.  The async and timer handles are closed with
 * uv_close, so the caller's loop must run once more (uv_run) for their
 * close callbacks, which free them; the store itself is freed at once.
 */
void store_close(store *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		uv_mutex_lock(&s->mu);
		s->stopping = true;
		uv_cond_signal(&s->cond);
		if (s->prep_started)
			uv_cond_signal(&s->prep_cond);
		uv_mutex_unlock(&s->mu);
		if (s->prep_started) {
			uv_thread_join(&s->prep_thread);
			uv_cond_destroy(&s->prep_cond);
		}
		uv_thread_join(&s->thread);
		deliver_done(s);
	}
	if (s->runway_started) {
		uv_mutex_lock(&s->mu);
		s->stopping = true;
		uv_cond_signal(&s->runway_cond);
		uv_mutex_unlock(&s->mu);
		uv_thread_join(&s->runway_thread);
		uv_cond_destroy(&s->runway_cond);
		close(s->runway_fd);
	}
	if (s->async)
		uv_close((uv_handle_t *)s->async, on_handle_closed);
	if (s->timer)
		uv_close((uv_handle_t *)s->timer, on_handle_closed);
	/* Watches left behind are freed: their pointers die with the store. */
	struct store_watch *w = s->watch_head;
	while (w) {
		struct store_watch *next = w->next;
		free(w);
		w = next;
	}
	uv_cond_destroy(&s->cond);
	uv_mutex_destroy(&s->mu);
	store_free(s);
}
