"""
test_imap_sort.py - ESEARCH (RFC 4731), SEARCHRES (RFC 5182), SORT and
THREAD (RFC 5256) with imaplib: .sort() and .thread() where imaplib has
them, its _simple_command for the ESEARCH and "$" forms.

The messages are written here so every expected order can be worked out by
hand: RFC 2047 subjects and display names, Re:/Fwd:/[tag]/(fwd)/[Fwd: ...]
subject forms for the base subject rules (RFC 5256 §2.1), Date: fields in
several zones and one missing (the internal date stands in, §2.2), and a
conversation with replies, a missing parent, a duplicate Message-ID and
subject-only replies for THREAD REFERENCES (§4).
"""

import imaplib
import re
import time

import pytest


# ------------------------------------------------------------- helpers

def imap_login(daemon, user="alice"):
    return daemon.imap(user, daemon.password(user))


def ts(date):
    """Seconds since the epoch for 'YYYY-MM-DD HH:MM' UTC."""
    return time.mktime(time.strptime(date + " UTC", "%Y-%m-%d %H:%M %Z")) - time.timezone


def append(c, headers, arrival, body="Hello.\r\n", mailbox="INBOX"):
    msg = "".join("%s: %s\r\n" % kv for kv in headers) + "\r\n" + body
    typ, data = c.append(mailbox, None, imaplib.Time2Internaldate(ts(arrival)),
                         msg.encode())
    assert typ == "OK", data


def nums(resp):
    typ, data = resp
    assert typ == "OK", resp
    return [int(x) for chunk in data if chunk for x in chunk.split()]


def raw(c, *args):
    """Run a command imaplib has no helper for; (typ, tagged data, every
    untagged response by type)."""
    c.untagged_responses.clear()
    typ, data = c._simple_command(*args)
    untagged = {k: list(v) for k, v in c.untagged_responses.items()}
    c.untagged_responses.clear()
    return typ, data, untagged


def esearch(c, *args):
    """The one ESEARCH response of a SEARCH RETURN command, without its
    (TAG ...) correlator, which is checked."""
    typ, data, untagged = raw(c, *args)
    assert typ == "OK", (typ, data)
    assert "SEARCH" not in untagged, untagged
    resp = untagged.get("ESEARCH", [])
    assert len(resp) == 1, untagged
    line = resp[0].decode()
    m = re.match(r'\(TAG "([A-Z]+\d+)"\)(.*)$', line)
    assert m, line
    return m.group(2).strip()


def fetch_uids(c, seqset, uid=False):
    """{seq: uid} of the messages FETCH (or UID FETCH) SEQSET names."""
    if uid:
        typ, data = c.uid("FETCH", seqset, "(UID)")
    else:
        typ, data = c.fetch(seqset, "(UID)")
    assert typ == "OK", data
    out = {}
    for item in data:
        if item is None:
            continue
        m = re.match(rb"(\d+) \(UID (\d+)\)", item)
        assert m, item
        out[int(m.group(1))] = int(m.group(2))
    return out


# ------------------------------------------------------------- ESEARCH

@pytest.fixture
def five(daemon):
    """alice's INBOX with five messages whose UIDs are 2..6 (one was
    expunged first), 2, 3 and 5 \\Flagged, selected."""
    c = imap_login(daemon)
    for i in range(6):
        append(c, [("Subject", "m%d" % i), ("From", "x@example.com")],
               "2024-01-0%d 10:00" % (i + 1), body="body %d\r\n" % i)
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Deleted)")
    c.expunge()
    typ, _ = c.store("2,3,5", "+FLAGS", r"(\Flagged)")
    assert typ == "OK"
    assert fetch_uids(c, "1:*") == {1: 2, 2: 3, 3: 4, 4: 5, 5: 6}
    yield c
    try:
        c.logout()
    except Exception:
        pass


def test_capabilities(daemon):
    c = imap_login(daemon)
    caps = c.capabilities
    for cap in ("ESEARCH", "SEARCHRES", "SORT", "SORT=DISPLAY",
                "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"):
        assert cap in caps, caps
    c.logout()


def test_esearch_forms(five):
    c = five
    assert esearch(c, "SEARCH", "RETURN", "(MIN MAX ALL COUNT)", "FLAGGED") == \
        "MIN 2 MAX 5 ALL 2:3,5 COUNT 3"
    assert esearch(c, "SEARCH", "RETURN", "(MIN)", "FLAGGED") == "MIN 2"
    assert esearch(c, "SEARCH", "RETURN", "(MAX)", "FLAGGED") == "MAX 5"
    assert esearch(c, "SEARCH", "RETURN", "(COUNT)", "FLAGGED") == "COUNT 3"
    # RFC 4731 §3.1: an empty list means ALL.
    assert esearch(c, "SEARCH", "RETURN", "()", "FLAGGED") == "ALL 2:3,5"
    assert esearch(c, "SEARCH", "RETURN", "(ALL)", "ALL") == "ALL 1:5"
    # UID SEARCH: the UID indicator, and UIDs.
    assert esearch(c, "UID", "SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "FLAGGED") == \
        "UID MIN 3 MAX 6 ALL 3:4,6 COUNT 3"
    # A plain SEARCH still answers * SEARCH.
    assert nums(c.search(None, "FLAGGED")) == [2, 3, 5]


def test_esearch_empty_result(five):
    c = five
    # MIN, MAX and ALL are left out; COUNT is always there (RFC 4731 §3.1).
    assert esearch(c, "SEARCH", "RETURN", "(MIN MAX ALL COUNT)", "KEYWORD", "nosuch") == \
        "COUNT 0"
    assert esearch(c, "SEARCH", "RETURN", "(MIN MAX)", "KEYWORD", "nosuch") == ""
    assert esearch(c, "UID", "SEARCH", "RETURN", "()", "KEYWORD", "nosuch") == "UID"


def test_esearch_bad_option(five):
    with pytest.raises(imaplib.IMAP4.error):
        raw(five, "SEARCH", "RETURN", "(FIRST)", "ALL")
    with pytest.raises(imaplib.IMAP4.error):
        raw(five, "SEARCH", "RETURN", "MIN", "ALL")


# ------------------------------------------------------------- SEARCHRES

def test_save_then_dollar(five):
    c = five
    typ, data, untagged = raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    assert typ == "OK", data
    # SAVE alone asks for no result: no SEARCH and no ESEARCH response.
    assert "ESEARCH" not in untagged and "SEARCH" not in untagged, untagged
    assert fetch_uids(c, "$") == {2: 3, 3: 4, 5: 6}
    assert fetch_uids(c, "$", uid=True) == {2: 3, 3: 4, 5: 6}
    typ, data = c.store("$", "+FLAGS", r"(\Seen)")
    assert typ == "OK", data
    assert nums(c.search(None, "SEEN")) == [2, 3, 5]
    assert nums(c.uid("SEARCH", "UID", "$")) == [3, 4, 6]
    assert nums(c.uid("SEARCH", "$")) == [3, 4, 6]
    assert nums(c.search(None, "$", "SMALLER", "100000")) == [2, 3, 5]
    assert nums(c.search(None, "OR", "$", "1")) == [1, 2, 3, 5]
    assert nums(c.search(None, "NOT", "$")) == [1, 4]
    # "$" is the result of the last SAVE, as UIDs: the same messages for
    # UID commands and after a SEARCH that names them differently.
    typ, data, _ = raw(c, "UID", "SEARCH", "RETURN", "(SAVE)", "UID", "4:5")
    assert typ == "OK"
    assert fetch_uids(c, "$") == {3: 4, 4: 5}


def test_save_with_min_max(five):
    c = five
    # RFC 5182 §2.4: SAVE with MIN and/or MAX saves only those.
    assert esearch(c, "SEARCH", "RETURN", "(SAVE MIN)", "FLAGGED") == "MIN 2"
    assert sorted(fetch_uids(c, "$")) == [2]
    assert esearch(c, "SEARCH", "RETURN", "(MAX SAVE)", "FLAGGED") == "MAX 5"
    assert sorted(fetch_uids(c, "$")) == [5]
    assert esearch(c, "SEARCH", "RETURN", "(MIN SAVE MAX)", "FLAGGED") == "MIN 2 MAX 5"
    assert sorted(fetch_uids(c, "$")) == [2, 5]
    # ... with ALL or COUNT, everything found.
    assert esearch(c, "SEARCH", "RETURN", "(SAVE MIN COUNT)", "FLAGGED") == "MIN 2 COUNT 3"
    assert sorted(fetch_uids(c, "$")) == [2, 3, 5]
    assert esearch(c, "SEARCH", "RETURN", "(SAVE ALL)", "FLAGGED") == "ALL 2:3,5"
    assert sorted(fetch_uids(c, "$")) == [2, 3, 5]
    # One match: MIN and MAX are one message.
    assert esearch(c, "SEARCH", "RETURN", "(SAVE MIN MAX)", "4") == "MIN 4 MAX 4"
    assert sorted(fetch_uids(c, "$")) == [4]


def test_dollar_after_expunge(five):
    c = five
    typ, _, _ = raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    assert typ == "OK"
    c.store("2", "+FLAGS", r"(\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"2"], data
    # UID 3 is gone from the result; 4 and 6 are now messages 2 and 4.
    assert fetch_uids(c, "$") == {2: 4, 4: 6}
    assert nums(c.search(None, "$")) == [2, 4]
    assert nums(c.uid("SEARCH", "$")) == [4, 6]


def test_dollar_copy_and_move(five):
    c = five
    assert c.create("Kept")[0] == "OK"
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    typ, data = c.copy("$", "Kept")
    assert typ == "OK", data
    typ, data = c._simple_command("MOVE", "$", "Kept")
    assert typ == "OK", data
    c.select("Kept")
    assert nums(c.search(None, "ALL")) == [1, 2, 3, 4, 5, 6]
    # A new SELECT empties "$": FETCH $ answers OK with nothing.
    typ, data = c.fetch("$", "(UID)")
    assert typ == "OK" and data == [None], data


def test_failed_search_and_reset(five):
    c = five
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    # A BAD SEARCH leaves "$" alone (RFC 5182 §2.1).
    with pytest.raises(imaplib.IMAP4.error):
        raw(c, "SEARCH", "RETURN", "(SAVE)", "NOSUCHKEY")
    assert sorted(fetch_uids(c, "$")) == [2, 3, 5]
    # A SEARCH with SAVE that fails with NO empties it.
    typ, data, _ = raw(c, "SEARCH", "RETURN", "(SAVE)", "CHARSET", "KOI8-R", "ALL")
    assert typ == "NO" and b"[BADCHARSET" in data[0], data
    assert fetch_uids(c, "$") == {}
    typ, data = c.store("$", "+FLAGS", r"(\Answered)")
    assert typ == "OK", data
    assert nums(c.search(None, "ANSWERED")) == []
    # UNSELECT and CLOSE reset it too.
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    assert sorted(fetch_uids(c, "$")) == [2, 3, 5]
    c._simple_command("UNSELECT")
    c.select("INBOX")
    assert fetch_uids(c, "$") == {}
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    c.close()
    c.select("INBOX", readonly=True)
    assert fetch_uids(c, "$") == {}


def test_dollar_by_another_session_expunge(daemon, five):
    c = five
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FLAGGED")
    d = imap_login(daemon)
    d.select("INBOX")
    d.store("3", "+FLAGS", r"(\Deleted)")   # UID 4
    d.expunge()
    d.logout()
    c.noop()                                 # learns of the expunge
    assert fetch_uids(c, "$") == {2: 3, 4: 6}


# ------------------------------------------------------------- SORT

SORT_MSGS = [
    # (headers, arrival)
    ([("Subject", "Re: Banana"), ("From", "Zed Zulu <zed@example.com>"),
      ("To", "amy@example.org"), ("Cc", "carl@example.org"),
      ("Date", "Tue, 02 Jan 2024 10:00:00 +0000")], "2024-03-03 12:00"),
    ([("Subject", "=?UTF-8?Q?apple_pie?="),
      ("From", "=?ISO-8859-1?Q?Bj=F6rn?= <bob@example.com>"),
      ("To", "Bea <bea@example.org>"),
      ("Date", "Tue, 2 Jan 2024 09:00:00 -0200")], "2024-03-01 12:00"),
    ([("Subject", "[list] Fwd: cherry"), ("From", "carol@example.com"),
      ("Cc", "abe@example.org")], "2023-12-31 12:00"),
    ([("Subject", "[Fwd: Re: banana]"), ("From", "Adam Ant <adam@example.com>"),
      ("To", "cat@example.org"),
      ("Date", "1 Jan 2024 23:00:00 -0300")], "2024-03-04 12:00"),
    ([("Subject", "apple  pie (fwd)"), ("From", "bob@example.com"),
      ("To", "Dan <dan@example.org>"),
      ("Date", "Tue, 02 Jan 2024 10:30:00 GMT")], "2024-03-02 12:00"),
    ([("From", "Mallory <a@example.com>"), ("To", "amy@example.org"),
      ("Date", "Wed, 03 Jan 2024 00:00:00 +0000")], "2024-03-05 12:00"),
]


@pytest.fixture
def sortbox(daemon):
    c = imap_login(daemon)
    for i, (headers, arrival) in enumerate(SORT_MSGS):
        append(c, headers, arrival, body="x" * (7 * ((i * 5) % 6) + 1) + "\r\n")
    c.select("INBOX")
    yield c
    try:
        c.logout()
    except Exception:
        pass


def sort(c, criteria, *keys, charset="UTF-8"):
    return nums(c.sort(criteria, charset, *(keys or ("ALL",))))


@pytest.mark.parametrize("criteria,expected", [
    # Base subjects: BANANA, APPLE PIE, CHERRY, BANANA, APPLE PIE, "".
    ("(SUBJECT)", [6, 2, 5, 1, 4, 3]),
    ("(REVERSE SUBJECT)", [3, 1, 4, 2, 5, 6]),
    ("(SUBJECT DATE)", [6, 5, 2, 4, 1, 3]),
    ("(SUBJECT REVERSE DATE)", [6, 2, 5, 1, 4, 3]),
    # Sent dates in UTC; message 3 has none and uses its internal date.
    ("(DATE)", [3, 4, 1, 5, 2, 6]),
    ("(REVERSE DATE)", [6, 2, 5, 1, 4, 3]),
    ("(ARRIVAL)", [3, 2, 5, 1, 4, 6]),
    ("(REVERSE ARRIVAL)", [6, 4, 1, 5, 2, 3]),
    # addr-mailbox of the first address: a, adam, bob, bob, carol, zed.
    ("(FROM)", [6, 4, 2, 5, 3, 1]),
    # REVERSE does not reverse the sequence-number tie-breaker (§3).
    ("(REVERSE FROM)", [1, 3, 2, 5, 4, 6]),
    ("(FROM REVERSE ARRIVAL)", [6, 4, 5, 2, 3, 1]),
    # No To: is the empty string, which sorts first.
    ("(TO)", [3, 1, 6, 2, 4, 5]),
    ("(CC)", [2, 4, 5, 6, 3, 1]),
    ("(CC FROM)", [6, 4, 2, 5, 3, 1]),
    # RFC 5957: display names (RFC 2047 decoded), else the address.
    ("(DISPLAYFROM)", [4, 2, 5, 3, 6, 1]),
    ("(DISPLAYTO)", [3, 1, 6, 2, 4, 5]),
])
def test_sort_criteria(sortbox, criteria, expected):
    assert sort(sortbox, criteria) == expected


def test_sort_size(sortbox):
    c = sortbox
    typ, data = c.fetch("1:*", "(RFC822.SIZE)")
    sizes = {}
    for item in data:
        m = re.match(rb"(\d+) \(RFC822.SIZE (\d+)\)", item)
        sizes[int(m.group(1))] = int(m.group(2))
    expected = sorted(sizes, key=lambda s: (sizes[s], s))
    assert sort(c, "(SIZE)") == expected
    assert sort(c, "(REVERSE SIZE)") == sorted(sizes, key=lambda s: (-sizes[s], s))


def test_sort_with_search_keys_and_uid(sortbox):
    c = sortbox
    assert sort(c, "(SUBJECT)", "FROM", "bob") == [2, 5]
    assert sort(c, "(DATE)", "NOT", "FROM", "bob") == [3, 4, 1, 6]
    assert sort(c, "(SUBJECT)", "TEXT", '"not in mailbox"', charset="US-ASCII") == []
    typ, data = c.sort("(SUBJECT)", "UTF-8", "TEXT", '"not in mailbox"')
    assert typ == "OK" and data == [b""], data     # a bare "* SORT"
    # UID SORT answers UIDs; its search keys still take sequence numbers.
    c.store("1", "+FLAGS", r"(\Deleted)")
    c.expunge()
    assert nums(c.uid("SORT", "(DATE)", "UTF-8", "ALL")) == [3, 4, 5, 2, 6]
    assert nums(c.uid("SORT", "(DATE)", "UTF-8", "1:2")) == [3, 2]
    assert sort(c, "(DATE)") == [2, 3, 4, 1, 5]


def test_sort_saved_result(sortbox):
    c = sortbox
    raw(c, "SEARCH", "RETURN", "(SAVE)", "FROM", "bob")
    assert sort(c, "(REVERSE DATE)", "$") == [2, 5]


def test_sort_errors(sortbox):
    c = sortbox
    for args in (("(FOO)", "UTF-8", "ALL"), ("()", "UTF-8", "ALL"),
                 ("(REVERSE)", "UTF-8", "ALL"), ("(REVERSE REVERSE DATE)", "UTF-8", "ALL"),
                 ("SUBJECT", "UTF-8", "ALL"), ("(SUBJECT)", "ALL"),
                 ("(SUBJECT)", "UTF-8"), ("(SUBJECT", "UTF-8", "ALL"),
                 ("(SUBJECT)", "UTF-8", "NOSUCHKEY")):
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("SORT", *args)
    typ, data = c._simple_command("SORT", "(SUBJECT)", "KOI8-R", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET"), data
    # The session goes on.
    assert sort(c, "(ARRIVAL)") == [3, 2, 5, 1, 4, 6]


def test_sort_not_selected(daemon):
    c = imap_login(daemon)
    with pytest.raises(imaplib.IMAP4.error):
        c._simple_command("SORT", "(DATE)", "UTF-8", "ALL")
    c.logout()


# ------------------------------------------------------------- THREAD

def mid(x):
    return "<%s@example.net>" % x


CONVERSATION = [
    # seq 1..12: (Message-ID, subject, date, extra headers)
    ("a", "Party", "10:00", []),
    ("b", "Re: Party", "11:00", [("References", mid("a"))]),
    ("c", "Re: Party", "12:00", [("References", mid("a") + "\r\n " + mid("b"))]),
    ("d", "Re: Party", "10:30", [("In-Reply-To", mid("a") + " (Ann's message)")]),
    ("e", "Re: Lost", "09:00", [("References", mid("missing"))]),
    ("f", "RE: lost", "09:30", [("References", '<"missing"@example.net>')]),
    ("g", "Weather", "08:00", []),
    ("h", "Re: Weather", "13:00", []),
    ("i", "Dinner", "14:00", []),
    ("j", "Dinner", "15:00", []),
    ("k", "Re: Deep", "17:00", [("References", mid("q1") + " " + mid("q2"))]),
    ("a", "Party", "16:00", []),                   # a duplicate Message-ID
]


@pytest.fixture
def threadbox(daemon):
    """The conversation in alice's INBOX with UIDs one above the sequence
    numbers (a first message was expunged), selected."""
    c = imap_login(daemon)
    append(c, [("Subject", "gone")], "2024-01-01 00:00")
    for m, subject, at, extra in CONVERSATION:
        headers = [("From", "someone@example.com"), ("Subject", subject),
                   ("Message-ID", mid(m)),
                   ("Date", "Mon, 1 Jan 2024 %s:00 +0000" % at)] + extra
        append(c, headers, "2024-02-01 00:00")
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Deleted)")
    c.expunge()
    yield c
    try:
        c.logout()
    except Exception:
        pass


def thread(c, alg, *keys, uid=False, charset="UTF-8"):
    if uid:
        typ, data = c.uid("THREAD", alg, charset, *(keys or ("ALL",)))
    else:
        typ, data = c.thread(alg, charset, *(keys or ("ALL",)))
    assert typ == "OK", data
    assert len(data) == 1, data
    return (data[0] or b"").decode()


def test_thread_orderedsubject(threadbox):
    # Threads by base subject, in order of their first message's date;
    # the first message is the parent of all the others (§4).
    assert thread(threadbox, "ORDEREDSUBJECT") == \
        "(7 8)(5 6)(1 (4)(2)(3)(12))(9 10)(11)"
    assert thread(threadbox, "ORDEREDSUBJECT", uid=True) == \
        "(8 9)(6 7)(2 (5)(3)(4)(13))(10 11)(12)"


def test_thread_references(threadbox):
    # 2 and 4 reply to 1 (4 by In-Reply-To), 3 to 2; 5 and 6 share a
    # parent that is not there (one quoted differently), so a dummy holds
    # them; 11's parents are missing and it stands alone; 8 joins 7 by
    # subject as a reply; 9 and 10, and 1 and 12 (whose Message-ID is a
    # duplicate, so it is given a unique one), share subjects without
    # being replies: a dummy holds each pair.
    assert thread(threadbox, "REFERENCES") == \
        "(7 8)((5)(6))((1 (4)(2 3))(12))((9)(10))(11)"
    assert thread(threadbox, "REFERENCES", uid=True) == \
        "(8 9)((6)(7))((2 (5)(3 4))(13))((10)(11))(12)"


def test_thread_with_search_keys(threadbox):
    c = threadbox
    # Only the messages found are threaded: without 1, its replies hang
    # from a dummy, and 12, the first found with Message-ID a, takes its
    # place (§4 step 1.A).
    assert thread(c, "REFERENCES", "NOT", "1") == "(7 8)((5)(6))((9)(10))(12 (4)(2 3))(11)"
    assert thread(c, "REFERENCES", "2:4") == "((4)(2 3))"
    assert thread(c, "ORDEREDSUBJECT", "SUBJECT", "gewp", charset="US-ASCII") == ""


def test_thread_loop_and_self_reference(daemon):
    c = imap_login(daemon)
    # X and Y name each other as parent; Z references itself.
    append(c, [("Subject", "Loop"), ("Message-ID", mid("x")), ("References", mid("y")),
               ("Date", "Mon, 1 Jan 2024 10:00:00 +0000")], "2024-02-01 00:00")
    append(c, [("Subject", "Re: Loop"), ("Message-ID", mid("y")), ("References", mid("x")),
               ("Date", "Mon, 1 Jan 2024 11:00:00 +0000")], "2024-02-01 00:00")
    append(c, [("Subject", "Self"), ("Message-ID", mid("z")),
               ("References", mid("z") + " " + mid("z")),
               ("Date", "Mon, 1 Jan 2024 12:00:00 +0000")], "2024-02-01 00:00")
    append(c, [("Subject", "No id at all")], "2024-02-02 00:00")
    c.select("INBOX")
    assert thread(c, "REFERENCES") == "(2 1)(3)(4)"
    c.logout()


def test_thread_long_chain(daemon):
    """A reply chain of 300 messages, delivered newest first: deep trees
    are walked without recursion, and the answer is one flat list."""
    c = imap_login(daemon)
    n = 300
    for i in reversed(range(n)):
        refs = " ".join(mid("chain%d" % k) for k in range(max(0, i - 5), i))
        headers = [("Subject", "Re: chain" if i else "chain"), ("Message-ID", mid("chain%d" % i)),
                   ("Date", "Mon, 1 Jan 2024 00:00:00 +0000")]
        if refs:
            headers.append(("References", refs))
        append(c, headers, "2024-02-01 00:00")
    c.select("INBOX")
    got = thread(c, "REFERENCES")
    assert got == "(" + " ".join(str(n - i) for i in range(n)) + ")"
    c.logout()


def test_thread_errors(threadbox):
    c = threadbox
    for args in (("FOO", "UTF-8", "ALL"), ("REFERENCES", "UTF-8"),
                 ("REFERENCES",), ("(REFERENCES)", "UTF-8", "ALL")):
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("THREAD", *args)
    typ, data = c._simple_command("THREAD", "REFERENCES", "KOI8-R", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET"), data


def test_base_subject_forms(daemon):
    """RFC 5256 §2.1: every form below has the base subject "hello" and so
    joins one ORDEREDSUBJECT thread; the last three do not."""
    same = ["hello", "Re: hello", "RE: Re: hello", "Re[2]: hello", "Fwd: hello",
            "fw: hello", "[list] Re: hello", "Re: [list] hello", "[Fwd: hello]",
            "hello (fwd)", "  hello  ", "=?utf-8?q?Re=3A_HELLO?=", "Re:\thello"]
    other = ["[hello]", "Re: hello world", "Regarding hello"]
    c = imap_login(daemon)
    for i, subject in enumerate(same + other):
        append(c, [("Subject", subject),
                   ("Date", "Mon, 1 Jan 2024 %02d:00:00 +0000" % i)], "2024-02-01 00:00")
    c.select("INBOX")
    n = len(same)
    expected = "(1 " + "".join("(%d)" % i for i in range(2, n + 1)) + ")" + \
        "".join("(%d)" % i for i in range(n + 1, n + len(other) + 1))
    assert thread(c, "ORDEREDSUBJECT") == expected
    # The same base subject sorts together, by sequence number within.
    got = sort(c, "(SUBJECT)")
    assert got[:n] == list(range(1, n + 1)) and sorted(got[n:]) == [14, 15, 16]
    c.logout()
