/*
 * imap_cmd_store.c - the commands that write messages or their flags:
 * STORE and UID STORE (RFC 3501 §6.4.6), COPY, MOVE and their UID forms
 * (§6.4.7, RFC 6851), and APPEND (§6.3.11), with UIDPLUS's COPYUID and
 * APPENDUID (RFC 4315).
 *
 * Each builds one store request, hands it to the writer with imap_submit()
 * and answers when it is durable.  State a command keeps across that wait
 * lives in the command's arena, reached through s->cmd_state.  Untagged
 * EXISTS and EXPUNGE come from the view's sync at the tagged answer; the
 * only untagged data written here are STORE's FETCH (FLAGS) responses and
 * MOVE's "* OK [COPYUID ...]".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "protocols/imap/imap_int.h"

/* ------------------------------------------------------------ flag lists */

/* A client's flag list split into system flags and keywords. */
struct flag_set {
	uint32_t sys;          /* STORE_F_* */
	const char **kw;       /* keyword names, NUL terminated, distinct */
	size_t nkw;
};

static const struct {
	const char *name;
	uint32_t bit;
} system_flags[] = {
	{ "\\Seen", STORE_F_SEEN },       { "\\Answered", STORE_F_ANSWERED },
	{ "\\Flagged", STORE_F_FLAGGED }, { "\\Deleted", STORE_F_DELETED },
	{ "\\Draft", STORE_F_DRAFT },
};

/*
 * Split FL.  \Recent is dropped: only the server sets it (RFC 3501 §2.3.2).
 * Another "\" name is no flag we know: returns it so the caller can refuse
 * the command; NULL on success.  On arena exhaustion *OOM is set.
 */
static const char *flag_set_make(struct imap_cmd *cmd, const struct imap_flags *fl,
                                 struct flag_set *out, bool *oom)
{
	memset(out, 0, sizeof(*out));
	*oom = false;
	if (fl->n == 0)
		return NULL;
	out->kw = imap_cmd_alloc(cmd, fl->n * sizeof(*out->kw));
	if (out->kw == NULL) {
		*oom = true;
		return NULL;
	}
	for (size_t i = 0; i < fl->n; i++) {
		const char *f = fl->v[i].s;
		if (f[0] == '\\') {
			size_t j;
			if (strcasecmp(f, "\\Recent") == 0)
				continue;
			for (j = 0; j < sizeof(system_flags) / sizeof(*system_flags); j++)
				if (strcasecmp(f, system_flags[j].name) == 0)
					break;
			if (j == sizeof(system_flags) / sizeof(*system_flags))
				return f;
			out->sys |= system_flags[j].bit;
			continue;
		}
		size_t k;
		for (k = 0; k < out->nkw; k++)
			if (strcasecmp(out->kw[k], f) == 0)
				break;
		if (k == out->nkw)
			out->kw[out->nkw++] = f;
	}
	return NULL;
}

/* The keyword bits of KW in the table NAMES/N; names not in it add nothing. */
static uint64_t keyword_bits(const char *const *kw, size_t nkw, const char *const *names, size_t n)
{
	uint64_t bits = 0;

	for (size_t i = 0; i < nkw; i++)
		for (size_t j = 0; j < n && j < 64; j++)
			if (names[j] && strcasecmp(names[j], kw[i]) == 0)
				bits |= (uint64_t)1 << j;
	return bits;
}

/* Answer a failed write request with the matching NO. */
static void answer_store_error(struct imap_session *s, int status, const char *what)
{
	switch (status) {
	case STORE_OVERQUOTA: /* RFC 9208 §4.3.1 (rfc5530 lists it too) */
		imap_no(s, "OVERQUOTA", "Quota exceeded");
		break;
	case STORE_NOTFOUND:
		imap_no(s, "TRYCREATE", "Mailbox does not exist");
		break;
	case STORE_INVALID: /* the 64-keyword table of the mailbox is full */
		imap_no(s, "LIMIT", "Too many keywords in this mailbox");
		break;
	default: /* RFC 5530 UNAVAILABLE: temporary; also a full disk (STORE_NOSPACE) */
		imap_no(s, "UNAVAILABLE", "%s failed: %s, try again later", what,
		        store_strerror(status));
		break;
	}
}

/* -------------------------------------------------------------- STORE */

/* What STORE remembers while its request is written. */
struct store_ctx {
	enum store_flag_mode mode;
	bool silent;
	struct flag_set fs;
	uint32_t *uids;              /* ascending */
	size_t n;
	/* Before the write: each message's flags, keywords and modseq (0 when
	 * the message was already gone), and how far the client had been told
	 * of flag changes.  Used to keep .SILENT silent only about what this
	 * command alone did. */
	uint32_t *pre_flags;
	uint64_t *pre_kw, *pre_modseq;
	uint64_t pre_reported;
	/* STORE (UNCHANGEDSINCE n), RFC 7162 §3.1.3. */
	bool conditional;
	uint64_t unchangedsince;
};

static uint32_t apply_mode(enum store_flag_mode mode, uint32_t cur, uint32_t v)
{
	return mode == STORE_FLAGS_ADD ? cur | v : mode == STORE_FLAGS_REMOVE ? cur & ~v : v;
}

static uint64_t apply_mode64(enum store_flag_mode mode, uint64_t cur, uint64_t v)
{
	return mode == STORE_FLAGS_ADD ? cur | v : mode == STORE_FLAGS_REMOVE ? cur & ~v : v;
}

/* Find UID in the ascending array A/N: its index, or -1. */
static ssize_t find_uid(const uint32_t *a, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] < uid)
			lo = mid + 1;
		else if (a[mid] > uid)
			hi = mid;
		else
			return (ssize_t)mid;
	}
	return -1;
}

struct feed_collect {
	const struct imap_view *v;
	uint32_t last;
	uint32_t *uids;
	size_t n, cap;
	bool oom;
};

static int collect_flag_change(const struct store_change *ch, void *arg)
{
	struct feed_collect *fc = arg;

	if (ch->kind != STORE_CHANGE_FLAGS || ch->uid > fc->last || !imap_view_seq(fc->v, ch->uid))
		return 0;
	if (fc->n == fc->cap) {
		size_t cap = fc->cap ? fc->cap * 2 : 64;
		uint32_t *p = realloc(fc->uids, cap * sizeof(*p));
		if (p == NULL) {
			fc->oom = true;
			return 1;
		}
		fc->uids = p;
		fc->cap = cap;
	}
	fc->uids[fc->n++] = ch->uid;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void write_fetch_flags(struct imap_session *s, const struct store_message *m,
                              const char *const *names, size_t nnames)
{
	struct imap_wbuf *o = &s->out;
	uint32_t seq = imap_view_seq(&s->view, m->uid);

	if (seq == 0)
		return;
	imap_write_str(o, "* ");
	imap_write_u64(o, seq);
	imap_write_str(o, " FETCH (");
	if (s->uid || (s->enabled & IMAP_EN_CONDSTORE)) { /* RFC 3501 §6.4.8, RFC 7162 §3.2.4 */
		imap_write_str(o, "UID ");
		imap_write_u64(o, m->uid);
		imap_write_byte(o, ' ');
	}
	imap_write_str(o, "FLAGS ");
	imap_write_msg_flags(o, m->flags, m->keywords, names, nnames,
	                     imap_view_is_recent(&s->view, m->uid));
	if (s->enabled & IMAP_EN_CONDSTORE) {
		imap_write_str(o, " MODSEQ (");
		imap_write_u64(o, m->modseq);
		imap_write_byte(o, ')');
	}
	imap_write_str(o, ")\r\n");
}

/* RFC 7162 §3.1.3: a conditional STORE reports the new MODSEQ of each
 * message it passed, even under .SILENT; this is that FETCH without FLAGS. */
static void write_fetch_modseq(struct imap_session *s, const struct store_message *m)
{
	struct imap_wbuf *o = &s->out;
	uint32_t seq = imap_view_seq(&s->view, m->uid);

	if (seq == 0)
		return;
	imap_write_str(o, "* ");
	imap_write_u64(o, seq);
	imap_write_str(o, " FETCH (UID ");
	imap_write_u64(o, m->uid);
	imap_write_str(o, " MODSEQ (");
	imap_write_u64(o, m->modseq);
	imap_write_str(o, "))\r\n");
}

/* "MODIFIED set" (RFC 7162 §3.1.3) into CODE, NUL-terminated: the numbers
 * (UIDs for UID STORE) of the messages that failed UNCHANGEDSINCE.  Returns
 * 1 if some did, 0 if none, -1 out of memory.  *PASSED[i] tells whether
 * x->uids[i] was stored. */
static int modified_code(struct imap_session *s, const struct store_ctx *x, store_req *r,
                         struct imap_wbuf *code, bool *passed)
{
	uint32_t *nums = imap_cmd_alloc(&s->cmd, (x->n ? x->n : 1) * sizeof(*nums));
	size_t k = 0;

	if (nums == NULL)
		return -1;
	for (size_t i = 0; i < x->n; i++) {
		const struct store_result *res = store_req_result(r, i);
		passed[i] = res != NULL && res->status == STORE_OK && res->uid != 0;
		if (res != NULL && res->status == STORE_MODIFIED)
			nums[k++] = s->uid ? x->uids[i] : imap_view_seq(&s->view, x->uids[i]);
	}
	if (k == 0)
		return 0;
	imap_write_str(code, "MODIFIED ");
	imap_write_uid_set(code, nums, k); /* ascending, as x->uids */
	imap_write_byte(code, '\0');
	return code->oom ? -1 : 1;
}

static void store_answer(struct imap_session *s, const struct imap_wbuf *code, bool modified)
{
	if (modified)
		imap_ok(s, code->data, "Conditional STORE failed for some messages");
	else
		imap_ok(s, NULL, "Store completed");
}

/*
 * The write is durable.  Report flags here rather than leaving it to the
 * sync at the answer, because STORE's own FETCH responses must carry UID
 * for UID STORE and must be left out for .SILENT: every flag change of a
 * message of the view up to the mailbox's current modseq H is written now
 * (this command's, unless silent, and anyone else's), and the view's
 * reported_modseq is moved to H so the sync does not repeat them.
 */
static void store_done(struct imap_session *s, store_req *r)
{
	struct store_ctx *x = s->cmd_state;
	struct imap_view *v = &s->view;
	struct store_mailbox mb;
	const char *names[64] = { 0 };
	size_t nnames = 0;
	int status = store_req_status(r);
	struct imap_wbuf code;
	bool modified = false;
	bool *passed = NULL;

	s->cmd_state = NULL;
	if (status != STORE_OK) {
		answer_store_error(s, status, "STORE");
		return;
	}
	imap_wbuf_init(&code);
	if (x->conditional) {
		passed = imap_cmd_alloc(&s->cmd, x->n * sizeof(*passed));
		int m = passed != NULL ? modified_code(s, x, r, &code, passed) : -1;
		if (m < 0) {
			/* Stored, but we cannot say which failed: the client
			 * learns the flags from the sync and retries. */
			imap_wbuf_free(&code);
			imap_no(s, "SERVERBUG", "Conditional STORE done, but out of memory to report it");
			return;
		}
		modified = m > 0;
	}
	if (s->state != IMAP_SELECTED) {
		store_answer(s, &code, modified);
		imap_wbuf_free(&code);
		return;
	}

	store *st = conn_store(s->c);
	store_txn *t = store_read_begin(st);
	if (t == NULL) {
		store_answer(s, &code, modified); /* the sync will report */
		imap_wbuf_free(&code);
		return;
	}
	if (store_mailbox_get_id(t, v->mailbox_id, &mb) != STORE_OK ||
	    store_mailbox_keywords(t, v->mailbox_id, names, &nnames) != STORE_OK) {
		store_read_end(t);
		store_answer(s, &code, modified);
		imap_wbuf_free(&code);
		return;
	}
	/* A keyword new to the mailbox: the client hears the new FLAGS before
	 * FETCH responses that use it (RFC 3501 §7.2.6). */
	if (nnames > v->nkeywords || v->flags_dirty)
		imap_view_write_flags(s);

	struct feed_collect fc = { .v = v, .last = v->count ? v->uids[v->count - 1] : 0 };
	if (store_changes_since(t, v->mailbox_id, v->reported_modseq, collect_flag_change, &fc) !=
	        STORE_OK || fc.oom) {
		free(fc.uids);
		store_read_end(t);
		store_answer(s, &code, modified);
		imap_wbuf_free(&code);
		return;
	}
	/* Without .SILENT, every message named is reported, changed or not
	 * (RFC 3501 §6.4.6: "the updated value"); so is every message of a
	 * conditional STORE, at least by its MODSEQ (RFC 7162 §3.1.3), and
	 * with its flags when it failed the test (Example 10 there). */
	if (!x->silent || x->conditional) {
		for (size_t i = 0; i < x->n && !fc.oom; i++) {
			struct store_change ch = { .uid = x->uids[i], .kind = STORE_CHANGE_FLAGS };
			collect_flag_change(&ch, &fc);
		}
	}
	if (fc.n > 1)
		qsort(fc.uids, fc.n, sizeof(*fc.uids), cmp_u32);

	uint64_t kwbits = keyword_bits(x->fs.kw, x->fs.nkw, names, nnames);
	uint32_t prev = 0;
	for (size_t i = 0; i < fc.n; i++) {
		struct store_message m;
		uint32_t uid = fc.uids[i];
		if (uid == prev)
			continue;
		prev = uid;
		if (store_message_get(t, v->mailbox_id, uid, &m) != STORE_OK)
			continue;
		ssize_t j = x->silent ? find_uid(x->uids, x->n, uid) : -1;
		/* .SILENT: stay quiet about a message the client knew as it was
		 * before and that now holds exactly what this STORE made of it. */
		if (j >= 0 && (!x->conditional || passed[j]) &&
		    x->pre_modseq[j] != 0 && x->pre_modseq[j] <= x->pre_reported &&
		    m.flags == apply_mode(x->mode, x->pre_flags[j], x->fs.sys) &&
		    m.keywords == apply_mode64(x->mode, x->pre_kw[j], kwbits)) {
			if (x->conditional && passed[j])
				write_fetch_modseq(s, &m);
			continue;
		}
		write_fetch_flags(s, &m, names, nnames);
	}
	free(fc.uids);
	store_read_end(t);
	if (mb.highestmodseq > v->reported_modseq)
		v->reported_modseq = mb.highestmodseq;
	store_answer(s, &code, modified);
	imap_wbuf_free(&code);
}

void imap_cmd_store(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_seqset set;
	struct imap_store a;
	struct store_ctx *x;
	bool oom;

	if (imap_parse_sp(cmd) || imap_parse_seqset(cmd, &set) || imap_parse_sp(cmd) ||
	    imap_parse_store(cmd, &a)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (a.unchangedsince_set) /* a CONDSTORE enabling command (RFC 7162 §3.1) */
		imap_condstore_enable(s);
	if (s->view.readonly) {
		imap_no(s, NULL, "Mailbox is read-only");
		return;
	}
	x = imap_cmd_alloc(cmd, sizeof(*x));
	if (x == NULL) {
		imap_bad(s, NULL, "Command too large");
		return;
	}
	const char *bad = flag_set_make(cmd, &a.flags, &x->fs, &oom);
	if (oom) {
		imap_bad(s, NULL, "Command too large");
		return;
	}
	if (bad != NULL) {
		imap_bad(s, NULL, "Unknown system flag %s", bad);
		return;
	}
	if (imap_view_resolve(s, &set, s->uid, &x->uids, &x->n) < 0)
		return; /* answered */
	x->mode = a.op == IMAP_STORE_ADD ? STORE_FLAGS_ADD
	        : a.op == IMAP_STORE_REMOVE ? STORE_FLAGS_REMOVE : STORE_FLAGS_REPLACE;
	x->silent = a.silent;
	x->conditional = a.unchangedsince_set;
	x->unchangedsince = a.unchangedsince;
	if (x->n == 0) {
		imap_ok(s, NULL, "Store completed");
		return;
	}

	/* Read what the messages hold now (records only); see store_done. */
	x->pre_flags = imap_cmd_alloc(cmd, x->n * sizeof(*x->pre_flags));
	x->pre_kw = imap_cmd_alloc(cmd, x->n * sizeof(*x->pre_kw));
	x->pre_modseq = imap_cmd_alloc(cmd, x->n * sizeof(*x->pre_modseq));
	if (x->pre_flags == NULL || x->pre_kw == NULL || x->pre_modseq == NULL) {
		imap_bad(s, NULL, "Command too large");
		return;
	}
	x->pre_reported = s->view.reported_modseq;
	if (x->silent) {
		store_txn *t = store_read_begin(conn_store(s->c));
		for (size_t i = 0; t != NULL && i < x->n; i++) {
			struct store_message m;
			if (store_message_get(t, s->view.mailbox_id, x->uids[i], &m) == STORE_OK) {
				x->pre_flags[i] = m.flags;
				x->pre_kw[i] = m.keywords;
				x->pre_modseq[i] = m.modseq;
			}
		}
		if (t != NULL)
			store_read_end(t);
	}

	store_req *r = store_req_new();
	if (r == NULL) {
		imap_no(s, "SERVERUNAVAILABLE", "Out of memory");
		return;
	}
	/* The UNCHANGEDSINCE test is the writer's, in the transaction that
	 * writes, so nothing can change a message between test and write. */
	for (size_t i = 0; i < x->n; i++) {
		if (x->conditional)
			store_req_set_flags_if(r, s->view.mailbox_id, x->uids[i], x->mode,
			                       x->fs.sys, x->fs.kw, x->fs.nkw, x->unchangedsince);
		else
			store_req_set_flags(r, s->view.mailbox_id, x->uids[i], x->mode,
			                    x->fs.sys, x->fs.kw, x->fs.nkw);
	}
	s->cmd_state = x;
	imap_submit(s, r, store_done);
}

/* --------------------------------------------------------- COPY, MOVE */

struct copy_ctx {
	uint32_t *uids; /* source UIDs, ascending: the order of the operations */
	size_t n;
	bool move;
};

/* "COPYUID uidvalidity src dst" (RFC 4315 §3) as a NUL-terminated string in
 * W, or false when no message was copied (then no code is given). */
static bool copyuid_code(struct imap_wbuf *w, const struct copy_ctx *x, store_req *r)
{
	uint32_t *src = malloc((x->n ? x->n : 1) * sizeof(*src));
	uint32_t *dst = malloc((x->n ? x->n : 1) * sizeof(*dst));
	uint32_t uidvalidity = 0;
	size_t k = 0, nres = store_req_count(r);

	if (src == NULL || dst == NULL) {
		free(src);
		free(dst);
		return false;
	}
	for (size_t i = 0; i < x->n && i < nres; i++) {
		const struct store_result *res = store_req_result(r, i);
		if (res == NULL || res->status != STORE_OK || res->uid == 0)
			continue; /* gone before it could be copied (RFC 2180 §4.4.1) */
		src[k] = x->uids[i];
		dst[k] = res->uid;
		uidvalidity = res->uidvalidity;
		k++;
	}
	if (k > 0) {
		imap_write_str(w, "COPYUID ");
		imap_write_u64(w, uidvalidity);
		imap_write_byte(w, ' ');
		imap_write_uid_set(w, src, k); /* element order kept, as RFC 4315 needs */
		imap_write_byte(w, ' ');
		imap_write_uid_set(w, dst, k);
		imap_write_byte(w, '\0');
	}
	free(src);
	free(dst);
	return k > 0 && !w->oom;
}

static void copy_done(struct imap_session *s, store_req *r)
{
	struct copy_ctx *x = s->cmd_state;
	int status = store_req_status(r);
	struct imap_wbuf code;

	s->cmd_state = NULL;
	if (status != STORE_OK) {
		answer_store_error(s, status, x->move ? "MOVE" : "COPY");
		return;
	}
	imap_wbuf_init(&code);
	bool have = copyuid_code(&code, x, r);
	if (x->move) {
		/* RFC 6851 §4.3: COPYUID goes in an untagged OK before the
		 * EXPUNGEs, which the sync at the tagged answer sends. */
		if (have) {
			imap_write_str(&s->out, "* OK [");
			imap_write_str(&s->out, code.data);
			imap_write_str(&s->out, "] Moved\r\n");
		}
		imap_wbuf_free(&code);
		imap_ok(s, NULL, "Move completed");
		return;
	}
	imap_ok(s, have ? code.data : NULL, "Copy completed");
	imap_wbuf_free(&code);
}

void imap_cmd_copy(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_seqset set;
	struct imap_str name;
	struct store_mailbox mb;
	struct copy_ctx *x;
	bool move = strcmp(cmd->name, "MOVE") == 0;

	if (imap_parse_sp(cmd) || imap_parse_seqset(cmd, &set) || imap_parse_sp(cmd) ||
	    imap_parse_mailbox(cmd, &name) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (move && s->view.readonly) {
		imap_no(s, NULL, "Mailbox is read-only");
		return;
	}
	x = imap_cmd_alloc(cmd, sizeof(*x));
	if (x == NULL) {
		imap_bad(s, NULL, "Command too large");
		return;
	}
	x->move = move;
	if (imap_view_resolve(s, &set, s->uid, &x->uids, &x->n) < 0)
		return; /* answered */

	store_txn *t = store_read_begin(conn_store(s->c));
	if (t == NULL) {
		imap_no(s, "SERVERUNAVAILABLE", "Cannot read the store");
		return;
	}
	int rc = store_mailbox_get(t, s->user_id, name.s, &mb);
	store_read_end(t);
	if (rc == STORE_NOTFOUND) {
		/* RFC 3501 §6.4.7: TRYCREATE when the destination is missing. */
		imap_no(s, "TRYCREATE", "Mailbox does not exist");
		return;
	}
	if (rc != STORE_OK) {
		imap_no(s, "SERVERUNAVAILABLE", "Cannot read the store: %s", store_strerror(rc));
		return;
	}
	if (x->n == 0) { /* a UID set naming no message: nothing to do */
		imap_ok(s, NULL, move ? "No messages to move" : "No messages to copy");
		return;
	}

	store_req *r = store_req_new();
	if (r == NULL) {
		imap_no(s, "SERVERUNAVAILABLE", "Out of memory");
		return;
	}
	/* Ascending source order, so COPYUID's sets are both ascending. */
	for (size_t i = 0; i < x->n; i++) {
		if (move)
			store_req_move(r, s->view.mailbox_id, x->uids[i], mb.id, 0);
		else
			store_req_copy(r, s->view.mailbox_id, x->uids[i], mb.id);
	}
	s->cmd_state = x;
	imap_submit(s, r, copy_done);
}

/* ------------------------------------------------------------- APPEND */

static void append_done(struct imap_session *s, store_req *r)
{
	int status = store_req_status(r);
	const struct store_result *res = store_req_count(r) ? store_req_result(r, 0) : NULL;
	char code[64];

	if (status != STORE_OK || res == NULL) {
		answer_store_error(s, status != STORE_OK ? status : STORE_TEMPFAIL, "APPEND");
		return;
	}
	/* RFC 4315 §3: APPENDUID uidvalidity uid. */
	snprintf(code, sizeof(code), "APPENDUID %" PRIu32 " %" PRIu32, res->uidvalidity, res->uid);
	imap_ok(s, code, "Append completed");
}

void imap_cmd_append(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_append a;
	struct store_mailbox mb;
	struct flag_set fs;
	bool oom;

	if (imap_parse_sp(cmd) || imap_parse_append(cmd, &a)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	const char *bad = flag_set_make(cmd, &a.flags, &fs, &oom);
	if (oom) {
		imap_bad(s, NULL, "Command too large");
		return;
	}
	if (bad != NULL) {
		imap_bad(s, NULL, "Unknown system flag %s", bad);
		return;
	}
	if (a.message.len == 0) {
		imap_no(s, NULL, "Cannot store an empty message");
		return;
	}

	store_txn *t = store_read_begin(conn_store(s->c));
	if (t == NULL) {
		imap_no(s, "SERVERUNAVAILABLE", "Cannot read the store");
		return;
	}
	int rc = store_mailbox_get(t, s->user_id, a.mailbox.s, &mb);
	store_read_end(t);
	if (rc == STORE_NOTFOUND) {
		/* RFC 3501 §6.3.11: TRYCREATE when the mailbox is missing. */
		imap_no(s, "TRYCREATE", "Mailbox does not exist");
		return;
	}
	if (rc != STORE_OK) {
		imap_no(s, "SERVERUNAVAILABLE", "Cannot read the store: %s", store_strerror(rc));
		return;
	}

	store_msg *m = store_msg_new();
	store_req *r = m ? store_req_new() : NULL;
	if (r == NULL) {
		if (m)
			store_msg_unref(m);
		imap_no(s, "SERVERUNAVAILABLE", "Out of memory");
		return;
	}
	/* The literal's octets, straight from the assembled command. */
	store_msg_append(m, a.message.s, a.message.len);
	store_msg_finish(m);
	int64_t date = a.has_date ? (int64_t)imap_datetime_to_time(&a.date) : 0;
	store_req_append(r, mb.id, m, fs.sys, fs.kw, fs.nkw, date);
	store_msg_unref(m); /* the request holds its own reference */
	imap_submit(s, r, append_done);
}
