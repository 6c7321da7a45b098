/*
 * uidcache.h - the message lists of the mailboxes opened lately, shared by
 * the IMAP views and the POP3 snapshots of this process (loop thread only).
 */
#ifndef ONEBOX_UIDCACHE_H
#define ONEBOX_UIDCACHE_H

#include <stdint.h>

#include "store/store.h"

/*
 * A mailbox's messages at one modseq: UIDs ascending, sizes[i] the
 * RFC822.SIZE of uids[i].  Immutable once handed out; reference counted
 * (the cache holds one reference while the list is its entry).
 */
struct uid_list {
	unsigned refs;
	uint32_t count;
	uint32_t *uids;
	uint32_t *sizes;
	uint64_t bytes;         /* the sum of sizes[] */
};

/*
 * A new reference to the list of MB's messages as of the state T reads (MB
 * must have been read in T), and in *FIRST_UNSEEN, if not NULL, the UID
 * of its first message without \Seen (0: none).  Taken from the cache and
 * brought up to date from the change feed when that is cheap; otherwise
 * every message record is read once, and the result cached.  NULL on
 * failure with *RC set (STORE_TEMPFAIL when out of memory).
 */
struct uid_list *uid_cache_open(store_txn *t, const struct store_mailbox *mb,
                                uint32_t *first_unseen, int *rc);

/*
 * A list of its own (not cached) of MAILBOX_ID's messages as T reads them,
 * leaving out those with any of the flags SKIP; EXPECT is how many there
 * should be (the list grows if there are more).  *FIRST_UNSEEN, if not
 * NULL, is set as above.  NULL on failure with *RC set.
 */
struct uid_list *uid_list_read(store_txn *t, uint32_t mailbox_id, uint32_t skip,
                               uint32_t expect, uint32_t *first_unseen, int *rc);

void uid_list_put(struct uid_list *l);

/* qsort comparison of two uint32_t. */
int uid_cmp(const void *a, const void *b);

/* First index of the ascending UIDS[0..N) holding a UID >= UID. */
uint32_t uid_lower_bound(const uint32_t *uids, uint32_t n, uint32_t uid);

#endif
