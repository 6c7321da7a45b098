/*
 * imap_cmd_mailbox.c - the IMAP commands that act on mailboxes as a whole:
 * SELECT and EXAMINE, CREATE (with CREATE-SPECIAL-USE, RFC 6154 §3),
 * DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE, LIST (LIST-EXTENDED, RFC 5258;
 * LIST-STATUS, RFC 5819) and LSUB, STATUS (RFC 3501 §6.3; SIZE, RFC 8438;
 * APPENDLIMIT, RFC 7889), CLOSE, UNSELECT (RFC 3691), EXPUNGE and UID
 * EXPUNGE (RFC 4315).  Where IMAP4rev2 (RFC 9051) answers differently,
 * s->enabled & IMAP_EN_REV2 decides: SELECT's LIST line, no RECENT or
 * UNSEEN, HASCHILDREN, OLDNAME after RENAME, STATUS RECENT 0.
 *
 * Names arrive decoded to UTF-8 by the parser and leave through
 * imap_write_mailbox (modified UTF-7, or UTF-8 once the session enabled
 * IMAP4rev2).  The hierarchy delimiter is "/".
 * Reads are short transactions; writes are one store request each, whose
 * untagged consequences (EXPUNGE, EXISTS) come from the view's sync at the
 * tagged answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/imap/imap_int.h"

#define DELIM '/'

/* NO with the response code a store status deserves (RFC 5530). */
static void mbox_store_no(struct imap_session *s, int rc, const char *what)
{
	switch (rc) {
	case STORE_NOTFOUND:
		imap_no(s, "NONEXISTENT", "%s: mailbox does not exist", what);
		break;
	case STORE_EXISTS:
		imap_no(s, "ALREADYEXISTS", "%s: mailbox already exists", what);
		break;
	case STORE_INVALID:
		imap_no(s, "CANNOT", "%s: not allowed", what);
		break;
	case STORE_OVERQUOTA:
		imap_no(s, "OVERQUOTA", "%s: quota exceeded", what);
		break;
	default:
		imap_no(s, "UNAVAILABLE", "%s: %s, try again later", what, store_strerror(rc));
		break;
	}
}

/* Look NAME up; on success *OUT is a copy whose name is not valid. */
static int mbox_get(struct imap_session *s, const char *name, struct store_mailbox *out)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	int rc;

	if (!t)
		return STORE_TEMPFAIL;
	rc = store_mailbox_get(t, s->user_id, name, out);
	store_read_end(t);
	out->name = NULL;
	return rc;
}

/* A name without its trailing delimiters, NUL terminated, from the arena
 * (RFC 3501 §6.3.3: "foo/" creates "foo"). */
static char *mbox_trim(struct imap_cmd *cmd, const struct imap_str *in)
{
	size_t len = in->len;
	char *p;

	while (len > 0 && in->s[len - 1] == DELIM)
		len--;
	p = imap_cmd_alloc(cmd, len + 1);
	if (!p)
		return NULL;
	memcpy(p, in->s, len);
	p[len] = '\0';
	if (strcasecmp(p, "INBOX") == 0)
		memcpy(p, "INBOX", 5);
	return p;
}

/* The single mailbox argument of CREATE, DELETE, (UN)SUBSCRIBE, trimmed;
 * NULL after answering BAD (syntax) or NO (out of memory). */
static char *mbox_arg(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str arg;
	char *name;

	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &arg) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return NULL;
	}
	name = mbox_trim(cmd, &arg);
	if (!name)
		imap_no(s, "UNAVAILABLE", "Out of memory");
	return name;
}

/* Names we create: no empty level, no wildcard, no control character,
 * C1 controls (U+0080..U+009F, 0xC2 0x80..0x9F in UTF-8) included, as
 * Net-Unicode asks (RFC 9051 §5.1, RFC 5198 §2). */
static bool mbox_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || name[0] == DELIM || strstr(name, "//"))
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f || c == '%' || c == '*')
			return false;
		if (c == 0xc2 && i + 1 < len && (unsigned char)name[i + 1] < 0xa0)
			return false;
	}
	return true;
}

/* ------------------------------------------------------ SELECT/EXAMINE */

/*
 * RFC 8474 §4: a mailbox's MAILBOXID is "F", its numeric id and its
 * UIDVALIDITY, each as 8 hex digits.  The id survives RENAME, as §4.1
 * requires; the UIDVALIDITY makes sure a mailbox deleted and created again
 * under the same name never answers an id it had before.  OUT gets 18 octets
 * and a NUL.
 */
#define MAILBOXID_SIZE 18
static void mailbox_id_format(char out[MAILBOXID_SIZE + 1], uint32_t id, uint32_t uidvalidity)
{
	snprintf(out, MAILBOXID_SIZE + 1, "F%08" PRIx32 "%08" PRIx32, id, uidvalidity);
}

static void select_write_list(struct imap_session *s, const char *name,
                              const struct store_mailbox *mb);

void imap_cmd_select(struct imap_session *s, struct imap_cmd *cmd)
{
	char mbid[MAILBOXID_SIZE + 1];
	bool readonly = strcmp(cmd->name, "EXAMINE") == 0;
	struct imap_select_params params;
	struct store_mailbox mb;
	struct imap_str name;
	int rc;

	/* RFC 3501 §6.3.1: a SELECT deselects the current mailbox first,
	 * even when it then fails; RFC 7162 §3.2.11 marks the boundary. */
	if (s->state == IMAP_SELECTED) {
		imap_view_close(s);
		imap_untagged(s, "OK [CLOSED] Previous mailbox closed");
	}
	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &name) ||
	    imap_parse_select_params(cmd, &params)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	/* RFC 7162 §3.2.5: QRESYNC only after ENABLE QRESYNC. */
	if (params.qresync && !(s->enabled & IMAP_EN_QRESYNC)) {
		imap_bad(s, NULL, "QRESYNC must be enabled first (ENABLE QRESYNC)");
		return;
	}
	if (params.condstore) /* a CONDSTORE enabling command (§3.1.8) */
		imap_condstore_enable(s);
	rc = mbox_get(s, name.s, &mb);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, readonly ? "EXAMINE" : "SELECT");
		return;
	}
	rc = imap_view_open(s, &mb, readonly);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, readonly ? "EXAMINE" : "SELECT");
		return;
	}
	const struct imap_view *v = &s->view;
	imap_view_write_flags(s);
	imap_untagged(s, "%" PRIu32 " EXISTS", v->count);
	if (s->enabled & IMAP_EN_REV2) {
		/* RFC 9051 §6.3.2: a LIST response is required; RECENT and
		 * UNSEEN are gone (Appendix E items 10 to 12). */
		select_write_list(s, name.s, &mb);
	} else {
		imap_untagged(s, "%" PRIu32 " RECENT", imap_view_recent_count(v));
		if (v->first_unseen)
			imap_untagged(s, "OK [UNSEEN %" PRIu32 "] First unseen message",
			              v->first_unseen);
	}
	imap_untagged(s, "OK [UIDVALIDITY %" PRIu32 "] UIDs valid", v->uidvalidity);
	imap_untagged(s, "OK [UIDNEXT %" PRIu32 "] Predicted next UID", v->uidnext);
	/* RFC 7162 §3.1.2.1: sent always (not only once CONDSTORE is on), so a
	 * client can decide whether to enable it; never NOMODSEQ, since every
	 * mailbox keeps modseqs. */
	imap_untagged(s, "OK [HIGHESTMODSEQ %" PRIu64 "] Highest", v->modseq);
	mailbox_id_format(mbid, v->mailbox_id, v->uidvalidity);
	imap_untagged(s, "OK [MAILBOXID (%s)] Ok", mbid);
	if (params.qresync && imap_qresync_select(s, &params) != STORE_OK) {
		/* A NO leaves no mailbox selected (RFC 3501 §6.3.1). */
		imap_view_close(s);
		imap_no(s, "UNAVAILABLE", "The QRESYNC data could not be read, try again");
		return;
	}
	imap_ok(s, readonly ? "READ-ONLY" : "READ-WRITE", "%s completed",
	        readonly ? "EXAMINE" : "SELECT");
}

/* ------------------------------------------------------------- CREATE */

static void mbox_write_done(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);

	if (rc == STORE_OK)
		imap_ok(s, NULL, "%s completed", s->cmd.name);
	else
		mbox_store_no(s, rc, s->cmd.name);
}

/* RFC 8474 §4.1: CREATE's OK carries the new mailbox's MAILBOXID.  The
 * create is R's last operation; the parents come before it. */
static void mbox_create_done(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);
	size_t n = store_req_count(r);
	char code[sizeof "MAILBOXID ()" + MAILBOXID_SIZE];
	char mbid[MAILBOXID_SIZE + 1];

	if (rc != STORE_OK || n == 0) {
		mbox_store_no(s, rc, "CREATE");
		return;
	}
	const struct store_result *res = store_req_result(r, n - 1);
	mailbox_id_format(mbid, res->mailbox_id, res->uidvalidity);
	snprintf(code, sizeof code, "MAILBOXID (%s)", mbid);
	imap_ok(s, code, "CREATE completed");
}

/* Add to R the creation of every missing ancestor of NAME ("a" and "a/b"
 * for "a/b/c"), as RFC 3501 §6.3.3 suggests.  Each is subscribed, as a
 * mailbox CREATE makes is (the policy this server has always had). */
static int mbox_create_parents(struct imap_session *s, store_req *r, const char *name)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	struct store_mailbox mb;
	int rc = STORE_OK;

	if (!t)
		return STORE_TEMPFAIL;
	for (const char *p = strchr(name, DELIM); p && rc == STORE_OK; p = strchr(p + 1, DELIM)) {
		char *parent = strndup(name, (size_t)(p - name));
		if (!parent) {
			rc = STORE_TEMPFAIL;
			break;
		}
		int g = store_mailbox_get(t, s->user_id, parent, &mb);
		if (g == STORE_NOTFOUND) {
			store_req_mailbox_create(r, s->user, parent, 0);
			store_req_subscribe(r, s->user, parent, true);
		} else if (g != STORE_OK)
			rc = g;
		free(parent);
	}
	store_read_end(t);
	return rc;
}

/* Consume C if it comes next.  The parser offers no helper for a bare
 * parenthesis; imap_parse_peek has checked the bound. */
static bool parse_accept(struct imap_cmd *cmd, char c)
{
	if (!imap_parse_peek(cmd, c))
		return false;
	cmd->pos++;
	return true;
}

/* The special uses CREATE can give (RFC 6154 §2); \All and \Flagged
 * would be virtual mailboxes, which the store does not have. */
static const struct {
	const char *attr;
	uint32_t bit;
} create_uses[] = {
	{ "\\Sent", STORE_USE_SENT },   { "\\Drafts", STORE_USE_DRAFTS },
	{ "\\Trash", STORE_USE_TRASH }, { "\\Junk", STORE_USE_JUNK },
	{ "\\Archive", STORE_USE_ARCHIVE },
};

/*
 * CREATE's optional parameters after the mailbox (RFC 4466 §2.2): SP "("
 * param *(SP param) ")", of which USE (RFC 6154 §3) is the only one known;
 * its special uses go into *USE.  0; -1 after a BAD for bad syntax or an
 * unknown parameter; -2 after NO [USEATTR] for a special use the store
 * cannot give.
 */
static int create_params(struct imap_session *s, struct imap_cmd *cmd, uint32_t *use)
{
	*use = 0;
	if (imap_parse_at_end(cmd))
		return 0;
	if (imap_parse_sp(cmd) || !parse_accept(cmd, '(')) {
		imap_bad(s, NULL, "Expected CREATE parameters in parentheses");
		return -1;
	}
	for (;;) {
		struct imap_str param;
		struct imap_flags fl;
		if (imap_parse_atom(cmd, &param)) {
			imap_bad(s, NULL, "%s", cmd->error);
			return -1;
		}
		if (strcasecmp(param.s, "USE") != 0) {
			imap_bad(s, NULL, "Unknown CREATE parameter");
			return -1;
		}
		if (imap_parse_sp(cmd) || imap_parse_flag_list(cmd, &fl)) {
			imap_bad(s, NULL, "%s", cmd->error);
			return -1;
		}
		for (size_t i = 0; i < fl.n; i++) {
			size_t k = 0;
			while (k < sizeof create_uses / sizeof create_uses[0] &&
			       strcasecmp(fl.v[i].s, create_uses[k].attr) != 0)
				k++;
			if (k == sizeof create_uses / sizeof create_uses[0]) {
				/* RFC 6154 §3: no mailbox, NO with USEATTR. */
				imap_no(s, "USEATTR", "%s is not a special use this server can give",
				        fl.v[i].s);
				return -2;
			}
			*use |= create_uses[k].bit;
		}
		if (parse_accept(cmd, ')'))
			break;
		if (imap_parse_sp(cmd)) {
			imap_bad(s, NULL, "%s", cmd->error);
			return -1;
		}
	}
	if (imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return -1;
	}
	return 0;
}

/* RFC 6154 §3 lets a server refuse a second mailbox with the same special
 * use; onebox does, since POP3's trash mode and clients expect one.  0, or
 * -1 after answering NO. */
static int create_use_free(struct imap_session *s, uint32_t use)
{
	store_txn *t;

	if (!use)
		return 0;
	t = store_read_begin(conn_store(s->c));
	if (!t) {
		imap_no(s, "UNAVAILABLE", "Cannot read the store, try later");
		return -1;
	}
	for (size_t k = 0; k < sizeof create_uses / sizeof create_uses[0]; k++) {
		struct store_mailbox mb;
		if (!(use & create_uses[k].bit) ||
		    store_mailbox_by_use(t, s->user_id, create_uses[k].bit, &mb) != STORE_OK)
			continue;
		store_read_end(t);
		imap_no(s, "USEATTR", "Another mailbox is already the %s one", create_uses[k].attr);
		return -1;
	}
	store_read_end(t);
	return 0;
}

void imap_cmd_create(struct imap_session *s, struct imap_cmd *cmd)
{
	struct store_mailbox mb;
	struct imap_str arg;
	uint32_t use;
	char *name;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &arg)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (create_params(s, cmd, &use) != 0)
		return;
	name = mbox_trim(cmd, &arg);
	if (!name) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	if (!mbox_name_ok(name)) {
		imap_no(s, "CANNOT", "Invalid mailbox name");
		return;
	}
	rc = mbox_get(s, name, &mb);
	if (rc == STORE_OK) {
		imap_no(s, "ALREADYEXISTS", "Mailbox already exists");
		return;
	}
	if (rc != STORE_NOTFOUND) {
		mbox_store_no(s, rc, "CREATE");
		return;
	}
	store_req *r = store_req_new();
	if (!r) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	rc = mbox_create_parents(s, r, name);
	if (rc != STORE_OK) {
		store_req_free(r);
		mbox_store_no(s, rc, "CREATE");
		return;
	}
	if (create_use_free(s, use) != 0) {
		store_req_free(r);
		return;
	}
	/* Subscribed; before the create, whose result must come last. */
	store_req_subscribe(r, s->user, name, true);
	store_req_mailbox_create(r, s->user, name, use);
	imap_submit(s, r, mbox_create_done);
}

/* ---------------------------------------------------- the mailbox list */

struct mbox_entry {
	char *name;
	uint32_t id;       /* 0 when not a mailbox */
	uint32_t special_use;
	bool subscribed;
	bool exists;       /* a mailbox; else (LIST and LSUB only) a subscribed
	                    * name whose mailbox is gone, or a missing ancestor
	                    * of a listed name */
	/* Worked out by LIST (list_evaluate): */
	bool meets;        /* meets the selection criteria */
	bool matched;      /* matches one of the patterns */
	bool desc_meets;   /* a descendant meets the selection criteria */
	bool desc_unmatched; /* ... and matches none of the patterns */
};

struct mbox_list {
	struct mbox_entry *v;
	size_t n, cap;
	size_t nsorted;    /* v[0..nsorted) is sorted by name: lookups look there */
	bool nomem;
};

/* Append an entry for the LEN octets of NAME; NULL when out of memory. */
static struct mbox_entry *mbox_list_push(struct mbox_list *l, const char *name, size_t len)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct mbox_entry *n = realloc(l->v, cap * sizeof *n);
		if (!n) {
			l->nomem = true;
			return NULL;
		}
		l->v = n;
		l->cap = cap;
	}
	l->v[l->n] = (struct mbox_entry){ .name = strndup(name, len) };
	if (!l->v[l->n].name) {
		l->nomem = true;
		return NULL;
	}
	return &l->v[l->n++];
}

static int mbox_list_one(const struct store_mailbox *mb, void *arg)
{
	struct mbox_entry *e = mbox_list_push(arg, mb->name, strlen(mb->name));

	if (!e)
		return 1;
	e->id = mb->id;
	e->special_use = mb->special_use;
	e->exists = true;
	return 0;
}

/* Entry of L named by the LEN octets of NAME, among the sorted ones; or
 * NULL. */
static struct mbox_entry *mbox_find(const struct mbox_list *l, const char *name, size_t len)
{
	size_t lo = 0, hi = l->nsorted;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *e = l->v[mid].name;
		int c = strncmp(e, name, len);
		if (c == 0 && e[len] == '\0')
			return &l->v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid; /* c > 0, or E extends NAME and so sorts after it */
	}
	return NULL;
}

/* A subscribed name: mark its mailbox, or add it as a name without one. */
static int mbox_list_sub(const char *name, void *arg)
{
	struct mbox_list *l = arg;
	size_t len = strlen(name);
	struct mbox_entry *e = mbox_find(l, name, len);

	if (!e)
		e = mbox_list_push(l, name, len);
	if (!e)
		return 1;
	e->subscribed = true;
	return 0;
}

/*
 * Give every missing ancestor of a name in L (sorted) an entry of its own,
 * neither a mailbox nor subscribed, so that LSUB can list it \Noselect
 * (RFC 3501 §6.3.9) and RECURSIVEMATCH with CHILDINFO (RFC 5258 §3.5).
 * Such ancestors come from subscriptions whose mailbox is gone.  An
 * ancestor wanted by several names is added once for each: the caller
 * sorts and drops the repeats.  Bounded by the delimiters in the names.
 */
static void mbox_list_ancestors(struct mbox_list *l)
{
	size_t n = l->n;

	for (size_t i = 0; i < n && !l->nomem; i++) {
		const char *name = l->v[i].name;  /* its own allocation: stays put */
		for (const char *p = strchr(name, DELIM); p; p = strchr(p + 1, DELIM)) {
			size_t len = (size_t)(p - name);
			if (len == 0 || mbox_find(l, name, len))
				continue;
			if (!mbox_list_push(l, name, len))
				return;
		}
	}
}

static void mbox_list_free(struct mbox_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	memset(l, 0, sizeof *l);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct mbox_entry *)a)->name, ((const struct mbox_entry *)b)->name);
}

static void mbox_list_sort(struct mbox_list *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof *l->v, cmp_entry);
	l->nsorted = l->n;
}

/*
 * Every mailbox of the user, sorted by name (bytewise).  With SUBS, also
 * the subscriptions: the mailboxes' flags, each subscribed name that is
 * not a mailbox (RFC 3501 §6.3.6: it stays subscribed after a DELETE or
 * RENAME) and the missing ancestors of those names.
 */
static int mbox_list_load(struct imap_session *s, struct mbox_list *l, bool subs)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	int rc;

	memset(l, 0, sizeof *l);
	if (!t)
		return STORE_TEMPFAIL;
	rc = store_mailbox_foreach(t, s->user_id, mbox_list_one, l);
	if (rc == STORE_OK && !l->nomem) {
		mbox_list_sort(l);
		if (subs)
			rc = store_subscription_foreach(t, s->user_id, mbox_list_sub, l);
	}
	store_read_end(t);
	if (rc == STORE_OK && subs && !l->nomem) {
		mbox_list_sort(l);
		mbox_list_ancestors(l);
		mbox_list_sort(l);
		/* Drop repeated ancestors; only those can be repeated. */
		size_t j = 0;
		for (size_t i = 0; i < l->n; i++) {
			if (j > 0 && strcmp(l->v[j - 1].name, l->v[i].name) == 0)
				free(l->v[i].name);
			else
				l->v[j++] = l->v[i];
		}
		l->n = l->nsorted = j;
	}
	if (rc == STORE_OK && l->nomem)
		rc = STORE_TEMPFAIL;
	if (rc != STORE_OK) {
		mbox_list_free(l);
		return rc;
	}
	return STORE_OK;
}

/* True if some mailbox of L is below NAME in the hierarchy (RFC 3348: a
 * subscribed name whose mailbox is gone is no child).  Children of "a"
 * sort among names starting "a/", contiguous in bytewise order. */
static bool mbox_has_children(const struct mbox_list *l, const char *name)
{
	size_t len = strlen(name), lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(l->v[mid].name, name, len);
		if (c < 0 || (c == 0 && (unsigned char)l->v[mid].name[len] < (unsigned char)DELIM))
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < l->n && strncmp(l->v[lo].name, name, len) == 0 && l->v[lo].name[len] == DELIM;
	     lo++)
		if (l->v[lo].exists)
			return true;
	return false;
}

/* ------------------------------------------------------------- DELETE */

void imap_cmd_delete(struct imap_session *s, struct imap_cmd *cmd)
{
	struct mbox_list l;
	char *name;
	int rc;

	name = mbox_arg(s, cmd);
	if (!name)
		return;
	if (strcmp(name, "INBOX") == 0) {
		imap_no(s, "CANNOT", "INBOX cannot be deleted");
		return;
	}
	rc = mbox_list_load(s, &l, false);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "DELETE");
		return;
	}
	struct mbox_entry key = { .name = name }, *e;
	e = bsearch(&key, l.v, l.n, sizeof *l.v, cmp_entry);
	if (!e) {
		mbox_list_free(&l);
		imap_no(s, "NONEXISTENT", "Mailbox does not exist");
		return;
	}
	/* RFC 3501 §6.3.4 would keep a parent as \Noselect; onebox has no
	 * such mailboxes, so a parent goes only after its children.  RFC 9051
	 * §6.3.5 has a response code for it; IMAP4rev1 sessions keep INUSE. */
	if (mbox_has_children(&l, name)) {
		mbox_list_free(&l);
		imap_no(s, (s->enabled & IMAP_EN_REV2) ? "HASCHILDREN" : "INUSE",
		        "Mailbox has children; delete them first");
		return;
	}
	uint32_t id = e->id;
	mbox_list_free(&l);
	store_req *r = store_req_new();
	if (!r) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	/* Deleting the selected mailbox is allowed: its messages are reported
	 * expunged by the sync at the answer, and the session stays selected
	 * on an empty, vanished mailbox until it selects another. */
	store_req_mailbox_delete(r, id);
	imap_submit(s, r, mbox_write_done);
}

/* ------------------------------------------------------------- RENAME */

/* RENAME INBOX, step two: the new mailbox exists; move every message. */
static void rename_inbox_moved(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);

	if (rc == STORE_OK)
		imap_ok(s, NULL, "RENAME completed");
	else
		mbox_store_no(s, rc, "RENAME");
}

struct uid_list {
	uint32_t *v;
	size_t n, cap;
	bool nomem;
};

static bool uid_push(struct uid_list *l, uint32_t uid)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		uint32_t *n = realloc(l->v, cap * sizeof *n);
		if (!n) {
			l->nomem = true;
			return false;
		}
		l->v = n;
		l->cap = cap;
	}
	l->v[l->n++] = uid;
	return true;
}

static int uid_collect(const struct store_message *m, void *arg)
{
	return uid_push(arg, m->uid) ? 0 : 1;
}

static void rename_inbox_created(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);
	const struct store_result *res;
	struct store_mailbox inbox;
	struct uid_list uids = { 0 };
	uint32_t dest;
	store_txn *t;

	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "RENAME");
		return;
	}
	res = store_req_result(r, store_req_count(r) - 1);
	dest = res ? res->mailbox_id : 0;
	t = store_read_begin(conn_store(s->c));
	if (!t || !dest) {
		if (t)
			store_read_end(t);
		imap_no(s, "UNAVAILABLE", "RENAME: mailbox created but messages not moved");
		return;
	}
	rc = store_mailbox_get(t, s->user_id, "INBOX", &inbox);
	if (rc == STORE_OK)
		rc = store_message_foreach(t, inbox.id, 1, uid_collect, &uids);
	store_read_end(t);
	if (rc != STORE_OK || uids.nomem) {
		free(uids.v);
		imap_no(s, "UNAVAILABLE", "RENAME: mailbox created but messages not moved");
		return;
	}
	if (uids.n == 0) {
		free(uids.v);
		imap_ok(s, NULL, "RENAME completed");
		return;
	}
	store_req *m = store_req_new();
	if (!m) {
		free(uids.v);
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	for (size_t i = 0; i < uids.n; i++)
		store_req_move(m, inbox.id, uids.v[i], dest, 0);
	free(uids.v);
	imap_submit(s, m, rename_inbox_moved);
}

/* The names of a RENAME of other than INBOX, kept for its answer. */
struct rename_names {
	const char *from, *to;
};

/*
 * An IMAP4rev2 session is told of the new name with the old one in an
 * OLDNAME extended data item (RFC 9051 §6.3.9.7), which the RFC includes
 * whenever a mailbox is renamed; the children follow without one (§6.3.6).
 */
static void rename_done(struct imap_session *s, store_req *r)
{
	const struct rename_names *rn = s->cmd_state;
	int rc = store_req_status(r);

	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "RENAME");
		return;
	}
	if ((s->enabled & IMAP_EN_REV2) && rn) {
		imap_write_str(&s->out, "* LIST () \"/\" ");
		imap_write_mailbox(&s->out, rn->to, strlen(rn->to), imap_write_flags(s));
		imap_write_str(&s->out, " (\"OLDNAME\" (");
		imap_write_mailbox(&s->out, rn->from, strlen(rn->from), imap_write_flags(s));
		imap_write_str(&s->out, "))\r\n");
	}
	imap_ok(s, NULL, "RENAME completed");
}

void imap_cmd_rename(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str a, b;
	struct mbox_list l;
	char *from, *to;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &a) || imap_parse_sp(cmd) ||
	    imap_parse_mailbox(cmd, &b) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	from = mbox_trim(cmd, &a);
	to = mbox_trim(cmd, &b);
	if (!from || !to) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	if (!mbox_name_ok(to)) {
		imap_no(s, "CANNOT", "Invalid mailbox name");
		return;
	}
	size_t flen = strlen(from);
	if (strncmp(to, from, flen) == 0 && to[flen] == DELIM) {
		imap_no(s, "CANNOT", "Cannot rename a mailbox into itself");
		return;
	}
	rc = mbox_list_load(s, &l, false);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "RENAME");
		return;
	}
	struct mbox_entry key = { .name = from }, *src;
	src = bsearch(&key, l.v, l.n, sizeof *l.v, cmp_entry);
	key.name = to;
	bool to_exists = strcmp(to, "INBOX") == 0 || bsearch(&key, l.v, l.n, sizeof *l.v, cmp_entry);
	if (!src) {
		mbox_list_free(&l);
		imap_no(s, "NONEXISTENT", "Mailbox does not exist");
		return;
	}
	if (to_exists) {
		mbox_list_free(&l);
		imap_no(s, "ALREADYEXISTS", "Target mailbox already exists");
		return;
	}
	store_req *r = store_req_new();
	if (!r) {
		mbox_list_free(&l);
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	rc = mbox_create_parents(s, r, to);
	if (rc != STORE_OK) {
		mbox_list_free(&l);
		store_req_free(r);
		mbox_store_no(s, rc, "RENAME");
		return;
	}
	if (strcmp(from, "INBOX") == 0) {
		/* RFC 3501 §6.3.5: INBOX's messages move to a new mailbox and
		 * INBOX stays, empty; its inferiors are unaffected.  The new
		 * mailbox's id is known only after the commit: two requests.
		 * As any RENAME it leaves subscriptions alone (RFC 9051
		 * §6.3.6): INBOX stays subscribed, the new name is not made so. */
		mbox_list_free(&l);
		store_req_mailbox_create(r, s->user, to, 0);
		imap_submit(s, r, rename_inbox_created);
		return;
	}
	/* The mailbox and every inferior, in one request (§6.3.5).  The
	 * subscriptions stay with the old names (RFC 9051 §6.3.6: RENAME does
	 * not update them; a client that wants the new names subscribed
	 * says SUBSCRIBE), so no LIST line needs \Subscribed. */
	struct rename_names *rn = imap_cmd_alloc(cmd, sizeof *rn);
	if (!rn) {
		mbox_list_free(&l);
		store_req_free(r);
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	rn->from = from;
	rn->to = to;
	s->cmd_state = rn;
	store_req_mailbox_rename(r, src->id, to);
	for (size_t i = 0; i < l.n; i++) {
		const char *n = l.v[i].name;
		if (strncmp(n, from, flen) != 0 || n[flen] != DELIM)
			continue;
		size_t tlen = strlen(to), rest = strlen(n + flen);
		char *nn = malloc(tlen + rest + 1);
		if (!nn) {
			mbox_list_free(&l);
			store_req_free(r);
			imap_no(s, "UNAVAILABLE", "Out of memory");
			return;
		}
		memcpy(nn, to, tlen);
		memcpy(nn + tlen, n + flen, rest + 1);
		store_req_mailbox_rename(r, l.v[i].id, nn);
		free(nn);
	}
	mbox_list_free(&l);
	imap_submit(s, r, rename_done);
}

/* ------------------------------------------------ SUBSCRIBE/UNSUBSCRIBE */

/*
 * Subscriptions are names, kept apart from the mailboxes (store.h): DELETE
 * and RENAME leave them, as RFC 3501 §6.3.6 (MUST NOT remove) and RFC 9051
 * §6.3.7 ask.  SUBSCRIBE takes a name that is a mailbox or is subscribed
 * already, and refuses others with NO [NONEXISTENT] (§6.3.6: a server MAY
 * check that the mailbox exists).  UNSUBSCRIBE takes any name, whether or
 * not its mailbox exists: OK also when it was not subscribed (RFC 9051
 * §6.3.8).  A request that would change nothing is answered at once,
 * without a write.
 */
void imap_cmd_subscribe(struct imap_session *s, struct imap_cmd *cmd)
{
	bool on = strcmp(cmd->name, "SUBSCRIBE") == 0;
	struct store_mailbox mb;
	char *name;
	int rc, sub;

	name = mbox_arg(s, cmd);
	if (!name)
		return;
	store_txn *t = store_read_begin(conn_store(s->c));
	if (!t) {
		mbox_store_no(s, STORE_TEMPFAIL, cmd->name);
		return;
	}
	sub = store_subscribed(t, s->user_id, name);
	rc = on && sub == STORE_NOTFOUND ? store_mailbox_get(t, s->user_id, name, &mb) : STORE_OK;
	store_read_end(t);
	if (sub != STORE_OK && sub != STORE_NOTFOUND) {
		mbox_store_no(s, sub, cmd->name);
		return;
	}
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, cmd->name);
		return;
	}
	if ((sub == STORE_OK) == on) {
		imap_ok(s, NULL, "%s completed", cmd->name);
		return;
	}
	store_req *r = store_req_new();
	if (!r) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	store_req_subscribe(r, s->user, name, on);
	imap_submit(s, r, mbox_write_done);
}

/* -------------------------------------------------------- LIST/LSUB */

/*
 * Match NAME against PATTERN (RFC 3501 §6.3.8): "*" matches anything, "%"
 * anything but the delimiter.  Dynamic programming over the name, so a
 * pattern of many wildcards costs len(pattern) * len(name), never more.
 * INBOX is matched case-insensitively, as its name is.
 */
static bool mbox_match(const char *pat, size_t plen, const char *name, bool *nomem)
{
	size_t nlen = strlen(name);
	size_t ci = (strncmp(name, "INBOX", 5) == 0 && (name[5] == '\0' || name[5] == DELIM)) ? 5 : 0;
	bool *cur = calloc(nlen + 1, sizeof *cur), *nxt = calloc(nlen + 1, sizeof *nxt);
	bool res = false;

	if (!cur || !nxt) {
		*nomem = true;
		goto out;
	}
	cur[0] = true;
	for (size_t i = 0; i < plen; i++) {
		char pc = pat[i];
		if (pc == '*' || pc == '%') {
			bool any = false;
			for (size_t j = 0; j <= nlen; j++) {
				if (pc == '%' && j > 0 && name[j - 1] == DELIM)
					any = false;
				any = any || cur[j];
				nxt[j] = any;
			}
		} else {
			nxt[0] = false;
			for (size_t j = 1; j <= nlen; j++) {
				char nc = name[j - 1];
				bool eq = j <= ci ? (pc | 0x20) == (nc | 0x20) : pc == nc;
				nxt[j] = cur[j - 1] && eq;
			}
		}
		bool *tmp = cur;
		cur = nxt;
		nxt = tmp;
	}
	res = cur[nlen];
out:
	free(cur);
	free(nxt);
	return res;
}

/* What one LIST line says of a mailbox name. */
struct list_attrs {
	const char *name;
	uint32_t special_use; /* STORE_USE_* */
	bool subscribed;
	bool nonexistent;     /* \NonExistent (RFC 5258 §3): LIST only */
	bool noselect;        /* \Noselect: LSUB's name without a subscribed
	                       * mailbox (RFC 3501 §6.3.9) */
	bool children;        /* \HasChildren, else \HasNoChildren (RFC 3348) */
	bool show_subscribed; /* \Subscribed was asked for (SUBSCRIBED option) */
	bool childinfo;       /* ("CHILDINFO" ("SUBSCRIBED")), RFC 5258 §3.5 */
};

/*
 * Append "* VERB (attributes) "/" name" and the extended data CHILDINFO
 * asks for.  The attributes come in a fixed order (\NonExistent or
 * \Noselect, the children attribute, \Subscribed, the special uses) so
 * that a plain LIST reads as it always has.
 */
static void list_write_one(struct imap_session *s, const char *verb, const struct list_attrs *a)
{
	static const struct {
		uint32_t bit;
		const char *attr;
	} uses[] = {
		{ STORE_USE_SENT, "\\Sent" },   { STORE_USE_DRAFTS, "\\Drafts" },
		{ STORE_USE_TRASH, "\\Trash" }, { STORE_USE_JUNK, "\\Junk" },
		{ STORE_USE_ARCHIVE, "\\Archive" },
	};
	struct imap_wbuf *w = &s->out;

	imap_write_str(w, "* ");
	imap_write_str(w, verb);
	imap_write_str(w, " (");
	if (a->nonexistent)
		imap_write_str(w, "\\NonExistent ");
	if (a->noselect)
		imap_write_str(w, "\\Noselect ");
	imap_write_str(w, a->children ? "\\HasChildren" : "\\HasNoChildren");
	if (a->show_subscribed && a->subscribed)
		imap_write_str(w, " \\Subscribed");
	for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
		if (a->special_use & uses[i].bit) {
			imap_write_byte(w, ' ');
			imap_write_str(w, uses[i].attr);
		}
	}
	imap_write_str(w, ") \"/\" ");
	imap_write_mailbox(w, a->name, strlen(a->name), imap_write_flags(s));
	/* The selection criteria that make a descendant count: always
	 * SUBSCRIBED, the only base option there is (RFC 5258 §6). */
	if (a->childinfo)
		imap_write_str(w, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
	imap_write_crlf(w);
}

static int status_write(struct imap_session *s, store_txn *t, const char *name, size_t len,
                        const struct store_mailbox *mb, unsigned items);

/* LIST-STATUS (RFC 5819 §2): the STATUS line that follows E's LIST line.
 * A mailbox deleted since the list was read gets none (§2 leaves out
 * non-existent mailboxes); any other failure is returned. */
static int list_status_one(struct imap_session *s, store_txn *t, const struct mbox_entry *e,
                           unsigned items)
{
	struct store_mailbox mb;
	int rc = store_mailbox_get(t, s->user_id, e->name, &mb);

	if (rc == STORE_NOTFOUND)
		return STORE_OK;
	if (rc != STORE_OK)
		return rc;
	return status_write(s, t, e->name, strlen(e->name), &mb, items);
}

/* What a LIST command asks for, once its options have been checked. */
struct list_query {
	bool lsub;
	bool sel_subscribed;  /* SUBSCRIBED selection option */
	bool sel_special;     /* SPECIAL-USE selection option (RFC 6154 §2) */
	bool recursive;       /* RECURSIVEMATCH */
	bool show_subscribed; /* \Subscribed: SUBSCRIBED as either kind of option */
	bool status;          /* RETURN (STATUS (...)), RFC 5819 */
	unsigned status_items;
	char **pats;          /* canonical patterns, reference prepended */
	size_t npats;
};

/* Is NAME one of the NUL-terminated NAMES? */
static bool name_in(const char *name, const char *const *names)
{
	for (; *names; names++)
		if (strcmp(name, *names) == 0)
			return true;
	return false;
}

/*
 * Check A's options and fill Q from them; NULL, or the reason for a BAD.
 * RFC 5258 §3 and RFC 9051 §6.3.9: an option the server does not know is
 * a BAD; one given twice counts once.  None of the selection options and
 * only STATUS among the return options takes a value.  RECURSIVEMATCH
 * needs a base option, and the only base option is SUBSCRIBED: REMOTE and
 * SPECIAL-USE are independent ones (RFC 5258 §6, RFC 6154 §6), so
 * (RECURSIVEMATCH), (REMOTE RECURSIVEMATCH) and (SPECIAL-USE
 * RECURSIVEMATCH) are refused.
 */
static const char *list_check_options(const struct imap_list *a, struct list_query *q)
{
	static const char *const sel_names[] = { "SUBSCRIBED", "REMOTE", "RECURSIVEMATCH",
		                                  "SPECIAL-USE", NULL };
	static const char *const ret_names[] = { "SUBSCRIBED", "CHILDREN", "SPECIAL-USE",
		                                  "STATUS", NULL };

	for (size_t i = 0; i < a->nsel; i++) {
		if (!name_in(a->sel[i].name.s, sel_names))
			return "Unknown LIST selection option";
		if (a->sel[i].value.len)
			return "This LIST selection option takes no value";
	}
	for (size_t i = 0; i < a->nret; i++) {
		if (!name_in(a->ret[i].name.s, ret_names))
			return "Unknown LIST return option";
		if (a->ret[i].value.len && strcmp(a->ret[i].name.s, "STATUS") != 0)
			return "This LIST return option takes no value";
	}
	q->sel_subscribed = a->known & IMAP_LIST_SEL_SUBSCRIBED;
	q->sel_special = a->known & IMAP_LIST_SEL_SPECIAL_USE;
	q->recursive = a->known & IMAP_LIST_SEL_RECURSIVEMATCH;
	if (q->recursive && !q->sel_subscribed)
		return "RECURSIVEMATCH needs the SUBSCRIBED selection option";
	/* The SUBSCRIBED selection option implies the return option. */
	q->show_subscribed = a->known & (IMAP_LIST_SEL_SUBSCRIBED | IMAP_LIST_RET_SUBSCRIBED);
	q->status = a->known & IMAP_LIST_RET_STATUS;
	q->status_items = a->status_items;
	return NULL;
}

/*
 * Decide, for each entry of L, whether it meets the selection criteria,
 * matches one of Q's patterns, and (RECURSIVEMATCH) has a descendant that
 * meets them, and one that does so without matching.  Each entry that
 * meets marks its ancestors, looked up by binary search: the cost is the
 * entries times their depth times log(entries).
 */
static void list_evaluate(const struct list_query *q, struct mbox_list *l, bool *nomem)
{
	for (size_t i = 0; i < l->n && !*nomem; i++) {
		struct mbox_entry *e = &l->v[i];
		/* SUBSCRIBED lists subscribed names rather than mailboxes
		 * (RFC 9051 §6.3.9.1); LSUB is the same selection. */
		bool sub = q->lsub || q->sel_subscribed;
		e->meets = (sub ? e->subscribed : e->exists) && (!q->sel_special || e->special_use);
		e->matched = false;
		e->desc_meets = e->desc_unmatched = false;
		for (size_t k = 0; k < q->npats && !e->matched; k++)
			e->matched = mbox_match(q->pats[k], strlen(q->pats[k]), e->name, nomem);
	}
	if (!q->recursive)
		return;
	for (size_t i = 0; i < l->n; i++) {
		const struct mbox_entry *e = &l->v[i];
		if (!e->meets)
			continue;
		for (const char *p = strchr(e->name, DELIM); p; p = strchr(p + 1, DELIM)) {
			struct mbox_entry *anc = mbox_find(l, e->name, (size_t)(p - e->name));
			if (!anc)
				continue;
			anc->desc_meets = true;
			if (!e->matched)
				anc->desc_unmatched = true;
		}
	}
}

/* RFC 3501 §6.3.8: LIST "ref" "" asks for the delimiter and the root of
 * the reference, LSUB for nothing. */
static void list_delimiter(struct imap_session *s, const struct imap_list *a, bool lsub)
{
	if (lsub)
		return;
	const char *slash = a->reference.len ? memchr(a->reference.s, DELIM, a->reference.len) : NULL;
	imap_write_str(&s->out, "* LIST (\\Noselect) \"/\" ");
	if (slash)
		imap_write_mailbox(&s->out, a->reference.s, (size_t)(slash - a->reference.s) + 1,
		                   imap_write_flags(s));
	else
		imap_write_str(&s->out, "\"\"");
	imap_write_crlf(&s->out);
}

/*
 * The canonical patterns of A into Q: the reference and each pattern read
 * as one left-to-right name.  In the extended syntax an empty pattern is
 * ignored (RFC 5258 §3), so Q may end up with none.  False when out of
 * memory.
 */
static bool list_patterns(struct imap_cmd *cmd, const struct imap_list *a, struct list_query *q)
{
	q->pats = imap_cmd_alloc(cmd, a->npatterns * sizeof *q->pats);
	if (!q->pats)
		return false;
	q->npats = 0;
	for (size_t i = 0; i < a->npatterns; i++) {
		if (a->extended && a->patterns[i].len == 0)
			continue;
		size_t n = a->reference.len + a->patterns[i].len;
		char *p = imap_cmd_alloc(cmd, n + 1);
		if (!p)
			return false;
		memcpy(p, a->reference.s, a->reference.len);
		memcpy(p + a->reference.len, a->patterns[i].s, a->patterns[i].len);
		p[n] = '\0';
		q->pats[q->npats++] = p;
	}
	return true;
}

/*
 * LIST and LSUB (RFC 3501 §6.3.8, §6.3.9), with the extended LIST of RFC
 * 5258 / RFC 9051 §6.3.9: selection options SUBSCRIBED, REMOTE (there are
 * no remote mailboxes: no effect), RECURSIVEMATCH and SPECIAL-USE (RFC
 * 6154), return options SUBSCRIBED, CHILDREN, SPECIAL-USE and STATUS (RFC
 * 5819), several patterns in parentheses.  \HasChildren/\HasNoChildren
 * and the special uses are always given, as RFC 3348 and RFC 6154 allow.
 */
void imap_cmd_list(struct imap_session *s, struct imap_cmd *cmd)
{
	struct list_query q = { .lsub = strcmp(cmd->name, "LSUB") == 0 };
	struct imap_list a;
	struct mbox_list l;
	bool nomem = false;
	const char *err;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_list(cmd, &a) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (q.lsub && a.extended) {
		imap_bad(s, NULL, "LSUB takes a reference and one pattern");
		return;
	}
	err = list_check_options(&a, &q);
	if (err) {
		imap_bad(s, NULL, "%s", err);
		return;
	}
	/* RFC 3501 §6.3.9: LSUB "%" lists "foo", \Noselect, when only
	 * "foo/bar" is subscribed.  That is RECURSIVEMATCH's rule, with
	 * \Noselect in the place of CHILDINFO. */
	if (q.lsub)
		q.recursive = true;
	/* Only the basic syntax gives the empty pattern a meaning. */
	if (!a.extended && a.npatterns == 1 && a.patterns[0].len == 0) {
		list_delimiter(s, &a, q.lsub);
		imap_ok(s, NULL, "%s completed", cmd->name);
		return;
	}
	if (!list_patterns(cmd, &a, &q)) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	/* A plain LIST needs no subscriptions: only mailboxes can meet it. */
	rc = mbox_list_load(s, &l, q.lsub || q.show_subscribed);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, cmd->name);
		return;
	}
	list_evaluate(&q, &l, &nomem);
	store_txn *st = NULL;
	if (q.status && !nomem) {
		st = store_read_begin(conn_store(s->c));
		if (!st) {
			mbox_list_free(&l);
			imap_no(s, "UNAVAILABLE", "Cannot read the store, try later");
			return;
		}
	}
	for (size_t i = 0; i < l.n && !nomem && rc == STORE_OK; i++) {
		const struct mbox_entry *e = &l.v[i];
		/* RFC 9051 §6.3.9.3 rule 2: a name is listed when it meets the
		 * selection, or (RECURSIVEMATCH) when a descendant that meets it
		 * would not be listed itself; CHILDINFO then says why. */
		if (!e->matched || !(e->meets || e->desc_unmatched))
			continue;
		/* A subscribed name whose mailbox is gone: \NonExistent (and
		 * \Subscribed) to LIST (RFC 5258 §3.1), \Noselect to LSUB, as
		 * is a parent listed for a subscribed child. */
		bool lsub_noselect = q.lsub && !(e->meets && e->exists);
		struct list_attrs at = {
			.name = e->name,
			.special_use = lsub_noselect ? 0 : e->special_use,
			.subscribed = e->subscribed,
			.nonexistent = !q.lsub && !e->exists,
			.noselect = lsub_noselect,
			.children = mbox_has_children(&l, e->name),
			.show_subscribed = q.show_subscribed,
			.childinfo = !q.lsub && e->desc_meets,
		};
		list_write_one(s, q.lsub ? "LSUB" : "LIST", &at);
		/* STATUS for each selectable mailbox that meets the selection
		 * (RFC 9051 §6.3.9.2). */
		if (st && e->meets && e->exists)
			rc = list_status_one(s, st, e, q.status_items);
	}
	if (st)
		store_read_end(st);
	mbox_list_free(&l);
	if (nomem) {
		imap_wbuf_reset(&s->out);
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	if (rc != STORE_OK) {
		imap_wbuf_reset(&s->out);
		mbox_store_no(s, rc, cmd->name);
		return;
	}
	imap_ok(s, NULL, "%s completed", cmd->name);
}

/*
 * IMAP4rev2's SELECT and EXAMINE send the mailbox's LIST line, with
 * accurate attributes (RFC 9051 §6.3.2): the children attribute needs the
 * other names, so the list is read.  Nothing is written if it cannot be.
 */
static void select_write_list(struct imap_session *s, const char *name,
                              const struct store_mailbox *mb)
{
	struct mbox_list l;

	if (mbox_list_load(s, &l, false) != STORE_OK)
		return;
	store_txn *t = store_read_begin(conn_store(s->c));
	bool subscribed = t && store_subscribed(t, s->user_id, name) == STORE_OK;
	if (t)
		store_read_end(t);
	struct list_attrs at = {
		.name = name,
		.special_use = mb->special_use,
		.subscribed = subscribed,
		.children = mbox_has_children(&l, name),
		.show_subscribed = true,
	};
	mbox_list_free(&l);
	list_write_one(s, "LIST", &at);
}

/* ------------------------------------------------------------- STATUS */

struct recent_count {
	uint32_t n;
};

static int count_one(const struct store_message *m, void *arg)
{
	((struct recent_count *)arg)->n++;
	return 0;
}

/*
 * Append "* STATUS name (items)" for MB, read in T, to s->out: what STATUS
 * answers and what LIST-STATUS (RFC 5819 §2) sends after a LIST line.
 * SIZE is the mailbox's byte counter (RFC 8438 §3), APPENDLIMIT the
 * assembler's limit, the one APPEND is held to (RFC 7889 §3).  A STORE_*
 * status; nothing is written unless STORE_OK.
 */
static int status_write(struct imap_session *s, store_txn *t, const char *name, size_t len,
                        const struct store_mailbox *mb, unsigned items)
{
	struct recent_count rc_n = { 0 };
	struct imap_wbuf *w = &s->out;
	const char *sep = "";

	if (items & IMAP_STATUS_HIGHESTMODSEQ) /* RFC 7162 §3.1 enabling command */
		imap_condstore_enable(s);
	/* RECENT costs only the messages above the claim, not the mailbox.
	 * An IMAP4rev2 session sees no message as \Recent (RFC 9051
	 * Appendix E item 12), so it is told 0. */
	if ((items & IMAP_STATUS_RECENT) && !(s->enabled & IMAP_EN_REV2)) {
		int rc = store_message_foreach(t, mb->id, imap_recent_claimed(mb->id) + 1,
		                               count_one, &rc_n);
		if (rc != STORE_OK)
			return rc;
	}
	imap_write_str(w, "* STATUS ");
	imap_write_mailbox(w, name, len, imap_write_flags(s));
	imap_write_str(w, " (");
#define STATUS_ITEM(bit, label, value)                \
	do {                                          \
		if (items & (bit)) {                  \
			imap_write_str(w, sep);       \
			imap_write_str(w, label " "); \
			imap_write_u64(w, (value));   \
			sep = " ";                    \
		}                                     \
	} while (0)
	STATUS_ITEM(IMAP_STATUS_MESSAGES, "MESSAGES", mb->messages);
	STATUS_ITEM(IMAP_STATUS_RECENT, "RECENT", rc_n.n);
	STATUS_ITEM(IMAP_STATUS_UIDNEXT, "UIDNEXT", mb->uidnext);
	STATUS_ITEM(IMAP_STATUS_UIDVALIDITY, "UIDVALIDITY", mb->uidvalidity);
	STATUS_ITEM(IMAP_STATUS_UNSEEN, "UNSEEN", mb->unseen);
	STATUS_ITEM(IMAP_STATUS_DELETED, "DELETED", mb->deleted);
	STATUS_ITEM(IMAP_STATUS_SIZE, "SIZE", mb->bytes);
	STATUS_ITEM(IMAP_STATUS_HIGHESTMODSEQ, "HIGHESTMODSEQ", mb->highestmodseq);
	STATUS_ITEM(IMAP_STATUS_APPENDLIMIT, "APPENDLIMIT", imap_append_limit(s));
#undef STATUS_ITEM
	if (items & IMAP_STATUS_MAILBOXID) { /* RFC 8474 §4.2 */
		char mbid[MAILBOXID_SIZE + 1];
		mailbox_id_format(mbid, mb->id, mb->uidvalidity);
		imap_write_str(w, sep);
		imap_write_str(w, "MAILBOXID (");
		imap_write_str(w, mbid);
		imap_write_byte(w, ')');
	}
	imap_write_str(w, ")\r\n");
	return STORE_OK;
}

void imap_cmd_status(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str name;
	struct store_mailbox mb;
	unsigned items;
	store_txn *t;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &name) || imap_parse_sp(cmd) ||
	    imap_parse_status_items(cmd, &items) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	t = store_read_begin(conn_store(s->c));
	if (!t) {
		imap_no(s, "UNAVAILABLE", "Cannot read the store, try later");
		return;
	}
	rc = store_mailbox_get(t, s->user_id, name.s, &mb);
	if (rc == STORE_OK)
		rc = status_write(s, t, name.s, name.len, &mb, items);
	store_read_end(t);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "STATUS");
		return;
	}
	imap_ok(s, NULL, "STATUS completed");
}

/* ----------------------------------------------- CLOSE/UNSELECT/EXPUNGE */

struct deleted_scan {
	const struct imap_view *v;
	const uint32_t *only;   /* UID EXPUNGE: the UIDs named, ascending */
	size_t nonly;
	store_req *r;
	size_t n;
};

static int deleted_one(const struct store_message *m, void *arg)
{
	struct deleted_scan *x = arg;

	if (!(m->flags & STORE_F_DELETED) || !imap_view_seq(x->v, m->uid))
		return 0;
	if (x->only) {
		size_t lo = 0, hi = x->nonly;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (x->only[mid] < m->uid)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == x->nonly || x->only[lo] != m->uid)
			return 0;
	}
	store_req_expunge(x->r, x->v->mailbox_id, m->uid);
	x->n++;
	return 0;
}

/* A request expunging the view's messages with \Deleted (those of ONLY if
 * given), in *R (NULL when there are none).  A STORE_* status. */
static int expunge_request(struct imap_session *s, const uint32_t *only, size_t nonly,
                           store_req **r)
{
	struct deleted_scan x = { .v = &s->view, .only = only, .nonly = nonly };
	store_txn *t;
	int rc;

	*r = NULL;
	x.r = store_req_new();
	if (!x.r)
		return STORE_TEMPFAIL;
	t = store_read_begin(conn_store(s->c));
	if (!t) {
		store_req_free(x.r);
		return STORE_TEMPFAIL;
	}
	uint32_t first = only ? (nonly ? only[0] : UINT32_MAX) : 1;
	rc = nonly || !only ? store_message_foreach(t, s->view.mailbox_id, first, deleted_one, &x)
	                    : STORE_OK;
	store_read_end(t);
	if (rc != STORE_OK || x.n == 0) {
		store_req_free(x.r);
		return rc;
	}
	*r = x.r;
	return STORE_OK;
}

static void close_done(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);

	if (rc == STORE_OK)
		imap_ok(s, NULL, "CLOSE completed");
	else
		imap_no(s, "UNAVAILABLE", "Mailbox closed, but deleted messages not removed: %s",
		        store_strerror(rc));
}

void imap_cmd_close(struct imap_session *s, struct imap_cmd *cmd)
{
	bool unselect = strcmp(cmd->name, "UNSELECT") == 0;
	store_req *r = NULL;
	int rc = STORE_OK;

	if (imap_parse_end(cmd) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	/* RFC 3501 §6.4.2: CLOSE expunges silently, and only when the mailbox
	 * is read-write; UNSELECT (RFC 3691) never does. */
	if (!unselect && !s->view.readonly)
		rc = expunge_request(s, NULL, 0, &r);
	imap_view_close(s); /* the state is AUTH whatever comes next */
	if (rc != STORE_OK) {
		imap_no(s, "UNAVAILABLE", "Mailbox closed, but deleted messages not removed: %s",
		        store_strerror(rc));
		return;
	}
	if (!r) {
		imap_ok(s, NULL, "%s completed", cmd->name);
		return;
	}
	imap_submit(s, r, close_done);
}

static void expunge_done(struct imap_session *s, store_req *r)
{
	int rc = store_req_status(r);

	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "EXPUNGE");
		return;
	}
	if ((s->enabled & IMAP_EN_QRESYNC) && s->state == IMAP_SELECTED) {
		/* RFC 7162 §3.2.7, §3.2.9: with QRESYNC the answer carries the
		 * new HIGHESTMODSEQ; sync first so it is the modseq the
		 * reported VANISHED brought the client to. */
		char code[48];
		imap_view_sync(s, true);
		snprintf(code, sizeof code, "HIGHESTMODSEQ %" PRIu64, s->view.modseq);
		imap_ok(s, code, "EXPUNGE completed");
		return;
	}
	imap_ok(s, NULL, "EXPUNGE completed");
}

void imap_cmd_expunge(struct imap_session *s, struct imap_cmd *cmd)
{
	uint32_t *uids = NULL;
	size_t n = 0;
	store_req *r;
	int rc;

	if (cmd->uid) {
		/* RFC 4315 §2.1: only the named UIDs that have \Deleted. */
		struct imap_seqset set;
		if (imap_parse_sp(cmd) || imap_parse_seqset(cmd, &set) || imap_parse_end(cmd)) {
			imap_bad(s, NULL, "%s", cmd->error);
			return;
		}
		if (imap_view_resolve(s, &set, true, &uids, &n) != 0)
			return;
	} else if (imap_parse_end(cmd) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (s->view.readonly) {
		imap_no(s, "READ-ONLY", "Mailbox is read-only");
		return;
	}
	rc = expunge_request(s, cmd->uid ? uids : NULL, n, &r);
	if (rc != STORE_OK) {
		mbox_store_no(s, rc, "EXPUNGE");
		return;
	}
	if (!r) {
		imap_ok(s, NULL, "EXPUNGE completed");
		return;
	}
	imap_submit(s, r, expunge_done);
}
