/*
 * imap_condstore.c - what CONDSTORE and QRESYNC (RFC 7162) add to a
 * session beyond single commands: turning CONDSTORE on, the resync of
 * SELECT/EXAMINE ... (QRESYNC (...)), and VANISHED (EARLIER) for both that
 * and UID FETCH ... (CHANGEDSINCE n VANISHED).
 *
 * Both resyncs read the store's change feed from the client's modseq on
 * (store_changes_since), so their cost is the number of changes since
 * then, never the size of the mailbox.  Expunges are remembered as
 * tombstones for the life of the mailbox, so VANISHED (EARLIER) is always
 * exact.  The per-command parts (MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE,
 * HIGHESTMODSEQ, VANISHED instead of EXPUNGE) live in the command files
 * and in imap_view.c.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/imap/imap_int.h"

void imap_condstore_enable(struct imap_session *s)
{
	if (s->enabled & IMAP_EN_CONDSTORE)
		return;
	s->enabled |= IMAP_EN_CONDSTORE;
	/* RFC 7162 §3.1: the first CONDSTORE enabling command with a mailbox
	 * selected returns its HIGHESTMODSEQ.  The view's modseq, not the
	 * mailbox's: changes past it have not been shown yet (§3.2). */
	if (s->state == IMAP_SELECTED)
		imap_untagged(s, "OK [HIGHESTMODSEQ %" PRIu64 "] Highest", s->view.modseq);
}

/* ------------------------------------------------------------- the scan */

struct resync {
	const struct imap_view *v;
	const struct imap_range *known; /* UIDs the client asks about */
	size_t nknown;
	uint64_t upto;                  /* changes past this are the sync's */
	bool want_flags;                /* collect flag changes too */
	uint32_t *gone, *changed;       /* UIDs, in modseq order */
	size_t ngone, nchanged, capgone, capchanged;
	bool nomem;
};

static bool push_uid(struct resync *x, uint32_t **v, size_t *n, size_t *cap, uint32_t uid)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		uint32_t *p = realloc(*v, ncap * sizeof *p);
		if (!p) {
			x->nomem = true;
			return false;
		}
		*v = p;
		*cap = ncap;
	}
	(*v)[(*n)++] = uid;
	return true;
}

static int resync_one(const struct store_change *ch, void *arg)
{
	struct resync *x = arg;

	/* The feed is in modseq order: everything after the view's modseq is
	 * reported by the view's sync at the answer, as a live change. */
	if (ch->modseq > x->upto)
		return 1;
	if (x->known && !imap_ranges_contain(x->known, x->nknown, ch->uid))
		return 0;
	if (ch->kind == STORE_CHANGE_EXPUNGE)
		push_uid(x, &x->gone, &x->ngone, &x->capgone, ch->uid);
	else if (x->want_flags && ch->kind == STORE_CHANGE_FLAGS && imap_view_seq(x->v, ch->uid))
		push_uid(x, &x->changed, &x->nchanged, &x->capchanged, ch->uid);
	return x->nomem;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void write_vanished_earlier(struct imap_session *s, struct resync *x)
{
	if (!x->ngone)
		return;
	qsort(x->gone, x->ngone, sizeof *x->gone, cmp_u32);
	imap_write_str(&s->out, "* VANISHED (EARLIER) ");
	imap_write_uid_set(&s->out, x->gone, x->ngone);
	imap_write_crlf(&s->out);
}

/* ------------------------------------------------- UID FETCH (VANISHED) */

int imap_vanished_earlier(struct imap_session *s, const struct imap_seqset *set, uint64_t since)
{
	const struct imap_view *v = &s->view;
	struct resync x = { .v = v, .upto = v->modseq };
	struct imap_range *r;
	size_t nr;
	uint32_t last = v->count ? v->uids[v->count - 1] : 0;

	/* "*" is the highest UID ever given out here, not the highest still
	 * present: a client asking for "n:*" wants the expunges above the
	 * last message too. */
	if (v->uidnext > 0 && v->uidnext - 1 > last)
		last = v->uidnext - 1;
	if (imap_seqset_resolve(&s->cmd, set, last, &r, &nr) != IMAP_PARSE_OK)
		return STORE_TEMPFAIL;
	if (since >= v->modseq || nr == 0)
		return STORE_OK;
	x.known = r;
	x.nknown = nr;
	store_txn *t = store_read_begin(conn_store(s->c));
	if (!t)
		return STORE_TEMPFAIL;
	int rc = store_changes_since(t, v->mailbox_id, since, resync_one, &x);
	store_read_end(t);
	if (rc == STORE_OK && x.nomem)
		rc = STORE_TEMPFAIL;
	if (rc == STORE_OK)
		write_vanished_earlier(s, &x);
	free(x.gone);
	free(x.changed);
	return rc;
}

/* ------------------------------------------------ SELECT ... (QRESYNC) */

int imap_qresync_select(struct imap_session *s, const struct imap_select_params *p)
{
	const struct imap_view *v = &s->view;
	struct resync x = { .v = v, .upto = v->modseq, .want_flags = true };
	const char *names[64] = { 0 };
	size_t nnames = 0;
	int rc = STORE_OK;

	/* §3.2.5: another UIDVALIDITY means the client's cache is void; it
	 * sees that from the UIDVALIDITY we sent and resyncs fully. */
	if (p->uidvalidity != v->uidvalidity || p->modseq >= v->modseq)
		return STORE_OK;
	/* §3.2.5.1: without known UIDs, 1:(UIDNEXT-1), i.e. every UID. */
	if (p->known_uids.n) {
		struct imap_range *r;
		size_t nr;
		if (imap_seqset_resolve(&s->cmd, &p->known_uids, UINT32_MAX, &r, &nr) !=
		    IMAP_PARSE_OK)
			return STORE_TEMPFAIL;
		x.known = r;
		x.nknown = nr;
	}
	/*
	 * The sequence match data (§3.2.5.2) is accepted and ignored: it lets
	 * a server that forgets expunges narrow VANISHED (EARLIER), and this
	 * store keeps every tombstone while the mailbox exists, so the set
	 * below is already exactly the UIDs expunged since the client's modseq.
	 */
	store_txn *t = store_read_begin(conn_store(s->c));
	if (!t)
		return STORE_TEMPFAIL;
	rc = store_changes_since(t, v->mailbox_id, p->modseq, resync_one, &x);
	if (rc == STORE_OK && x.nomem)
		rc = STORE_TEMPFAIL;
	if (rc == STORE_OK && store_mailbox_keywords(t, v->mailbox_id, names, &nnames) != STORE_OK)
		nnames = 0;
	if (rc == STORE_OK) {
		/* §3.2.6: every VANISHED (EARLIER) before any FETCH. */
		write_vanished_earlier(s, &x);
		qsort(x.changed, x.nchanged, sizeof *x.changed, cmp_u32);
		for (size_t i = 0; i < x.nchanged; i++) {
			struct store_message m;
			uint32_t seq = imap_view_seq(v, x.changed[i]);
			if (!seq || store_message_get(t, v->mailbox_id, x.changed[i], &m) != STORE_OK)
				continue;
			/* §3.2.5.1: these FETCH responses carry the UID. */
			imap_write_str(&s->out, "* ");
			imap_write_u64(&s->out, seq);
			imap_write_str(&s->out, " FETCH (UID ");
			imap_write_u64(&s->out, m.uid);
			imap_write_str(&s->out, " FLAGS ");
			imap_write_msg_flags(&s->out, m.flags, m.keywords, names, nnames,
			                     imap_view_is_recent(v, m.uid));
			imap_write_str(&s->out, " MODSEQ (");
			imap_write_u64(&s->out, m.modseq);
			imap_write_str(&s->out, "))\r\n");
		}
	}
	store_read_end(t);
	free(x.gone);
	free(x.changed);
	return rc;
}
