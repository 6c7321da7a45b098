"""
test_imap_listext.py - LIST-EXTENDED (RFC 5258, RFC 9051 §6.3.9), the
SPECIAL-USE options of LIST and CREATE-SPECIAL-USE (RFC 6154), CHILDREN
(RFC 3348), on the hierarchy of RFC 5258's examples:

    INBOX, the five special-use mailboxes every user has,
    Fruit, Fruit/Apple, Fruit/Banana, Tofu,
    Vegetable, Vegetable/Broccoli, Vegetable/Corn

with Fruit/Banana, Vegetable and Vegetable/Broccoli the only subscribed
ones among them.  Every selection and return option, several patterns, and
the errors: an unknown option, an option with a value it does not take,
RECURSIVEMATCH without SUBSCRIBED, extended syntax in LSUB.

The client is a raw socket; responses are compared as bytes.
"""

from conftest import TaggedImap

USES = {"Drafts": b"\\Drafts", "Sent": b"\\Sent", "Trash": b"\\Trash", "Junk": b"\\Junk",
        "Archive": b"\\Archive"}


class Client(TaggedImap):
    def bad(self, text):
        unt, tagged = self.cmd(text)
        assert tagged.startswith(b"BAD"), (text, unt, tagged)
        assert unt == [], unt
        # Twenty BADs in a row end the session; these are one at a time.
        assert self.ok("NOOP") == []


def setup_tree(daemon):
    c = Client(daemon)
    for name in ("Fruit/Apple", "Fruit/Banana", "Tofu", "Vegetable/Broccoli", "Vegetable/Corn"):
        c.ok("CREATE " + name)
    # CREATE subscribes; keep the subscriptions of RFC 5258's examples.
    for name in ("Fruit", "Fruit/Apple", "Tofu", "Vegetable/Corn"):
        c.ok("UNSUBSCRIBE " + name)
    return c


ALL = {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive", "Fruit", "Fruit/Apple",
       "Fruit/Banana", "Tofu", "Vegetable", "Vegetable/Broccoli", "Vegetable/Corn"}
SUBSCRIBED = {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive", "Fruit/Banana",
              "Vegetable", "Vegetable/Broccoli"}
CHILDINFO = b'("CHILDINFO" ("SUBSCRIBED"))'


def test_capabilities_and_children(daemon):
    c = setup_tree(daemon)
    caps = c.ok("CAPABILITY")[0].split()
    for want in (b"LIST-EXTENDED", b"CHILDREN", b"SPECIAL-USE", b"CREATE-SPECIAL-USE",
                 b"LIST-STATUS"):
        assert want in caps, want
    # RFC 3348: a plain LIST carries the children attributes.
    got = c.listing('LIST "" "*"')
    assert set(got) == ALL
    for name, (attrs, ext) in got.items():
        has = name in ("Fruit", "Vegetable")
        assert (b"\\HasChildren" in attrs) == has and (b"\\HasNoChildren" in attrs) != has, name
        assert b"\\Subscribed" not in attrs and ext == b"", name
    # RETURN (CHILDREN) asks for the same; no other mailboxes appear.
    assert c.listing('LIST "" "%" RETURN (CHILDREN)') == \
        {k: v for k, v in got.items() if "/" not in k}
    c.close()


def test_selection_subscribed(daemon):
    c = setup_tree(daemon)
    got = c.listing('LIST (SUBSCRIBED) "" "*"')
    assert set(got) == SUBSCRIBED
    # The selection option implies the return option (RFC 5258 §3.1), and
    # the other attributes are the real ones.
    for name, (attrs, ext) in got.items():
        assert b"\\Subscribed" in attrs and ext == b"", name
    assert b"\\HasChildren" in got["Vegetable"][0]
    assert USES["Trash"] in got["Trash"][0]
    # Only subscribed names at the top level: Fruit is not.
    assert set(c.listing('LIST (SUBSCRIBED) "" "%"')) == SUBSCRIBED - {
        "Fruit/Banana", "Vegetable/Broccoli"}
    # REMOTE has nothing to add here; with SUBSCRIBED it is SUBSCRIBED.
    assert c.listing('LIST (REMOTE SUBSCRIBED) "" "*"') == got
    # An option given twice counts once.
    assert c.listing('LIST (SUBSCRIBED SUBSCRIBED) "" "*"') == got
    c.close()


def test_return_subscribed(daemon):
    c = setup_tree(daemon)
    got = c.listing('LIST "" "*" RETURN (SUBSCRIBED)')
    assert set(got) == ALL
    for name, (attrs, _) in got.items():
        assert (b"\\Subscribed" in attrs) == (name in SUBSCRIBED), name
    assert c.listing('LIST (REMOTE) "" "*" RETURN (SUBSCRIBED CHILDREN)') == got
    # () is the extended syntax with no selection: every mailbox.
    assert set(c.listing('LIST () "" "*"')) == ALL
    c.close()


def test_recursivematch(daemon):
    c = setup_tree(daemon)
    got = c.listing('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    # Fruit is not subscribed but has a subscribed child that "%" does not
    # reach: listed, without \Subscribed, with CHILDINFO (RFC 5258 §3.5).
    assert got["Fruit"] == ({b"\\HasChildren"}, CHILDINFO), got["Fruit"]
    # Vegetable meets the criteria itself and has a child that does too.
    assert got["Vegetable"] == ({b"\\HasChildren", b"\\Subscribed"}, CHILDINFO)
    assert got["INBOX"] == ({b"\\HasNoChildren", b"\\Subscribed"}, b"")
    assert "Tofu" not in got
    assert set(got) == {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive", "Fruit",
                        "Vegetable"}
    # With "*" Fruit/Banana is listed itself, so Fruit is not (RFC 9051
    # §6.3.9.3 rule 2, §6.3.9.6: no redundant CHILDINFO).
    got = c.listing('LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')
    assert set(got) == SUBSCRIBED
    assert got["Vegetable"][1] == CHILDINFO and got["Vegetable/Broccoli"][1] == b""
    # RFC 5258 §5 example 8C: once no child is subscribed, no CHILDINFO.
    c.ok("UNSUBSCRIBE Vegetable/Broccoli")
    got = c.listing('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
    assert got["Vegetable"] == ({b"\\HasChildren", b"\\Subscribed"}, b"")
    # RETURN (STATUS) goes only to the mailboxes that meet the selection.
    unt = c.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (STATUS (MESSAGES))')
    status = [ln for ln in unt if ln.startswith(b"* STATUS")]
    assert b"* STATUS Vegetable (MESSAGES 0)" in status
    assert not [ln for ln in status if b"Fruit" in ln], status
    assert len(status) == 7, unt   # INBOX, the five special-use, Vegetable
    c.close()


def test_special_use_options(daemon):
    c = setup_tree(daemon)
    got = c.listing('LIST (SPECIAL-USE) "" "*"')
    assert set(got) == set(USES)
    for name, (attrs, _) in got.items():
        assert USES[name] in attrs, (name, attrs)
    # With SUBSCRIBED: both criteria must hold.
    c.ok("UNSUBSCRIBE Junk")
    assert set(c.listing('LIST (SPECIAL-USE SUBSCRIBED) "" "*"')) == set(USES) - {"Junk"}
    # The return option shows the attributes, and no more mailboxes.
    got = c.listing('LIST "" "%" RETURN (SPECIAL-USE)')
    assert set(got) == {n for n in ALL if "/" not in n}
    assert USES["Sent"] in got["Sent"][0] and got["Tofu"][0] == {b"\\HasNoChildren"}
    c.close()


def test_multiple_patterns(daemon):
    c = setup_tree(daemon)
    got = c.listing('LIST "" (INBOX "Fruit/%" Tofu)')
    assert set(got) == {"INBOX", "Fruit/Apple", "Fruit/Banana", "Tofu"}
    # A name matched by several patterns is listed once.
    assert set(c.listing('LIST "" ("Fruit/*" "*/Apple" "*e")')) == {
        "Fruit/Apple", "Fruit/Banana", "Vegetable", "Archive"}
    # The reference applies to every pattern.
    assert set(c.listing('LIST "Vegetable/" (Broccoli Co%)')) == {
        "Vegetable/Broccoli", "Vegetable/Corn"}
    # In the extended syntax "" is ignored, not a request for the delimiter.
    assert c.ok('LIST "" ("")') == []
    assert c.ok('LIST () "" ""') == []
    assert set(c.listing('LIST "" ("" Tofu)')) == {"Tofu"}
    # The basic syntax keeps its meaning.
    assert c.ok('LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    # With options and STATUS.
    unt = c.ok('LIST (SUBSCRIBED) "" (Vegetable* INBOX) RETURN (CHILDREN STATUS (MESSAGES))')
    assert unt == [b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
                   b"* STATUS INBOX (MESSAGES 0)",
                   b'* LIST (\\HasChildren \\Subscribed) "/" Vegetable',
                   b"* STATUS Vegetable (MESSAGES 0)",
                   b'* LIST (\\HasNoChildren \\Subscribed) "/" Vegetable/Broccoli',
                   b"* STATUS Vegetable/Broccoli (MESSAGES 0)"], unt
    c.close()


def test_errors(daemon):
    c = setup_tree(daemon)
    # RFC 5258 §3.1: RECURSIVEMATCH alone, or with REMOTE only, is BAD;
    # SPECIAL-USE is an independent option as well (RFC 6154 §6).
    c.bad('LIST (RECURSIVEMATCH) "" "*"')
    c.bad('LIST (REMOTE RECURSIVEMATCH) "" "*"')
    c.bad('LIST (SPECIAL-USE RECURSIVEMATCH) "" "*"')
    # Unknown options (§3: BAD), in either place.
    c.bad('LIST (FOO) "" "*"')
    c.bad('LIST (SUBSCRIBED X-BAR) "" "*"')
    c.bad('LIST "" "*" RETURN (FOO)')
    c.bad('LIST "" "*" RETURN (CHILDREN X-BAR)')
    # Options in the wrong place, or with values they do not take.
    c.bad('LIST (CHILDREN) "" "*"')
    c.bad('LIST "" "*" RETURN (RECURSIVEMATCH)')
    c.bad('LIST "" "*" RETURN (REMOTE)')
    c.bad('LIST (SUBSCRIBED (x)) "" "*"')
    c.bad('LIST "" "*" RETURN (CHILDREN (1 2))')
    c.bad('LIST "" "*" RETURN (STATUS)')
    c.bad('LIST "" "*" RETURN (STATUS (NOSUCH))')
    # Broken syntax.
    c.bad('LIST (SUBSCRIBED "" "*"')
    c.bad('LIST "" ("a" "b"')
    c.bad('LIST "" ()')
    c.bad('LIST "" "*" RETURN')
    c.bad('LIST "" "*" FOO (CHILDREN)')
    # LSUB has no extended syntax.
    c.bad('LSUB (SUBSCRIBED) "" "*"')
    c.bad('LSUB "" ("a" "b")')
    c.bad('LSUB "" "*" RETURN (CHILDREN)')
    # The session goes on.
    assert "Tofu" in c.listing('LIST "" "%"')
    c.close()


def test_create_special_use(daemon):
    c = Client(daemon)
    # RFC 6154 §3: the special use is given at creation ...
    c.ok("DELETE Archive")
    unt, tagged = c.cmd("CREATE Old/Mail (USE (\\Archive))")
    assert tagged.startswith(b"OK [MAILBOXID "), tagged
    got = c.listing('LIST "" "Old*"')
    assert got == {"Old": ({b"\\HasChildren"}, b""),
                   "Old/Mail": ({b"\\HasNoChildren", b"\\Archive"}, b"")}, got
    # ... several at once, in any case ...
    c.ok("DELETE Sent")
    c.ok("DELETE Drafts")
    c.ok("CREATE Outbox (USE (\\sent \\DRAFTS))")
    assert c.listing('LIST (SPECIAL-USE) "" "Outbox"') == {
        "Outbox": ({b"\\HasNoChildren", b"\\Sent", b"\\Drafts"}, b"")}
    # ... or none.
    c.ok("CREATE Plain (USE ())")
    assert c.listing('LIST "" "Plain"')["Plain"][0] == {b"\\HasNoChildren"}
    # A use another mailbox has, or one the store cannot give: NO
    # [USEATTR], and nothing is created.
    for cmd in ("CREATE Bin (USE (\\Trash))", "CREATE Everything (USE (\\All))",
                "CREATE Starred (USE (\\Flagged))", "CREATE Odd (USE (\\Nonsense))"):
        unt, tagged = c.cmd(cmd)
        assert tagged.startswith(b"NO [USEATTR]"), (cmd, tagged)
    assert set(c.listing('LIST "" "%"')) == {"INBOX", "Trash", "Junk", "Old", "Outbox",
                                             "Plain"}
    # Bad syntax, and parameters other than USE (RFC 4466 §2.2): BAD.
    for cmd in ("CREATE X (FOO (\\Trash))", "CREATE X (USE)", "CREATE X (USE \\Trash)",
                "CREATE X USE (\\Trash)", "CREATE X (USE (\\Trash)", "CREATE X ()",
                "CREATE X (USE (\\Trash)) extra"):
        c.bad(cmd)
    unt, tagged = c.cmd("CREATE Old/Mail (USE ())")
    assert tagged.startswith(b"NO [ALREADYEXISTS]"), tagged
    assert "X" not in c.listing('LIST "" "%"')
    # The POP3 side finds the new Trash too: the use is in the store.
    c.ok("DELETE Trash")
    c.ok("CREATE Papierkorb (USE (\\Trash))")
    assert c.listing('LIST (SPECIAL-USE) "" "Papierkorb"')["Papierkorb"][0] == {
        b"\\HasNoChildren", b"\\Trash"}
    c.close()
