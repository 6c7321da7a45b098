"""
SELECT from the shared list cache (protocols/uidcache.c): a mailbox opened
once is not read whole again; later SELECTs, and POP3 logins, bring the
cached list and first unseen message up to date from the change feed.
Whatever the cache does, every session must see exactly the mailbox the
store holds: checked against a model the test keeps itself (new UIDs from
STATUS UIDNEXT, which reads the mailbox record, expunged ones as chosen),
after random rounds of flag changes, expunges and deliveries, for fresh
SELECTs, for sessions that stayed selected all along and for POP3, whose
LIST sizes must be those of the messages delivered.
"""

import poplib
import random
import re

import pytest

from conftest import list_map, lmtp_send, uidl_map


def msg(i):
    return (b"From: a@example.org\r\nTo: alice@example.com\r\nSubject: m%d\r\n\r\n"
            b"body %d\r\n" % (i, i)) + b"x" * (i * 37 % 500) + b"\r\n"


def uidnext(d):
    m = d.imap("alice", "alice-pw")
    try:
        typ, data = m.status("INBOX", "(UIDNEXT)")
        assert typ == "OK", data
        return int(re.search(rb"UIDNEXT (\d+)", data[0]).group(1))
    finally:
        m.logout()


def deliver(d, n, start, model=None):
    """Deliver messages START.. and, with MODEL (uid -> size), record the
    UIDs they got."""
    first = uidnext(d) if model is not None else 0
    c = d.lmtp()
    for i in range(n):
        _, rr, data = lmtp_send(c, "s@example.org", ["alice@example.com"], msg(start + i))
        assert data["alice@example.com"][0] == 250, (rr, data)
    c.quit()
    if model is not None:
        assert uidnext(d) == first + n
        for i in range(n):
            model[first + i] = len(msg(start + i))


def pop3_listing(d):
    """(UIDs, sizes, STAT) as a POP3 session lists INBOX (Dovecot UIDL
    form: the UID is the first 8 hex digits)."""
    p = d.pop3("alice", "alice-pw")
    try:
        uidl = uidl_map(p)
        sizes = list_map(p)
        count, octets = p.stat()
        assert sorted(sizes) == sorted(uidl)
        order = sorted(uidl)
        return ([int(uidl[n][:8], 16) for n in order], [sizes[n] for n in order],
                (count, octets))
    finally:
        p.quit()


def check_pop3(d, model):
    uids, sizes, stat = pop3_listing(d)
    want = sorted(model)
    assert uids == want
    assert sizes == [model[u] for u in want]
    assert stat == (len(want), sum(model.values()))


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


def check_fresh_select(d, want):
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


def test_select_sees_the_store_after_random_changes(daemon):
    rng = random.Random(7)
    model = {}
    deliver(daemon, 40, 0, model)
    next_msg = 40
    stayer = daemon.imap("alice", "alice-pw")
    stayer.select("INBOX")
    writer = daemon.imap("alice", "alice-pw")
    writer.select("INBOX")
    check_fresh_select(daemon, sorted(model))   # fills the cache
    for rnd in range(12):
        uids = sorted(model)
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
            for u in pick:
                del model[u]
        if op in ("deliver", "mixed"):
            k = rng.randint(1, 4)
            deliver(daemon, k, next_msg, model)
            next_msg += k
        want = sorted(model)
        # POP3 first in some rounds (its login catches the cache up and
        # the SELECT after it shares the result), after in the others.
        if rnd % 2:
            check_pop3(daemon, model)
        check_fresh_select(daemon, want)
        if not rnd % 2:
            check_pop3(daemon, model)
        # The sessions selected all along, whose arrays were shared at
        # their SELECT and copied when they first changed, see the same.
        stayer.noop()
        assert view_uids(stayer) == want
        writer.noop()
        assert view_uids(writer) == want
    # All seen, then one unseen again: UNSEEN follows.
    writer.store("1:*", "+FLAGS.SILENT", r"(\Seen)")
    check_fresh_select(daemon, sorted(model))
    uids = sorted(model)
    writer.uid("STORE", str(uids[len(uids) // 2]), "-FLAGS.SILENT", r"(\Seen)")
    check_fresh_select(daemon, sorted(model))
    stayer.logout()
    writer.logout()


def test_pop3_hides_deleted_and_keeps_its_snapshot(daemon):
    """A \\Deleted message in INBOX: POP3 reads the records and leaves it
    out (the cached list has it); a POP3 session's numbering stays fixed
    while an IMAP client expunges and the cache entry is replaced."""
    model = {}
    deliver(daemon, 6, 100, model)
    uids = sorted(model)
    m = daemon.imap("alice", "alice-pw")
    m.select("INBOX")                       # the cache has all six
    m.uid("STORE", str(uids[1]), "+FLAGS.SILENT", r"(\Deleted)")
    hidden = dict(model)
    del hidden[uids[1]]
    check_pop3(daemon, hidden)
    m.uid("STORE", str(uids[1]), "-FLAGS.SILENT", r"(\Deleted)")
    check_pop3(daemon, model)               # from the cache, caught up
    p = daemon.pop3("alice", "alice-pw")
    try:
        assert p.stat() == (6, sum(model.values()))
        # IMAP expunges message 3 and a delivery lands; a new SELECT
        # replaces the cache's list while this session holds the old one.
        m.uid("STORE", str(uids[2]), "+FLAGS.SILENT", r"(\Deleted)")
        m.expunge()
        deliver(daemon, 1, 200)
        m.select("INBOX")
        assert p.stat() == (6, sum(model.values()))
        assert int(uidl_map(p)[6][:8], 16) == uids[5]
        assert p.list(4).split()[2] == str(model[uids[3]]).encode()
        with pytest.raises(poplib.error_proto, match="expunged"):
            p.retr(3)
    finally:
        p.quit()
    m.logout()


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
