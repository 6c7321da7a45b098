/*
 * uidcache.c - the message lists of the mailboxes opened lately.
 *
 * Opening a mailbox (IMAP SELECT/EXAMINE, a POP3 login) needs the UIDs of
 * its messages; reading them is one pass over the message records, about
 * 30-40 ns a message, which is most of a SELECT or a POP3 login on a large
 * mailbox.  This cache keeps, for the UID_CACHE_SLOTS mailboxes opened
 * last, their UIDs, sizes and first unseen UID as of a modseq.  The next
 * open brings the entry up to date from the store's change feed (a cost
 * proportional to the changes, like QRESYNC) and shares its list; only a
 * mailbox not in the cache, or changed in more than about a quarter of its
 * messages since, is read whole.  Lists are immutable once shared: a
 * catch-up that changes the membership builds a new list, and the old one
 * lives on for as long as a session holds it.
 *
 * Everything here runs on the loop thread, like every session.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/uidcache.h"

#define UID_CACHE_SLOTS 32

struct uid_cache_ent {
	uint32_t mailbox_id;    /* 0: empty */
	uint32_t uidvalidity;
	uint64_t modseq;        /* the list and first_unseen are as of this */
	uint32_t first_unseen;  /* UID of the first message without \Seen; 0: none */
	uint64_t used;          /* for replacing the least recently used */
	struct uid_list *list;
};

static struct uid_cache_ent uid_cache[UID_CACHE_SLOTS];
static uint64_t uid_cache_clock;

uint32_t uid_lower_bound(const uint32_t *uids, uint32_t n, uint32_t uid)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* A list with room for CAP messages, in one allocation. */
static struct uid_list *uid_list_alloc(size_t cap)
{
	struct uid_list *l = malloc(sizeof *l + 2 * cap * sizeof(uint32_t));

	if (!l)
		return NULL;
	l->refs = 1;
	l->count = 0;
	l->bytes = 0;
	l->uids = (uint32_t *)(l + 1);
	l->sizes = l->uids + cap;
	return l;
}

void uid_list_put(struct uid_list *l)
{
	if (l && --l->refs == 0)
		free(l);
}

static void uid_cache_drop(struct uid_cache_ent *e)
{
	uid_list_put(e->list);
	memset(e, 0, sizeof *e);
}

static struct uid_cache_ent *uid_cache_find(uint32_t mailbox_id)
{
	for (size_t i = 0; i < UID_CACHE_SLOTS; i++)
		if (uid_cache[i].mailbox_id == mailbox_id)
			return &uid_cache[i];
	return NULL;
}

/* The entry for MAILBOX_ID, emptied: its own slot, a free one or the least
 * recently used. */
static struct uid_cache_ent *uid_cache_slot(uint32_t mailbox_id)
{
	struct uid_cache_ent *e = uid_cache_find(mailbox_id);

	if (!e) {
		e = &uid_cache[0];
		for (size_t i = 1; i < UID_CACHE_SLOTS && e->mailbox_id; i++)
			if (!uid_cache[i].mailbox_id || uid_cache[i].used < e->used)
				e = &uid_cache[i];
	}
	uid_cache_drop(e);
	return e;
}

/* ------------------------------------------------------ reading whole */

struct uid_fill {
	struct uid_list *l;
	size_t cap;
	uint32_t skip;          /* leave out messages with any of these flags */
	uint32_t first_unseen;
	bool nomem;
};

static int fill_one(const struct store_message *m, void *arg)
{
	struct uid_fill *x = arg;
	struct uid_list *l = x->l;

	if (m->flags & x->skip)
		return 0;
	if (l->count == x->cap) {
		/* More records than the mailbox's counters said: grow. */
		size_t cap = x->cap ? x->cap * 2 : 64;
		struct uid_list *n = cap <= UINT32_MAX ? uid_list_alloc(cap) : NULL;
		if (!n) {
			x->nomem = true;
			return 1;
		}
		memcpy(n->uids, l->uids, l->count * sizeof *l->uids);
		memcpy(n->sizes, l->sizes, l->count * sizeof *l->sizes);
		n->count = l->count;
		n->bytes = l->bytes;
		free(l);
		x->l = l = n;
		x->cap = cap;
	}
	l->uids[l->count] = m->uid;
	l->sizes[l->count] = m->size;
	l->bytes += m->size;
	l->count++;
	if (!(m->flags & STORE_F_SEEN) && !x->first_unseen)
		x->first_unseen = m->uid;
	return 0;
}

struct uid_list *uid_list_read(store_txn *t, uint32_t mailbox_id, uint32_t skip,
                               uint32_t expect, uint32_t *first_unseen, int *rc)
{
	struct uid_fill x = { .cap = expect, .skip = skip };

	x.l = uid_list_alloc(x.cap);
	if (!x.l) {
		*rc = STORE_TEMPFAIL;
		return NULL;
	}
	*rc = store_message_foreach(t, mailbox_id, 1, fill_one, &x);
	if (*rc == STORE_OK && x.nomem)
		*rc = STORE_TEMPFAIL;
	if (*rc != STORE_OK) {
		free(x.l);
		return NULL;
	}
	if (first_unseen)
		*first_unseen = x.first_unseen;
	return x.l;
}

/* Read MB whole (in T) and make the result its cache entry. */
static struct uid_list *uid_cache_fill(store_txn *t, const struct store_mailbox *mb,
                                       uint32_t *first_unseen, int *rc)
{
	uint32_t fu = 0;
	struct uid_list *l = uid_list_read(t, mb->id, 0, mb->messages, &fu, rc);

	if (!l)
		return NULL;
	if (first_unseen)
		*first_unseen = fu;
	struct uid_cache_ent *e = uid_cache_slot(mb->id);
	e->mailbox_id = mb->id;
	e->uidvalidity = mb->uidvalidity;
	e->modseq = mb->highestmodseq;
	e->first_unseen = fu;
	e->used = ++uid_cache_clock;
	e->list = l;
	l->refs++;
	return l;
}

/* ------------------------------------------------------------ catch-up */

struct catchup {
	const struct uid_list *old;
	uint32_t *gone, *added, *touched;  /* UIDs: expunged, new, flags changed */
	size_t ngone, nadded, ntouched, cap;
	bool overflow;
};

static bool list_has(const struct uid_list *l, uint32_t uid)
{
	uint32_t i = uid_lower_bound(l->uids, l->count, uid);

	return i < l->count && l->uids[i] == uid;
}

static int catchup_one(const struct store_change *ch, void *arg)
{
	struct catchup *x = arg;
	const struct uid_list *l = x->old;
	uint32_t last = l->count ? l->uids[l->count - 1] : 0;

	if (x->ngone + x->nadded + x->ntouched >= x->cap) {
		x->overflow = true;
		return 1;
	}
	if (ch->kind == STORE_CHANGE_EXPUNGE) {
		if (list_has(l, ch->uid))
			x->gone[x->ngone++] = ch->uid;
	} else if (ch->kind == STORE_CHANGE_FLAGS) {
		if (ch->uid > last)
			x->added[x->nadded++] = ch->uid;
		else
			x->touched[x->ntouched++] = ch->uid;
	}
	return 0;
}

struct unseen_scan {
	uint32_t uid;
	unsigned budget;
};

static int unseen_one(const struct store_message *m, void *arg)
{
	struct unseen_scan *u = arg;

	if (!(m->flags & STORE_F_SEEN)) {
		u->uid = m->uid;
		return 1;
	}
	return --u->budget == 0 ? 1 : 0;
}

/* Is UID present and without \Seen? */
static bool uid_unseen(store_txn *t, uint32_t mailbox_id, uint32_t uid)
{
	struct store_message m;

	return store_message_get(t, mailbox_id, uid, &m) == STORE_OK && !(m.flags & STORE_F_SEEN);
}

/*
 * Bring E up to CUR (in T) from the change feed.  False when it cannot be
 * done cheaply (more changes than a fraction of the mailbox, or out of
 * memory): the caller reads the mailbox whole instead.
 */
static bool uid_cache_catchup(struct uid_cache_ent *e, store_txn *t,
                              const struct store_mailbox *cur)
{
	if (e->uidvalidity != cur->uidvalidity || e->modseq > cur->highestmodseq)
		return false;
	if (e->modseq == cur->highestmodseq)
		return true;
	struct uid_list *old = e->list;
	size_t cap = old->count / 4 + 256;
	struct catchup x = { .old = old, .cap = cap };
	/* gone, added, touched, then the sizes of the added messages */
	uint32_t *buf = malloc(4 * cap * sizeof *buf);
	uint32_t *added_sizes;
	bool ok = false;

	if (!buf)
		return false;
	x.gone = buf;
	x.added = buf + cap;
	x.touched = buf + 2 * cap;
	added_sizes = buf + 3 * cap;
	if (store_changes_since(t, e->mailbox_id, e->modseq, catchup_one, &x) != STORE_OK ||
	    x.overflow)
		goto out;

	/* The new first unseen: the old one if it is still there and unseen,
	 * else the next unseen after it (a bounded scan); then any changed or
	 * new message before that which is unseen now. */
	uint32_t fu = e->first_unseen;
	if (fu && !uid_unseen(t, e->mailbox_id, fu)) {
		struct unseen_scan u = { .budget = 4096 };
		if (store_message_foreach(t, e->mailbox_id, fu, unseen_one, &u) != STORE_OK)
			goto out;
		if (!u.uid && u.budget == 0)
			goto out; /* a long run of seen messages: read it whole */
		fu = u.uid;
	}
	for (size_t i = 0; i < x.ntouched; i++)
		if ((!fu || x.touched[i] < fu) && uid_unseen(t, e->mailbox_id, x.touched[i]))
			fu = x.touched[i];
	/* New messages: their records give the sizes as well. */
	qsort(x.added, x.nadded, sizeof *x.added, uid_cmp);
	size_t nadded = 0;
	for (size_t i = 0; i < x.nadded; i++) {
		struct store_message m;
		int rc = store_message_get(t, e->mailbox_id, x.added[i], &m);
		if (rc == STORE_NOTFOUND)
			continue;
		if (rc != STORE_OK)
			goto out;
		if ((!fu || m.uid < fu) && !(m.flags & STORE_F_SEEN))
			fu = m.uid;
		x.added[nadded] = m.uid;
		added_sizes[nadded++] = m.size;
	}

	if (x.ngone || nadded) {
		qsort(x.gone, x.ngone, sizeof *x.gone, uid_cmp);
		struct uid_list *l = uid_list_alloc(old->count - x.ngone + nadded);
		if (!l)
			goto out;
		size_t k = 0, g = 0;
		for (uint32_t i = 0; i < old->count; i++) {
			if (g < x.ngone && x.gone[g] == old->uids[i]) {
				g++;
				continue;
			}
			l->uids[k] = old->uids[i];
			l->bytes += old->sizes[i];
			l->sizes[k++] = old->sizes[i];
		}
		for (size_t i = 0; i < nadded; i++) {
			l->uids[k] = x.added[i];
			l->bytes += added_sizes[i];
			l->sizes[k++] = added_sizes[i];
		}
		l->count = (uint32_t)k;
		uid_list_put(old);
		e->list = l;
	}
	e->first_unseen = fu;
	e->modseq = cur->highestmodseq;
	ok = true;
out:
	free(buf);
	return ok;
}

struct uid_list *uid_cache_open(store_txn *t, const struct store_mailbox *mb,
                                uint32_t *first_unseen, int *rc)
{
	struct uid_cache_ent *e = uid_cache_find(mb->id);

	if (e && uid_cache_catchup(e, t, mb)) {
		e->used = ++uid_cache_clock;
		e->list->refs++;
		if (first_unseen)
			*first_unseen = e->first_unseen;
		*rc = STORE_OK;
		return e->list;
	}
	if (e)
		uid_cache_drop(e);
	return uid_cache_fill(t, mb, first_unseen, rc);
}
