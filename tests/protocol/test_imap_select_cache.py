"""
SELECT from the shared UID list cache (protocols/imap/imap_view.c): a
mailbox opened once is not read whole again; later SELECTs bring the cached
list and first unseen message up to date from the change feed.  Whatever
the cache does, every session must see exactly the mailbox the store
holds: checked against POP3 (whose snapshot reads the store directly),
after random rounds of flag changes, expunges and deliveries, for fresh
SELECTs and for a session that stayed selected all along.
"""

import random
import re

from conftest import lmtp_send, uidl_map


def msg(i):
    return (b"From: a@example.org\r\nTo: alice@example.com\r\nSubject: m%d\r\n\r\n"
            b"body %d\r\n" % (i, i))


def deliver(d, n, start):
    c = d.lmtp()
    for i in range(n):
        _, rr, data = lmtp_send(c, "s@example.org", ["alice@example.com"], msg(start + i))
        assert data["alice@example.com"][0] == 250, (rr, data)
    c.quit()


def store_uids(d):
    """UIDs in INBOX as the store has them, from POP3 UIDL (Dovecot form:
    the UID is the first 8 hex digits)."""
    p = d.pop3("alice", "alice-pw")
    try:
        return [int(u[:8], 16) for _, u in sorted(uidl_map(p).items())]
    finally:
        p.quit()


def view_uids(m):
    typ, data = m.fetch("1:*", "(UID)")
    assert typ == "OK", data
    out = []
    for item in data:
        # Unsolicited FETCH (FLAGS ...) of other sessions' changes carry no
        # UID in an IMAP4rev1 session: only the answers to this command do.
        hit = re.search(rb"UID (\d+)", item) if item else None
        if hit:
            out.append(int(hit.group(1)))
    return out


def first_unseen_uid(m):
    typ, data = m.uid("SEARCH", "UNSEEN")
    assert typ == "OK", data
    uids = [int(x) for x in data[0].split()]
    return min(uids) if uids else None


def check_fresh_select(d):
    want = store_uids(d)
    m = d.imap("alice", "alice-pw")
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) == len(want), (data, len(want))
        unseen = m.response("UNSEEN")[1]
        assert view_uids(m) == want
        fu = first_unseen_uid(m)
        if fu is None:
            assert unseen == [None], unseen
        else:
            assert unseen == [str(want.index(fu) + 1).encode()], (unseen, fu, want[:20])
    finally:
        m.logout()
    return want


def test_select_sees_the_store_after_random_changes(daemon):
    rng = random.Random(7)
    deliver(daemon, 40, 0)
    next_msg = 40
    stayer = daemon.imap("alice", "alice-pw")
    stayer.select("INBOX")
    writer = daemon.imap("alice", "alice-pw")
    writer.select("INBOX")
    check_fresh_select(daemon)            # fills the cache
    for _ in range(12):
        uids = store_uids(daemon)
        op = rng.choice(["seen", "unseen", "expunge", "deliver", "mixed"])
        if op in ("seen", "mixed") and uids:
            pick = rng.sample(uids, min(len(uids), rng.randint(1, 8)))
            writer.uid("STORE", ",".join(map(str, pick)), "+FLAGS.SILENT", r"(\Seen)")
        if op in ("unseen", "mixed") and uids:
            pick = rng.sample(uids, min(len(uids), rng.randint(1, 8)))
            writer.uid("STORE", ",".join(map(str, pick)), "-FLAGS.SILENT", r"(\Seen)")
        if op in ("expunge", "mixed") and uids:
            pick = rng.sample(uids, min(len(uids), rng.randint(1, 5)))
            writer.uid("STORE", ",".join(map(str, pick)), "+FLAGS.SILENT", r"(\Deleted)")
            writer.expunge()
        if op in ("deliver", "mixed"):
            k = rng.randint(1, 4)
            deliver(daemon, k, next_msg)
            next_msg += k
        want = check_fresh_select(daemon)
        # The session selected all along, whose array was shared at its
        # SELECT and copied when it first changed, sees the same.
        stayer.noop()
        assert view_uids(stayer) == want
        writer.noop()
        assert view_uids(writer) == want
    # All seen, then one unseen again: UNSEEN follows.
    writer.store("1:*", "+FLAGS.SILENT", r"(\Seen)")
    check_fresh_select(daemon)
    uids = store_uids(daemon)
    writer.uid("STORE", str(uids[len(uids) // 2]), "-FLAGS.SILENT", r"(\Seen)")
    check_fresh_select(daemon)
    stayer.logout()
    writer.logout()


def test_select_after_the_mailbox_is_recreated(daemon):
    m = daemon.imap("alice", "alice-pw")
    assert m.create("Box")[0] == "OK"
    assert m.append("Box", None, None, msg(1))[0] == "OK"
    assert m.append("Box", None, None, msg(2))[0] == "OK"
    typ, data = m.select("Box")
    assert data == [b"2"]
    m.unselect() if hasattr(m, "unselect") else m.close()
    assert m.delete("Box")[0] == "OK"
    assert m.create("Box")[0] == "OK"
    assert m.append("Box", None, None, msg(3))[0] == "OK"
    typ, data = m.select("Box")
    assert data == [b"1"], data
    typ, data = m.fetch("1:*", "(UID)")
    assert len([x for x in data if x]) == 1, data
    m.logout()
