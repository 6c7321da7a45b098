"""
test_imap_search.py - SEARCH and UID SEARCH (RFC 3501 §6.4.4, §7.2.5) with
imaplib against a mailbox filled over LMTP with messages written here:
plain ASCII, an RFC 2047 subject and sender with non-ASCII text and a base64
body, a quoted-printable Latin-1 part beside a base64 image, a forwarded
message/rfc822 without a Date: field, and a message with an empty field.

Every key is tried with messages that match and messages that do not;
OR/NOT/parentheses, sequence and UID sets, CHARSET and BADCHARSET too.
Date semantics (documented in protocols/imap/imap_cmd_search.c): internal
dates compare by their UTC day; SENT* compare the Date: field's date as
written, falling back to the internal date when there is none.
"""

import base64
import datetime
import imaplib
import re

import pytest

from conftest import lmtp_send


# ------------------------------------------------------------- helpers

def imap_login(daemon, user="alice"):
    return daemon.imap(user, daemon.password(user))


def deliver(daemon, rcpt, msg):
    with daemon.lmtp() as l:
        _, _, data = lmtp_send(l, "sender@example.net", [rcpt], msg)
    assert data[rcpt][0] == 250, data


def nums(resp):
    """The numbers of a search() answer, as a list of ints."""
    typ, data = resp
    assert typ == "OK", resp
    out = []
    for chunk in data:
        if chunk:
            out += [int(x) for x in chunk.split()]
    return out


def imap_date(d):
    return d.strftime("%d-%b-%Y")


def b64(text, charset="utf-8"):
    return base64.b64encode(text.encode(charset)).decode("ascii")


def wrap76(s):
    return "\r\n".join(s[i:i + 76] for i in range(0, len(s), 76))


M1 = (
    "From: \"Alice Example\" <alice@example.com>\r\n"
    "To: bob@example.org\r\n"
    "Cc: carol@example.net\r\n"
    "Subject: Quarterly report\r\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    "X-Tracker: alpha\r\n"
    "Message-ID: <m1@example.com>\r\n"
    "\r\n"
    "The numbers look good.\r\n"
    "zebra-one\r\n").encode()

M2 = (
    "From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>\r\n"
    "To: alice@example.com\r\n"
    "Subject: =?UTF-8?B?" + b64("Grüße aus München") + "?=\r\n"
    "Date: Fri, 15 Mar 2024 23:30:00 -0500\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    + wrap76(b64("Schöne Grüße vom Bodensee\nkiwi-two\n")) + "\r\n").encode()

M3 = (
    "From: Carol <carol@example.net>\r\n"
    "To: alice@example.com\r\n"
    "Bcc: dave@example.com\r\n"
    "Subject: Menu\r\n"
    "Date: 15 Jun 99 12:00 EST\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    "\r\n"
    "--XX\r\n"
    "Content-Type: text/plain; charset=iso-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Caf=E9 cr=E8me br=FBl=E9e, soft=\r\n"
    "break here\r\n"
    "--XX\r\n"
    "Content-Type: image/png\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    + b64("kiwi-secret binary data") + "\r\n"
    "--XX--\r\n").encode()

M4 = (
    "From: dave@example.com\r\n"
    "To: alice@example.com\r\n"
    "Subject: Fwd: inner\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"YY\"\r\n"
    "\r\n"
    "--YY\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "See attached.\r\n"
    + "padding line of forty characters xxxxxx\r\n" * 150 +
    "--YY\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "From: eve@example.com\r\n"
    "Subject: Inner subject\r\n"
    "Date: Wed, 10 Apr 2024 09:00:00 +0000\r\n"
    "\r\n"
    "nested-walrus lives here\r\n"
    "--YY--\r\n").encode()

M5 = (
    "From: Frank <frank@example.com>\r\n"
    "To: \"Bob\" <bob@example.org>\r\n"
    "Subject: lowercase REPORT mention\r\n"
    "Date: Tue, 2 Jul 2024 08:00:00 +0200\r\n"
    "X-Tracker: beta\r\n"
    "X-Empty:\r\n"
    "\r\n"
    "Nothing much.\r\n").encode()


@pytest.fixture
def box(daemon):
    """alice's INBOX with M1..M5 (sequence numbers 1..5), flags set, and a
    session that has it selected (and so holds the \\Recent claim)."""
    for m in (M1, M2, M3, M4, M5):
        deliver(daemon, "alice@example.com", m)
    c = imap_login(daemon)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"5"], data
    for seq, flags in (("1", r"(\Seen \Answered)"), ("2", r"(\Flagged \Draft)"),
                       ("3", r"(\Deleted)"), ("5", "($Important)")):
        typ, _ = c.store(seq, "+FLAGS.SILENT", flags)
        assert typ == "OK"
    yield c
    try:
        c.logout()
    except Exception:
        pass


def search(c, *keys, charset=None, literal=None):
    if literal is not None:
        c.literal = literal
    return nums(c.search(charset, *keys))


# ---------------------------------------------------------------- tests

def test_flag_keys(box):
    c = box
    assert search(c, "ALL") == [1, 2, 3, 4, 5]
    assert search(c, "SEEN") == [1]
    assert search(c, "UNSEEN") == [2, 3, 4, 5]
    assert search(c, "ANSWERED") == [1]
    assert search(c, "UNANSWERED") == [2, 3, 4, 5]
    assert search(c, "FLAGGED") == [2]
    assert search(c, "UNFLAGGED") == [1, 3, 4, 5]
    assert search(c, "DRAFT") == [2]
    assert search(c, "UNDRAFT") == [1, 3, 4, 5]
    assert search(c, "DELETED") == [3]
    assert search(c, "UNDELETED") == [1, 2, 4, 5]
    assert search(c, "KEYWORD", "$Important") == [5]
    assert search(c, "KEYWORD", "$important") == [5]   # keywords ignore case
    assert search(c, "UNKEYWORD", "$Important") == [1, 2, 3, 4]
    assert search(c, "KEYWORD", "$Nothing") == []
    assert search(c, "UNKEYWORD", "$Nothing") == [1, 2, 3, 4, 5]


def test_recent_new_old(daemon, box):
    c = box
    # This session selected first: every message is \Recent to it.
    assert search(c, "RECENT") == [1, 2, 3, 4, 5]
    assert search(c, "NEW") == [2, 3, 4, 5]
    assert search(c, "OLD") == []
    c2 = imap_login(daemon)
    try:
        c2.select("INBOX")
        assert search(c2, "RECENT") == []
        assert search(c2, "NEW") == []
        assert search(c2, "OLD") == [1, 2, 3, 4, 5]
    finally:
        c2.logout()


def test_size_keys(box):
    c = box
    typ, data = c.fetch("1:5", "(RFC822.SIZE)")
    assert typ == "OK"
    sizes = {}
    for line in data:
        m = re.match(rb"(\d+) \(RFC822\.SIZE (\d+)\)", line)
        sizes[int(m.group(1))] = int(m.group(2))
    assert sizes[4] > 5000 > max(sizes[i] for i in (1, 2, 3, 5))
    assert search(c, "LARGER", "5000") == [4]
    assert search(c, "SMALLER", "5000") == [1, 2, 3, 5]
    # Both are strict comparisons.
    assert 1 not in search(c, "LARGER", str(sizes[1]))
    assert 1 in search(c, "LARGER", str(sizes[1] - 1))
    assert 1 not in search(c, "SMALLER", str(sizes[1]))
    assert 1 in search(c, "SMALLER", str(sizes[1] + 1))


def test_address_and_subject_keys(box):
    c = box
    assert search(c, "FROM", "alice@example.com") == [1]
    assert search(c, "FROM", '"Alice Example"') == [1]     # display names count
    assert search(c, "FROM", "CAROL") == [3]
    assert search(c, "FROM", "nobody") == []
    assert search(c, "TO", "bob") == [1, 5]
    assert search(c, "TO", "alice@example.com") == [2, 3, 4]
    assert search(c, "CC", "carol@") == [1]
    assert search(c, "CC", "dave") == []
    assert search(c, "BCC", "dave") == [3]
    assert search(c, "BCC", "carol") == []
    assert search(c, "SUBJECT", "report") == [1, 5]
    assert search(c, "SUBJECT", "Menu") == [3]
    assert search(c, "SUBJECT", "nothing-like-this") == []
    # The encapsulated message's subject is not the message's subject.
    assert search(c, "SUBJECT", '"Inner subject"') == []


def test_rfc2047_header_text_with_utf8_literal(box):
    c = box
    assert search(c, "SUBJECT", charset="UTF-8", literal="Grüße".encode()) == [2]
    assert search(c, "SUBJECT", charset="UTF-8", literal="MÜNCHEN".encode()) == [2]
    assert search(c, "FROM", charset="UTF-8", literal="jörg müller".encode()) == [2]
    assert search(c, "SUBJECT", charset="UTF-8", literal="Grüße aus Berlin".encode()) == []
    # The encoded form itself is not the text.
    assert search(c, "SUBJECT", "=?UTF-8?B?") == []


def test_header_key(box):
    c = box
    assert search(c, "HEADER", "X-Tracker", "alpha") == [1]
    assert search(c, "HEADER", "x-tracker", "BETA") == [5]
    # An empty string matches every message that has the field.
    assert search(c, "HEADER", "X-Tracker", '""') == [1, 5]
    assert search(c, "HEADER", "X-Empty", '""') == [5]
    assert search(c, "HEADER", "X-Empty", "x") == []
    assert search(c, "HEADER", "X-Missing", '""') == []
    assert search(c, "HEADER", "Message-ID", "m1@example") == [1]


def test_body_and_text_keys(box):
    c = box
    assert search(c, "BODY", "zebra-one") == [1]
    # base64, UTF-8
    assert search(c, "BODY", charset="UTF-8", literal="grüße vom".encode()) == [2]
    # quoted-printable, ISO-8859-1, soft line break, case folding
    assert search(c, "BODY", charset="UTF-8", literal="CAFÉ CRÈME".encode()) == [3]
    assert search(c, "BODY", "softbreak") == [3]
    # Only text parts count: the image holds "kiwi-secret".
    assert search(c, "BODY", "kiwi") == [2]
    assert search(c, "BODY", "kiwi-secret") == []
    # A header is not the body ...
    assert search(c, "BODY", "Quarterly") == []
    # ... but an encapsulated message's header and body are.
    assert search(c, "BODY", "nested-walrus") == [4]
    assert search(c, "BODY", "eve@example.com") == [4]
    # TEXT is header and body.
    assert search(c, "TEXT", "Quarterly") == [1]
    assert search(c, "TEXT", "zebra-ONE") == [1]
    assert search(c, "TEXT", '"Inner subject"') == [4]
    assert search(c, "TEXT", charset="UTF-8", literal="münchen".encode()) == [2]
    assert search(c, "TEXT", "absent-everywhere") == []


def test_internal_date_keys(box):
    c = box
    today = datetime.datetime.now(datetime.timezone.utc).date()
    day = datetime.timedelta(days=1)
    # Delivered just now; allow for the day turning during the test.
    on_today = search(c, "ON", imap_date(today))
    assert on_today in ([1, 2, 3, 4, 5], [])
    if on_today:
        assert search(c, "SINCE", imap_date(today)) == [1, 2, 3, 4, 5]
        assert search(c, "BEFORE", imap_date(today)) == []
        assert search(c, "BEFORE", imap_date(today + day)) == [1, 2, 3, 4, 5]
        assert search(c, "SINCE", imap_date(today + day)) == []
        assert search(c, "ON", imap_date(today - day)) == []


def test_internal_date_from_append(daemon):
    """APPEND with a date puts the internal date where SEARCH finds it; a
    zone pushes the instant to the next UTC day."""
    c = imap_login(daemon)
    try:
        msg = b"Subject: dated\r\n\r\nbody\r\n"
        for d in ('"01-Feb-2020 12:00:00 +0000"', '"01-Feb-2020 23:30:00 -0500"',
                  '"10-Mar-2021 00:10:00 +0100"'):
            typ, data = c.append("INBOX", None, d, msg)
            assert typ == "OK", data
        c.select("INBOX")
        assert search(c, "ON", "1-Feb-2020") == [1]
        assert search(c, "ON", "2-Feb-2020") == [2]          # 04:30 UTC
        assert search(c, "ON", "9-Mar-2021") == [3]          # 23:10 UTC
        assert search(c, "BEFORE", "2-Feb-2020") == [1]
        assert search(c, "SINCE", "2-Feb-2020") == [2, 3]
        assert search(c, "SINCE", "11-Mar-2021") == []
        assert search(c, "BEFORE", "1-Feb-2020") == []
    finally:
        c.logout()


def test_sent_date_keys(box):
    c = box
    today = datetime.datetime.now(datetime.timezone.utc).date()
    # M2's Date: is 15 Mar 2024 23:30 -0500: the date as written counts,
    # not the UTC one (16 Mar).
    assert search(c, "SENTON", "15-Mar-2024") == [2]
    assert search(c, "SENTON", "16-Mar-2024") == []
    assert search(c, "SENTON", "1-Jan-2024") == [1]
    assert search(c, "SENTON", "15-Jun-1999") == [3]    # two-digit year, EST
    assert search(c, "SENTON", "2-Jul-2024") == [5]
    assert search(c, "SENTBEFORE", "1-Jan-2024") == [3]
    assert search(c, "SENTBEFORE", "2-Jan-2024") == [1, 3]
    assert search(c, "SENTSINCE", "2-Jul-2024") == [4, 5] if today >= datetime.date(2024, 7, 2) \
        else [5]
    assert search(c, "SENTSINCE", "3-Jul-2024") == ([4] if today >= datetime.date(2024, 7, 3) else [])
    # M4 has no Date: its internal date stands in.
    found = search(c, "SENTON", imap_date(today))
    assert found in ([4], [])


def test_sequence_and_uid_sets(box):
    c = box
    typ, data = c.fetch("1:5", "(UID)")
    uids = [int(re.search(rb"UID (\d+)", x).group(1)) for x in data]
    assert uids == sorted(uids)
    assert search(c, "2:4") == [2, 3, 4]
    assert search(c, "4:2") == [2, 3, 4]
    assert search(c, "*") == [5]
    assert search(c, "1,3:*") == [1, 3, 4, 5]
    assert search(c, "2:4", "UNSEEN") == [2, 3, 4]
    assert search(c, "1:3", "SEEN") == [1]
    assert search(c, "UID", "%d:%d" % (uids[1], uids[2])) == [2, 3]
    assert search(c, "UID", "%d" % uids[4]) == [5]
    assert search(c, "UID", "%d:*" % (uids[4] + 100)) == [5]    # * is the highest
    assert search(c, "UID", "%d" % (uids[4] + 100)) == []
    # UID SEARCH answers with UIDs.
    assert nums(c.uid("SEARCH", "ALL")) == uids
    assert nums(c.uid("SEARCH", "UNSEEN")) == uids[1:]
    assert nums(c.uid("SEARCH", "2:3")) == uids[1:3]
    assert nums(c.uid("SEARCH", "UID", "%d,%d" % (uids[0], uids[3]))) == [uids[0], uids[3]]
    assert nums(c.uid("SEARCH", "BODY", "nothing-here")) == []


def test_or_not_and_groups(box):
    c = box
    assert search(c, "OR", "SEEN", "FLAGGED") == [1, 2]
    assert search(c, "NOT", "SEEN") == [2, 3, 4, 5]
    assert search(c, "NOT", "NOT", "SEEN") == [1]
    assert search(c, "NOT", "(OR", "DELETED", "SEEN)") == [2, 4, 5]
    assert search(c, "(OR", "SEEN", "(FLAGGED", "DRAFT))", "NOT", "1") == [2]
    assert search(c, "OR", "(SUBJECT", "report)", "(BODY", "kiwi)") == [1, 2, 5]
    assert search(c, "OR", "OR", "SEEN", "DELETED", "KEYWORD", "$Important") == [1, 3, 5]
    assert search(c, "(SEEN", "ANSWERED)", "FROM", "alice") == [1]
    assert search(c, "SEEN", "UNSEEN") == []
    assert search(c, "(((ALL)))") == [1, 2, 3, 4, 5]
    assert search(c, "NOT", "BODY", "kiwi", "UNSEEN") == [3, 4, 5]


def test_charsets(box):
    c = box
    assert search(c, "ALL", charset="UTF-8") == [1, 2, 3, 4, 5]
    assert search(c, "SUBJECT", "Menu", charset="US-ASCII") == [3]
    assert search(c, "SUBJECT", "Menu", charset="us-ascii") == [3]
    typ, data = c.search("KOI8-R", "ALL")
    assert typ == "NO"
    assert b"[BADCHARSET (UTF-8 US-ASCII)]" in data[0]
    # The session goes on.
    assert search(c, "SEEN") == [1]


def test_bad_searches(box):
    c = box
    for keys in (("FOO",), ("SUBJECT",), ("OR", "SEEN"), ("(SEEN",), ("BEFORE", "32-Jan-2024"),
                 ("LARGER", "x"), ("NOT",)):
        with pytest.raises(imaplib.IMAP4.error):
            c.search(None, *keys)
    assert search(c, "SEEN") == [1]


def test_search_needs_selected_state(daemon):
    c = imap_login(daemon)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("SEARCH", "ALL")
    finally:
        c.logout()


def test_search_sees_other_sessions_flags(daemon, box):
    c = box
    c2 = imap_login(daemon)
    try:
        c2.select("INBOX")
        typ, _ = c2.store("4", "+FLAGS", r"(\Flagged)")
        assert typ == "OK"
    finally:
        c2.logout()
    assert search(c, "FLAGGED") == [2, 4]


def test_many_messages_in_slices(daemon):
    """More messages than one read slice (200) with a body key, so the walk
    crosses slice boundaries; every 50th message holds the needle."""
    with daemon.lmtp() as l:
        for i in range(1, 451):
            body = "needle-%d\r\n" % i if i % 50 == 0 else "hay %d\r\n" % i
            msg = ("Subject: bulk %d\r\n\r\n%s" % (i, body)).encode()
            _, _, data = lmtp_send(l, "s@example.net", ["alice@example.com"], msg)
            assert data["alice@example.com"][0] == 250
    c = imap_login(daemon)
    try:
        c.select("INBOX")
        assert search(c, "BODY", "needle") == list(range(50, 451, 50))
        assert search(c, "SUBJECT", '"bulk 201"') == [201]
        assert len(search(c, "ALL")) == 450
        assert search(c, "OR", "BODY", "needle-400", "201") == [201, 400]
    finally:
        c.logout()
