"""
test_imap_subscriptions.py - subscriptions are names, not mailboxes.

RFC 3501 §6.3.6: the server MUST NOT remove a name from the subscription
list because its mailbox is gone; RFC 9051 §6.3.6: RENAME does not update
subscriptions; RFC 5258 §3: LIST (SUBSCRIBED) shows a subscribed name
without a mailbox as \\NonExistent \\Subscribed; RFC 3501 §6.3.9: LSUB shows
it, and a parent reached by "%" whose child alone is subscribed, as
\\Noselect.

What these tests hold: DELETE keeps the subscription, a mailbox made again
under the name (here by RENAME, which subscribes nothing) is subscribed
again, UNSUBSCRIBE of a deleted name works, RENAME leaves the old names
subscribed, the subscriptions survive a restart and belong to one user.
A data folder from before the subscription set existed is covered by
tests/unit/test_store.c (test_subs_migration), which writes the old
per-mailbox byte directly.

Raw sockets give the exact LIST/LSUB lines; imaplib, an independent
client, checks SUBSCRIBE/UNSUBSCRIBE/LSUB the way a mail client uses them.
"""

import re
from conftest import TaggedImap

NE = b"\\NonExistent"


class Client(TaggedImap):
    def no(self, text, code):
        unt, tagged = self.cmd(text)
        assert tagged.startswith(b"NO [" + code + b"]"), (text, unt, tagged)
        return unt


DEFAULTS = {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"}


def test_delete_keeps_subscription(daemon):
    c = Client(daemon)
    c.ok("CREATE Lists/IETF")             # CREATE subscribes, the parent too
    c.ok("DELETE Lists/IETF")
    got = c.listing('LIST (SUBSCRIBED) "" "*"')
    assert set(got) == DEFAULTS | {"Lists", "Lists/IETF"}
    # The exact line of RFC 5258 §3.3's example, with our children attribute.
    assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" Lists/IETF' in \
        c.ok('LIST (SUBSCRIBED) "" "Lists/*"')
    # Its parent has no child mailbox left: a gone name is no child.
    assert got["Lists"] == ({b"\\HasNoChildren", b"\\Subscribed"}, b"")
    # Only a subscription lists a name that is not a mailbox.
    assert "Lists/IETF" not in c.listing('LIST "" "*"')
    assert "Lists/IETF" not in c.listing('LIST "" "*" RETURN (SUBSCRIBED)')
    # LIST-STATUS: no STATUS line for it (RFC 5819 §2), one for the others.
    unt = c.ok('LIST (SUBSCRIBED) "" "Lists*" RETURN (STATUS (MESSAGES))')
    assert unt == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Lists',
                   b"* STATUS Lists (MESSAGES 0)",
                   b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" Lists/IETF'], unt
    # LSUB: RFC 3501's \Noselect, not LIST-EXTENDED's \NonExistent.
    unt = c.ok('LSUB "" "Lists/*"')
    assert unt == [b'* LSUB (\\Noselect \\HasNoChildren) "/" Lists/IETF'], unt
    # It is still not a mailbox.
    c.no("SELECT Lists/IETF", b"NONEXISTENT")
    c.no("STATUS Lists/IETF (MESSAGES)", b"NONEXISTENT")
    # Another session sees the same set.
    c2 = Client(daemon)
    assert c2.listing('LIST (SUBSCRIBED) "" "Lists/IETF"')["Lists/IETF"][0] == \
        {NE, b"\\HasNoChildren", b"\\Subscribed"}
    # Created again: the name is a mailbox again, and still subscribed.
    c.ok("CREATE Lists/IETF")
    got = c2.listing('LIST (SUBSCRIBED) "" "Lists/*"')
    assert got == {"Lists/IETF": ({b"\\HasNoChildren", b"\\Subscribed"}, b"")}
    c.close()
    c2.close()


def test_recreated_mailbox_is_subscribed_again(daemon):
    """RENAME makes a mailbox without subscribing its name; the name it
    lands on was subscribed when an earlier mailbox of that name went."""
    c = Client(daemon)
    c.ok("CREATE Reports")
    c.ok("DELETE Reports")
    c.ok("CREATE Draft-Reports")
    c.ok("UNSUBSCRIBE Draft-Reports")
    assert "Draft-Reports" not in c.listing('LIST (SUBSCRIBED) "" "*"')
    c.ok("RENAME Draft-Reports Reports")
    got = c.listing('LIST "" "*Reports" RETURN (SUBSCRIBED)')
    assert got == {"Reports": ({b"\\HasNoChildren", b"\\Subscribed"}, b"")}, got
    c.close()


def test_unsubscribe_deleted_name(daemon):
    m = daemon.imap("alice", daemon.password("alice"))
    assert m.create("Old")[0] == "OK"
    assert m.delete("Old")[0] == "OK"
    typ, data = m.lsub('""', "Old")
    assert typ == "OK" and data == [b'(\\Noselect \\HasNoChildren) "/" Old'], data
    # RFC 9051 §6.3.7: SUBSCRIBE of a name already subscribed is OK, even
    # when its mailbox is gone.
    assert m.subscribe("Old")[0] == "OK"
    assert m.unsubscribe("Old")[0] == "OK"
    typ, data = m.lsub('""', "Old")
    assert typ == "OK" and data == [None], data
    # UNSUBSCRIBE of a name not subscribed: OK (RFC 9051 §6.3.8).
    assert m.unsubscribe("Old")[0] == "OK"
    assert m.unsubscribe("Never/Was")[0] == "OK"
    # SUBSCRIBE still wants a mailbox or a subscribed name (RFC 3501
    # §6.3.6 lets the server check): Old is neither now.
    typ, data = m.subscribe("Old")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0], data
    typ, data = m.lsub('""', "*")
    names = {re.match(rb'^\([^)]*\) "/" (.*)$', x).group(1).decode() for x in data}
    assert names == DEFAULTS, names
    m.logout()


def test_rename_leaves_subscriptions(daemon):
    c = Client(daemon)
    c.ok("CREATE Work/2024")
    c.ok("RENAME Work Job")
    # RFC 9051 §6.3.6: the old names stay subscribed; the new ones are not.
    got = c.listing('LIST (SUBSCRIBED) "" "*"')
    assert set(got) == DEFAULTS | {"Work", "Work/2024"}, got
    assert got["Work"][0] == {NE, b"\\HasNoChildren", b"\\Subscribed"}
    assert got["Work/2024"][0] == {NE, b"\\HasNoChildren", b"\\Subscribed"}
    got = c.listing('LIST "" "Job*" RETURN (SUBSCRIBED)')
    assert got == {"Job": ({b"\\HasChildren"}, b""), "Job/2024": ({b"\\HasNoChildren"}, b"")}
    # The sequence §6.3.6 gives clients to keep them in step.
    c.ok("SUBSCRIBE Job")
    c.ok("UNSUBSCRIBE Work")
    unt = c.ok('LSUB "" "*"')
    assert b'* LSUB (\\HasChildren) "/" Job' in unt, unt
    assert b'* LSUB (\\Noselect \\HasNoChildren) "/" Work/2024' in unt, unt
    assert not any(ln.endswith(b'"/" Work') for ln in unt), unt
    # RENAME INBOX: INBOX stays (and stays subscribed); the new mailbox is
    # the renamed one, so it is not subscribed either.
    c.ok("RENAME INBOX Saved")
    got = c.listing('LIST "" "*" RETURN (SUBSCRIBED)')
    assert b"\\Subscribed" in got["INBOX"][0]
    assert b"\\Subscribed" not in got["Saved"][0]
    c.close()


def test_lsub_percent_lists_noselect_parent(daemon):
    """RFC 3501 §6.3.9: with "foo/bar" subscribed and "foo" not, LSUB "%"
    returns foo with \\Noselect; "*" returns foo/bar itself."""
    c = Client(daemon)
    c.ok("CREATE Fruit/Banana")
    c.ok("UNSUBSCRIBE Fruit")
    unt = c.ok('LSUB "" "Fruit%"')
    assert unt == [b'* LSUB (\\Noselect \\HasChildren) "/" Fruit'], unt
    unt = c.ok('LSUB "" "Fruit*"')
    assert unt == [b'* LSUB (\\HasNoChildren) "/" Fruit/Banana'], unt
    # A subscribed parent is listed as itself.
    c.ok("SUBSCRIBE Fruit")
    assert c.ok('LSUB "" "Fruit%"') == [b'* LSUB (\\HasChildren) "/" Fruit']
    # Nothing subscribed below or at a name: not listed.
    c.ok("CREATE Tofu")
    c.ok("UNSUBSCRIBE Tofu")
    assert c.ok('LSUB "" "Tofu%"') == []
    c.close()


def test_gone_parent_of_a_gone_subscription(daemon):
    """A subscribed name whose mailbox and parents are all gone: the
    parents are no names of their own, but RECURSIVEMATCH and LSUB "%"
    still reach them (RFC 5258 §3.5 table, RFC 3501 §6.3.9)."""
    c = Client(daemon)
    c.ok("CREATE Old/Deep/Box")
    for name in ("Old/Deep/Box", "Old/Deep", "Old"):
        c.ok("DELETE " + name)
    for name in ("Old/Deep", "Old"):
        c.ok("UNSUBSCRIBE " + name)
    got = c.listing('LIST (SUBSCRIBED) "" "Old*"')
    assert got == {"Old/Deep/Box": ({NE, b"\\HasNoChildren", b"\\Subscribed"}, b"")}, got
    assert c.listing('LIST (SUBSCRIBED) "" "%"').keys() == DEFAULTS
    unt = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Old%"')
    assert unt == [b'* LIST (\\NonExistent \\HasNoChildren) "/" Old ("CHILDINFO" ("SUBSCRIBED"))'], unt
    unt = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Old/%"')
    assert unt == [b'* LIST (\\NonExistent \\HasNoChildren) "/" Old/Deep '
                   b'("CHILDINFO" ("SUBSCRIBED"))'], unt
    assert c.ok('LSUB "" "Old%"') == [b'* LSUB (\\Noselect \\HasNoChildren) "/" Old']
    assert c.ok('LSUB "" "Old/%"') == [b'* LSUB (\\Noselect \\HasNoChildren) "/" Old/Deep']
    # A plain LIST knows nothing of them.
    assert c.ok('LIST "" "Old*"') == []
    # CREATE of the deep name brings every level back; the box was
    # subscribed all along, the new parents are subscribed by CREATE.
    c.ok("CREATE Old/Deep/Box")
    got = c.listing('LIST (SUBSCRIBED) "" "Old*"')
    assert {n: a for n, (a, _) in got.items()} == {
        "Old": {b"\\HasChildren", b"\\Subscribed"},
        "Old/Deep": {b"\\HasChildren", b"\\Subscribed"},
        "Old/Deep/Box": {b"\\HasNoChildren", b"\\Subscribed"}}, got
    c.close()


def test_subscriptions_survive_restart_and_are_per_user(daemon):
    c = Client(daemon)
    c.ok("CREATE Archive/2019")
    c.ok("DELETE Archive/2019")
    c.close()
    daemon.restart()
    c = Client(daemon)
    got = c.listing('LIST (SUBSCRIBED) "" "Archive*"')
    assert got["Archive/2019"][0] == {NE, b"\\HasNoChildren", b"\\Subscribed"}
    assert got["Archive"][0] == {b"\\HasNoChildren", b"\\Subscribed", b"\\Archive"}
    c.close()
    b = Client(daemon, "bob")
    assert set(b.listing('LIST (SUBSCRIBED) "" "*"')) == DEFAULTS
    b.close()
