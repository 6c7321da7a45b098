/*
 * imap_view.c - the selected mailbox as one IMAP session knows it, and the
 * untagged responses that keep it in step with the store.
 *
 * A view is the ascending array of the UIDs the client has been told about
 * (message sequence numbers index it, RFC 3501 §2.3.1.2) and the modseq up
 * to which the store's change feed has been applied.  imap_view_sync() reads
 * "changes since view.modseq" and turns them into EXPUNGE, EXISTS, RECENT,
 * FLAGS and FETCH (FLAGS) responses (§7.4.1, §5.2).  Flags are never cached.
 * Once QRESYNC is enabled, expunges go out as VANISHED (RFC 7162 §3.2.10).
 *
 * \Recent (§2.3.2): a process-wide table maps a mailbox id to the highest
 * UID some session has already claimed as recent; a SELECT, or a sync that
 * sees new messages, claims what lies above it, so exactly one session sees
 * each new message as recent.  EXAMINE looks without claiming (§6.3.2).
 * The table lives only in memory: after a restart, messages are recent once
 * more for the first session that selects their mailbox.
 *
 * SELECT without reading the mailbox: the view's array comes from the
 * process-wide list cache (protocols/uidcache.c), brought up to date from
 * the change feed, and is shared with it; the view copies it only before
 * its own expunges or appends change it (view_own).
 *
 * IMAP4rev2 (RFC 9051 Appendix E items 12 and 21): a session that has
 * enabled it neither claims nor reports \Recent, so the messages stay
 * recent for the next IMAP4rev1 session, and every unsolicited FETCH it is
 * sent carries the UID.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/imap/imap_int.h"
#include "protocols/uidcache.h"

/* ------------------------------------------------- the \Recent claim table */

struct recent_slot {
	uint32_t mailbox_id; /* 0: empty */
	uint32_t claimed;    /* highest UID claimed as recent */
};

/* Open addressing, loop thread only.  Entries are never removed: a few
 * bytes per mailbox ever selected since the daemon started. */
static struct recent_slot *recent_tab;
static size_t recent_cap, recent_used;

static size_t recent_hash(uint32_t id, size_t cap)
{
	return (size_t)((id * 2654435761u) & (uint32_t)(cap - 1));
}

static struct recent_slot *recent_find(uint32_t id, bool create)
{
	if (create && (recent_used + 1) * 2 > recent_cap) {
		size_t ncap = recent_cap ? recent_cap * 2 : 64;
		struct recent_slot *n = calloc(ncap, sizeof *n);
		if (!n)
			return NULL;
		for (size_t i = 0; i < recent_cap; i++) {
			if (!recent_tab[i].mailbox_id)
				continue;
			size_t j = recent_hash(recent_tab[i].mailbox_id, ncap);
			while (n[j].mailbox_id)
				j = (j + 1) & (ncap - 1);
			n[j] = recent_tab[i];
		}
		free(recent_tab);
		recent_tab = n;
		recent_cap = ncap;
	}
	if (!recent_cap)
		return NULL;
	for (size_t j = recent_hash(id, recent_cap);; j = (j + 1) & (recent_cap - 1)) {
		if (recent_tab[j].mailbox_id == id)
			return &recent_tab[j];
		if (!recent_tab[j].mailbox_id) {
			if (!create)
				return NULL;
			recent_tab[j].mailbox_id = id;
			recent_tab[j].claimed = 0;
			recent_used++;
			return &recent_tab[j];
		}
	}
}

/* Add [LO, HI] to the view's recent ranges; ranges only ever grow upwards,
 * so the new one goes at the end, merged with the last when adjacent. */
static void view_add_recent(struct imap_view *v, uint32_t lo, uint32_t hi)
{
	if (lo > hi)
		return;
	if (v->nrecent && v->recent[v->nrecent - 1].hi + 1 >= lo) {
		if (hi > v->recent[v->nrecent - 1].hi)
			v->recent[v->nrecent - 1].hi = hi;
		return;
	}
	struct imap_range *n = realloc(v->recent, (v->nrecent + 1) * sizeof *n);
	if (!n)
		return; /* the messages just are not shown as recent */
	v->recent = n;
	v->recent[v->nrecent].lo = lo;
	v->recent[v->nrecent].hi = hi;
	v->nrecent++;
	v->recent_from = v->recent[0].lo;
}

/* Messages LO..HI (UIDs) appeared in the view: take the part of them that
 * no session has claimed yet. */
static void view_claim_recent(struct imap_view *v, uint32_t lo, uint32_t hi)
{
	struct recent_slot *slot = recent_find(v->mailbox_id, !v->readonly);
	uint32_t claimed = slot ? slot->claimed : 0;

	if (hi <= claimed)
		return;
	if (lo <= claimed)
		lo = claimed + 1;
	view_add_recent(v, lo, hi);
	if (!v->readonly && slot)
		slot->claimed = hi;
}

bool imap_view_is_recent(const struct imap_view *v, uint32_t uid)
{
	return v->nrecent && imap_ranges_contain(v->recent, v->nrecent, uid);
}

static uint32_t view_lower_bound(const struct imap_view *v, uint32_t uid)
{
	return uid_lower_bound(v->uids, v->count, uid);
}

uint32_t imap_view_recent_count(const struct imap_view *v)
{
	uint32_t n = 0;

	for (size_t i = 0; i < v->nrecent; i++) {
		uint32_t a = view_lower_bound(v, v->recent[i].lo);
		uint32_t b = v->recent[i].hi == UINT32_MAX ? v->count
		                                           : view_lower_bound(v, v->recent[i].hi + 1);
		n += b - a;
	}
	return n;
}

uint32_t imap_view_seq(const struct imap_view *v, uint32_t uid)
{
	uint32_t i = view_lower_bound(v, uid);

	return i < v->count && v->uids[i] == uid ? i + 1 : 0;
}

/* ------------------------------------------------------------- flags */

void imap_write_msg_flags(struct imap_wbuf *w, uint32_t flags, uint64_t keywords,
                          const char *const *names, size_t nnames, bool recent)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} sys[] = {
		{ STORE_F_ANSWERED, "\\Answered" }, { STORE_F_FLAGGED, "\\Flagged" },
		{ STORE_F_DELETED, "\\Deleted" },   { STORE_F_SEEN, "\\Seen" },
		{ STORE_F_DRAFT, "\\Draft" },
	};
	bool first = true;

	imap_write_byte(w, '(');
	for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
		if (!(flags & sys[i].bit))
			continue;
		if (!first)
			imap_write_byte(w, ' ');
		imap_write_str(w, sys[i].name);
		first = false;
	}
	for (size_t i = 0; i < nnames && i < 64; i++) {
		if (!(keywords & ((uint64_t)1 << i)) || !names[i])
			continue;
		if (!first)
			imap_write_byte(w, ' ');
		imap_write_str(w, names[i]);
		first = false;
	}
	if (recent) {
		if (!first)
			imap_write_byte(w, ' ');
		imap_write_str(w, "\\Recent");
	}
	imap_write_byte(w, ')');
}

/* FLAGS and PERMANENTFLAGS from an open read transaction. */
static void view_write_flags_txn(struct imap_session *s, store_txn *t)
{
	const char *names[64] = { 0 };
	size_t n = 0;
	struct imap_wbuf *w = &s->out;

	if (store_mailbox_keywords(t, s->view.mailbox_id, names, &n) != STORE_OK)
		n = 0;
	imap_write_str(w, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
	for (size_t i = 0; i < n; i++) {
		if (names[i]) {
			imap_write_byte(w, ' ');
			imap_write_str(w, names[i]);
		}
	}
	imap_write_str(w, ")\r\n");
	if (s->view.readonly) {
		/* RFC 3501 §6.3.2: no flag can be changed permanently. */
		imap_write_str(w, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	} else {
		imap_write_str(w, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
		for (size_t i = 0; i < n; i++) {
			if (names[i]) {
				imap_write_byte(w, ' ');
				imap_write_str(w, names[i]);
			}
		}
		imap_write_str(w, " \\*)] Flags permitted\r\n");
	}
	s->view.nkeywords = n;
	s->view.flags_dirty = false;
}

void imap_view_write_flags(struct imap_session *s)
{
	store_txn *t = store_read_begin(conn_store(s->c));

	if (!t)
		return;
	view_write_flags_txn(s, t);
	store_read_end(t);
}

/* Make V's array its own before changing it. */
static bool view_own(struct imap_view *v)
{
	if (!v->shared)
		return true;
	uint32_t cap = v->count + 64;
	uint32_t *p = malloc((size_t)cap * sizeof *p);
	if (!p)
		return false;
	if (v->count)
		memcpy(p, v->uids, (size_t)v->count * sizeof *p);
	uid_list_put(v->shared);
	v->shared = NULL;
	v->uids = p;
	v->cap = cap;
	return true;
}

/* ------------------------------------------------------ open and close */

static void view_watch_cb(void *arg, uint32_t mailbox_id)
{
	struct imap_session *s = arg;

	if (conn_closed(s->c) || s->state != IMAP_SELECTED || mailbox_id != s->view.mailbox_id)
		return;
	/* RFC 2177: while idling, updates go out at once.  Otherwise a
	 * command is running (its answer syncs) or none is, and the next one
	 * syncs: RFC 3501 §7.4.1 forbids EXPUNGE outside a command anyway. */
	if (s->idling) {
		imap_view_sync(s, true);
		imap_flush(s);
		/* Out now rather than after every other watcher's sync: with
		 * thousands idling, the first pushes should not wait for the
		 * last ones to be computed. */
		conn_flush(s->c);
	}
}

int imap_view_open(struct imap_session *s, const struct store_mailbox *mb, bool readonly)
{
	struct imap_view *v = &s->view;
	struct store_mailbox cur;
	const char *names[64];
	size_t nkw = 0;
	store_txn *t;
	int rc;

	imap_view_close(s);
	t = store_read_begin(conn_store(s->c));
	if (!t)
		return STORE_TEMPFAIL;
	/* Re-read the record in this transaction: the counters, UIDNEXT and
	 * modseq must be those of the very state the UIDs are listed from. */
	rc = store_mailbox_get_id(t, mb->id, &cur);
	if (rc != STORE_OK) {
		store_read_end(t);
		return rc;
	}
	v->mailbox_id = cur.id;
	v->uidvalidity = cur.uidvalidity;
	v->uidnext = cur.uidnext;
	v->modseq = cur.highestmodseq;
	v->reported_modseq = cur.highestmodseq;
	v->readonly = readonly;
	uint32_t first_unseen = 0;
	struct uid_list *l = uid_cache_open(t, &cur, &first_unseen, &rc);
	if (l) {
		/* Shared with the cache and other sessions until this view
		 * changes it (view_own). */
		v->shared = l;
		v->uids = l->uids;
		v->count = v->cap = l->count;
		v->first_unseen = first_unseen ? imap_view_seq(v, first_unseen) : 0;
	}
	if (rc == STORE_OK && store_mailbox_keywords(t, cur.id, names, &nkw) == STORE_OK)
		v->nkeywords = nkw;
	store_read_end(t);
	if (rc == STORE_OK) {
		s->watch = store_watch_add(conn_store(s->c), cur.id, view_watch_cb, s);
		if (!s->watch)
			rc = STORE_TEMPFAIL;
	}
	if (rc != STORE_OK) {
		if (v->shared)
			uid_list_put(v->shared);
		else
			free(v->uids);
		memset(v, 0, sizeof *v);
		return rc;
	}
	if (v->count && !(s->enabled & IMAP_EN_REV2))
		view_claim_recent(v, v->uids[0], v->uids[v->count - 1]);
	s->state = IMAP_SELECTED;
	return STORE_OK;
}

void imap_view_close(struct imap_session *s)
{
	/* Once the daemon is stopping the store is closed and has freed
	 * every watch itself (store.h, store_close). */
	if (s->watch && conn_store(s->c))
		store_watch_remove(s->watch);
	s->watch = NULL;
	if (s->view.shared)
		uid_list_put(s->view.shared);
	else
		free(s->view.uids);
	free(s->view.recent);
	free(s->view.saved); /* RFC 5182 §2.1: "$" is empty in the next mailbox */
	memset(&s->view, 0, sizeof s->view);
	if (s->state == IMAP_SELECTED)
		s->state = IMAP_AUTH;
}

/* ------------------------------------------------------------- sync */

struct view_change {
	uint32_t uid;
	uint64_t modseq;
};

struct change_list {
	struct view_change *v;
	size_t n, cap;
};

struct view_sync {
	struct imap_view *v;
	struct change_list expunged; /* UIDs of the view now gone */
	struct change_list flagged;  /* UIDs of the view with new flags */
	struct change_list added;    /* UIDs above the view's last */
	bool nomem;
};

static void change_push(struct view_sync *x, struct change_list *l, uint32_t uid, uint64_t modseq)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct view_change *n = realloc(l->v, cap * sizeof *n);
		if (!n) {
			x->nomem = true;
			return;
		}
		l->v = n;
		l->cap = cap;
	}
	l->v[l->n].uid = uid;
	l->v[l->n].modseq = modseq;
	l->n++;
}

static int view_sync_one(const struct store_change *ch, void *arg)
{
	struct view_sync *x = arg;
	struct imap_view *v = x->v;
	uint32_t last = v->count ? v->uids[v->count - 1] : 0;

	if (ch->kind == STORE_CHANGE_EXPUNGE) {
		if (imap_view_seq(v, ch->uid))
			change_push(x, &x->expunged, ch->uid, ch->modseq);
	} else if (ch->kind == STORE_CHANGE_FLAGS) {
		if (ch->uid > last)
			change_push(x, &x->added, ch->uid, ch->modseq);
		else if (ch->modseq > v->reported_modseq && imap_view_seq(v, ch->uid))
			change_push(x, &x->flagged, ch->uid, ch->modseq);
	}
	return x->nomem;
}

static int cmp_change_uid(const void *a, const void *b)
{
	const struct view_change *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* "* n EXPUNGE" for each UID of LIST, highest sequence number first so
 * that no number shifts under the ones still to come, then drop them.
 * Once QRESYNC is enabled, one "* VANISHED uids" instead (RFC 7162
 * §3.2.10.2: it names only messages the client was told of, as here). */
static void view_apply_expunges(struct imap_session *s, struct change_list *l)
{
	struct imap_view *v = &s->view;
	uint32_t *seqs = view_own(v) ? malloc(l->n * sizeof *seqs) : NULL;
	size_t n = 0;

	if (!seqs)
		return;
	for (size_t i = 0; i < l->n; i++) {
		uint32_t seq = imap_view_seq(v, l->v[i].uid);
		if (seq)
			seqs[n++] = seq;
	}
	qsort(seqs, n, sizeof *seqs, uid_cmp);
	if ((s->enabled & IMAP_EN_QRESYNC) && n) {
		uint32_t *uids = malloc(n * sizeof *uids);
		if (!uids) {
			free(seqs);
			return;
		}
		for (size_t i = 0; i < n; i++)
			uids[i] = v->uids[seqs[i] - 1]; /* ascending, as seqs are */
		imap_write_str(&s->out, "* VANISHED ");
		imap_write_uid_set(&s->out, uids, n);
		imap_write_crlf(&s->out);
		free(uids);
	}
	for (size_t i = n; i-- > 0;) {
		if (!(s->enabled & IMAP_EN_QRESYNC))
			imap_untagged(s, "%" PRIu32 " EXPUNGE", seqs[i]);
		v->uids[seqs[i] - 1] = 0;
	}
	uint32_t out = 0;
	for (uint32_t i = 0; i < v->count; i++)
		if (v->uids[i])
			v->uids[out++] = v->uids[i];
	v->count = out;
	free(seqs);
}

/* Append the UIDs of LIST (all above the view's last) to the view. */
static bool view_append(struct imap_view *v, struct change_list *l)
{
	qsort(l->v, l->n, sizeof *l->v, cmp_change_uid);
	if (!view_own(v))
		return false;
	if (v->count + l->n > v->cap) {
		size_t cap = v->cap ? v->cap : 64;
		while (cap < v->count + l->n)
			cap *= 2;
		if (cap > UINT32_MAX)
			return false;
		uint32_t *n = realloc(v->uids, cap * sizeof *n);
		if (!n)
			return false;
		v->uids = n;
		v->cap = (uint32_t)cap;
	}
	for (size_t i = 0; i < l->n; i++)
		v->uids[v->count++] = l->v[i].uid;
	return true;
}

/* The mailbox vanished under the view (DELETE or RENAME elsewhere): report
 * every message gone, when expunges may be reported. */
static void view_gone(struct imap_session *s, bool expunge_ok)
{
	struct imap_view *v = &s->view;

	if (!expunge_ok)
		return;
	if ((s->enabled & IMAP_EN_QRESYNC) && v->count) {
		imap_write_str(&s->out, "* VANISHED ");
		imap_write_uid_set(&s->out, v->uids, v->count);
		imap_write_crlf(&s->out);
	} else {
		for (uint32_t i = v->count; i > 0; i--)
			imap_untagged(s, "%" PRIu32 " EXPUNGE", i);
	}
	v->count = 0;
}

void imap_view_sync(struct imap_session *s, bool expunge_ok)
{
	struct imap_view *v = &s->view;
	struct view_sync x = { .v = v };
	struct store_mailbox mb;
	store_txn *t;
	int rc;

	if (s->state != IMAP_SELECTED)
		return;
	t = store_read_begin(conn_store(s->c));
	if (!t)
		return;
	rc = store_mailbox_get_id(t, v->mailbox_id, &mb);
	if (rc != STORE_OK) {
		store_read_end(t);
		if (rc == STORE_NOTFOUND)
			view_gone(s, expunge_ok);
		return;
	}
	if (mb.highestmodseq <= v->modseq) {
		if (v->flags_dirty)
			view_write_flags_txn(s, t);
		store_read_end(t);
		return;
	}
	rc = store_changes_since(t, v->mailbox_id, v->modseq, view_sync_one, &x);
	if (rc != STORE_OK || x.nomem) {
		/* Try again at the next sync; nothing was applied. */
		store_read_end(t);
		free(x.expunged.v);
		free(x.flagged.v);
		free(x.added.v);
		return;
	}

	/* Changes after an expunge we may not report yet stay unread: the view
	 * must not claim to reflect a state the client was not shown. */
	uint64_t upto = mb.highestmodseq;
	if (x.expunged.n && !expunge_ok)
		upto = x.expunged.v[0].modseq - 1;
	if (x.expunged.n && expunge_ok)
		view_apply_expunges(s, &x.expunged);
	if (x.added.n) {
		if (view_append(v, &x.added)) {
			imap_untagged(s, "%" PRIu32 " EXISTS", v->count);
			if (!(s->enabled & IMAP_EN_REV2)) {
				view_claim_recent(v, x.added.v[0].uid,
				                  x.added.v[x.added.n - 1].uid);
				imap_untagged(s, "%" PRIu32 " RECENT", imap_view_recent_count(v));
			}
		} else if (upto > x.added.v[0].modseq - 1) {
			upto = x.added.v[0].modseq - 1; /* out of memory: retry later */
		}
	}
	if (mb.uidnext > v->uidnext)
		v->uidnext = mb.uidnext;

	const char *names[64] = { 0 };
	size_t nkw = 0;
	if (store_mailbox_keywords(t, v->mailbox_id, names, &nkw) != STORE_OK)
		nkw = 0;
	if (v->flags_dirty || nkw > v->nkeywords)
		view_write_flags_txn(s, t);
	for (size_t i = 0; i < x.flagged.n; i++) {
		struct store_message m;
		uint32_t seq = imap_view_seq(v, x.flagged.v[i].uid);
		if (!seq || store_message_get(t, v->mailbox_id, x.flagged.v[i].uid, &m) != STORE_OK)
			continue;
		imap_write_str(&s->out, "* ");
		imap_write_u64(&s->out, seq);
		imap_write_str(&s->out, " FETCH (");
		if (s->uid || (s->enabled & (IMAP_EN_CONDSTORE | IMAP_EN_REV2))) {
			/* RFC 3501 §6.4.8: FETCH responses during a UID command
			 * carry the UID; so do all unsolicited ones once
			 * CONDSTORE (RFC 7162 §3.2.4) or IMAP4rev2 (RFC 9051
			 * §7.5.2) is on. */
			imap_write_str(&s->out, "UID ");
			imap_write_u64(&s->out, m.uid);
			imap_write_byte(&s->out, ' ');
		}
		imap_write_str(&s->out, "FLAGS ");
		imap_write_msg_flags(&s->out, m.flags, m.keywords, names, nkw,
		                     imap_view_is_recent(v, m.uid));
		if (s->enabled & IMAP_EN_CONDSTORE) {
			imap_write_str(&s->out, " MODSEQ (");
			imap_write_u64(&s->out, m.modseq);
			imap_write_byte(&s->out, ')');
		}
		imap_write_str(&s->out, ")\r\n");
	}
	store_read_end(t);
	/* RFC 7162 §3.2: MODSEQs above an expunge we may not report yet have
	 * been shown (here or in the command's own FETCH responses); tell the
	 * client how far it really is in step, lest it skip the expunge when
	 * it resyncs after a disconnection. */
	if (x.expunged.n && !expunge_ok && (s->enabled & IMAP_EN_CONDSTORE))
		imap_untagged(s, "OK [HIGHESTMODSEQ %" PRIu64 "] Expunges pending", upto);
	if (mb.highestmodseq > v->reported_modseq)
		v->reported_modseq = mb.highestmodseq;
	if (upto > v->modseq)
		v->modseq = upto;
	free(x.expunged.v);
	free(x.flagged.v);
	free(x.added.v);
}

/* ------------------------------------------------------ sequence sets */

void imap_saved_reset(struct imap_view *v)
{
	free(v->saved);
	v->saved = NULL;
	v->nsaved = 0;
}

int imap_view_resolve(struct imap_session *s, const struct imap_seqset *set, bool by_uid,
                      uint32_t **uids, size_t *n)
{
	const struct imap_view *v = &s->view;
	struct imap_range *r;
	size_t nr, total = 0;
	uint32_t max;

	*uids = NULL;
	*n = 0;
	if (set->dollar) {
		/* RFC 5182 §2.1: "$" is the saved result, the same messages in
		 * a UID command as in one by number, minus those expunged
		 * since; empty is valid and names nothing. */
		uint32_t *out = imap_cmd_alloc(&s->cmd, (v->nsaved ? v->nsaved : 1) * sizeof *out);
		size_t k = 0;
		if (!out) {
			imap_bad(s, NULL, "Sequence set too large");
			return -1;
		}
		for (size_t i = 0; i < v->nsaved; i++)
			if (imap_view_seq(v, v->saved[i]) != 0)
				out[k++] = v->saved[i];
		*uids = out;
		*n = k;
		return 0;
	}
	max = by_uid ? (v->count ? v->uids[v->count - 1] : 0) : v->count;
	if (imap_seqset_resolve(&s->cmd, set, max, &r, &nr) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", s->cmd.error ? s->cmd.error : "Sequence set too large");
		return -1;
	}
	if (!by_uid) {
		/* RFC 3501 §9 seq-number: a number past the mailbox is an error. */
		if (nr && r[nr - 1].hi > v->count) {
			imap_bad(s, NULL, "Invalid message sequence number: %" PRIu32, r[nr - 1].hi);
			return -1;
		}
		for (size_t i = 0; i < nr; i++)
			total += (size_t)(r[i].hi - r[i].lo) + 1;
	} else {
		for (size_t i = 0; i < nr; i++) {
			uint32_t a = view_lower_bound(v, r[i].lo);
			uint32_t b = r[i].hi == UINT32_MAX ? v->count : view_lower_bound(v, r[i].hi + 1);
			total += b - a;
		}
	}
	uint32_t *out = imap_cmd_alloc(&s->cmd, (total ? total : 1) * sizeof *out);
	if (!out) {
		imap_bad(s, NULL, "Sequence set too large");
		return -1;
	}
	size_t k = 0;
	for (size_t i = 0; i < nr; i++) {
		if (!by_uid) {
			for (uint64_t q = r[i].lo; q <= r[i].hi; q++)
				out[k++] = v->uids[q - 1];
		} else {
			for (uint32_t j = view_lower_bound(v, r[i].lo);
			     j < v->count && v->uids[j] <= r[i].hi; j++)
				out[k++] = v->uids[j];
		}
	}
	*uids = out;
	*n = k;
	return 0;
}

uint32_t imap_recent_claimed(uint32_t mailbox_id)
{
	const struct recent_slot *slot = recent_find(mailbox_id, false);

	return slot ? slot->claimed : 0;
}
