"""
test_imap_store.py - STORE, COPY, MOVE and APPEND with imaplib (RFC 3501
§6.4.6, §6.4.7, §6.3.11; UIDPLUS RFC 4315; MOVE RFC 6851), and what other
clients see of them: a second IMAP session (NOOP, then FETCH FLAGS) and
POP3 (\\Deleted hides a message from a new POP3 session; clearing it brings
the message back).
"""

import imaplib
import re
import time

import pytest

from conftest import lmtp_send, retr_bytes


def imap_login(daemon, user="alice"):
    return daemon.imap(user, daemon.password(user))


def deliver(daemon, n, rcpt="alice@example.com"):
    with daemon.lmtp() as l:
        for i in range(1, n + 1):
            msg = ("Subject: message %d\r\nFrom: s@example.net\r\n\r\nbody %d\r\n" % (i, i)).encode()
            _, _, data = lmtp_send(l, "s@example.net", [rcpt], msg)
            assert data[rcpt][0] == 250, data


def flags_of(line):
    """The set of flags in a FETCH response line, \\Recent left out."""
    if isinstance(line, tuple):
        line = line[0]
    m = re.search(rb"FLAGS \(([^)]*)\)", line)
    assert m, line
    return set(m.group(1).decode().split()) - {"\\Recent"}


def fetch_flags(c, seq="1:*"):
    typ, data = c.fetch(seq, "(FLAGS)")
    assert typ == "OK", data
    out = {}
    for line in data:
        out[int(line.split()[0])] = flags_of(line)
    return out


def uids_of(c):
    typ, data = c.uid("SEARCH", "ALL")
    assert typ == "OK"
    return [int(x) for x in data[0].split()]


def code_of(data, name):
    """The response code NAME's arguments in a tagged answer's text."""
    m = re.search(rb"\[" + name.encode() + rb" ([^\]]*)\]", data[0])
    assert m, data
    return m.group(1).decode()


def expand(s):
    out = []
    for part in s.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))
        else:
            out.append(int(part))
    return out


# ---------------------------------------------------------------- STORE

def test_store_forms(daemon):
    deliver(daemon, 3)
    c = imap_login(daemon)
    c.select("INBOX")

    typ, data = c.store("1", "+FLAGS", r"(\Seen \Flagged)")
    assert typ == "OK"
    assert len(data) == 1 and flags_of(data[0]) == {"\\Seen", "\\Flagged"}

    typ, data = c.store("1", "-FLAGS", r"(\Flagged)")
    assert typ == "OK" and flags_of(data[0]) == {"\\Seen"}

    typ, data = c.store("1:2", "FLAGS", r"(\Answered \Draft)")
    assert typ == "OK" and len(data) == 2
    assert all(flags_of(d) == {"\\Answered", "\\Draft"} for d in data)

    # .SILENT: no FETCH for our own change.
    typ, data = c.store("3", "+FLAGS.SILENT", r"(\Deleted)")
    assert typ == "OK" and data == [None]
    typ, data = c.store("3", "-FLAGS.SILENT", r"(\Deleted)")
    assert typ == "OK" and data == [None]
    typ, data = c.store("2", "FLAGS.SILENT", r"(\Seen)")
    assert typ == "OK" and data == [None]

    # Flags given without parentheses; system flag names in any case.
    typ, data = c.store("3", "+FLAGS", r"\seen \FLAGGED")
    assert typ == "OK" and flags_of(data[0]) == {"\\Seen", "\\Flagged"}

    # \Recent cannot be stored and is ignored (RFC 3501 §2.3.2).
    typ, data = c.store("3", "+FLAGS", r"(\Recent)")
    assert typ == "OK" and flags_of(data[0]) == {"\\Seen", "\\Flagged"}

    # Nothing was reported twice: a NOOP now brings no FETCH.
    typ, _ = c.noop()
    assert "FETCH" not in c.untagged_responses
    assert fetch_flags(c) == {1: {"\\Answered", "\\Draft"}, 2: {"\\Seen"},
                              3: {"\\Seen", "\\Flagged"}}
    c.logout()


def test_uid_store_reports_uid(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    c.select("INBOX")
    uids = uids_of(c)
    typ, data = c.uid("STORE", str(uids[1]), "+FLAGS", r"(\Flagged)")
    assert typ == "OK" and len(data) == 1
    assert re.match(rb"2 \(.*UID %d" % uids[1], data[0]), data
    assert flags_of(data[0]) == {"\\Flagged"}
    # A UID set that names no message is no error.
    typ, data = c.uid("STORE", str(uids[1] + 50), "+FLAGS", r"(\Flagged)")
    assert typ == "OK"
    c.logout()


def test_store_keywords(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    c.select("INBOX")
    typ, data = c.store("1", "+FLAGS", "($Work Project-X)")
    assert typ == "OK"
    assert flags_of(data[0]) == {"$Work", "Project-X"}
    # The new keywords appear in FLAGS.
    flags_resp = c.untagged_responses.get("FLAGS", [])
    assert flags_resp and b"$Work" in flags_resp[-1] and b"Project-X" in flags_resp[-1]
    typ, data = c.store("1:2", "+FLAGS", r"($work \Seen)")   # case-insensitive names
    assert typ == "OK"
    fl = fetch_flags(c)
    assert fl[1] == {"$Work", "Project-X", "\\Seen"}
    assert fl[2] == {"$Work", "\\Seen"}
    typ, data = c.store("1", "-FLAGS", "(Project-X)")
    assert flags_of(data[0]) == {"$Work", "\\Seen"}
    typ, data = c.store("2", "FLAGS", "(Other)")
    assert flags_of(data[0]) == {"Other"}
    typ, data = c.search(None, "KEYWORD", "$Work")
    assert data == [b"1"]
    c.logout()


def test_store_errors(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    c.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        c.store("1", "+FLAGS", r"(\Bogus)")
    with pytest.raises(imaplib.IMAP4.error):
        c.store("9", "+FLAGS", r"(\Seen)")               # past the mailbox
    with pytest.raises(imaplib.IMAP4.error):
        c.store("1", "+FLAGZ", r"(\Seen)")
    with pytest.raises(imaplib.IMAP4.error):
        c.store("0", "+FLAGS", r"(\Seen)")
    assert fetch_flags(c) == {1: set(), 2: set()}
    c.logout()


def test_store_read_only(daemon):
    deliver(daemon, 1)
    c = imap_login(daemon)
    c.select("INBOX", readonly=True)
    typ, data = c._simple_command("STORE", "1", "+FLAGS", r"(\Seen)")
    assert typ == "NO", data
    assert fetch_flags(c) == {1: set()}
    c.logout()


def test_flags_seen_by_second_session(daemon):
    deliver(daemon, 3)
    a = imap_login(daemon)
    b = imap_login(daemon)
    a.select("INBOX")
    b.select("INBOX")
    typ, _ = a.store("2", "+FLAGS.SILENT", r"(\Flagged $Later)")
    assert typ == "OK"
    typ, _ = b.noop()
    assert typ == "OK"
    fetches = b.untagged_responses.get("FETCH", [])
    assert len(fetches) == 1 and fetches[0].startswith(b"2 ("), fetches
    assert flags_of(fetches[0]) == {"\\Flagged", "$Later"}
    assert fetch_flags(b, "2") == {2: {"\\Flagged", "$Later"}}
    # And back: b's change reaches a, reported once, inside a's own STORE answer.
    typ, _ = b.store("1", "+FLAGS.SILENT", r"(\Seen)")
    typ, data = a.store("3", "+FLAGS", r"(\Answered)")
    assert typ == "OK"
    got = {int(d.split()[0]): flags_of(d) for d in data}
    assert got == {1: {"\\Seen"}, 3: {"\\Answered"}}
    a.noop()
    assert "FETCH" not in a.untagged_responses
    a.logout()
    b.logout()


def test_deleted_flag_and_pop3(daemon):
    deliver(daemon, 3)
    c = imap_login(daemon)
    c.select("INBOX")
    typ, _ = c.store("2", "+FLAGS", r"(\Deleted)")
    assert typ == "OK"
    p = daemon.pop3("alice", daemon.password("alice"))
    count, _ = p.stat()
    assert count == 2
    assert b"message 3" in retr_bytes(p, 2)
    p.quit()
    typ, _ = c.store("2", "-FLAGS", r"(\Deleted)")
    assert typ == "OK"
    p = daemon.pop3("alice", daemon.password("alice"))
    count, _ = p.stat()
    assert count == 3
    assert b"message 2" in retr_bytes(p, 2)
    p.quit()
    c.logout()


# ---------------------------------------------------------- COPY, MOVE

def test_copy_with_copyuid(daemon):
    deliver(daemon, 4)
    c = imap_login(daemon)
    c.select("INBOX")
    c.store("2", "+FLAGS", r"(\Flagged)")
    src_uids = uids_of(c)
    typ, data = c.copy("2:3", "Archive")
    assert typ == "OK", data
    uidvalidity, src, dst = code_of(data, "COPYUID").split()
    assert expand(src) == src_uids[1:3]
    c.select("Archive")
    typ, vd = c.status("Archive", "(UIDVALIDITY)")
    assert ("UIDVALIDITY %s" % uidvalidity).encode() in vd[0]
    assert uids_of(c) == expand(dst)
    # Flags travel with the copy; the source keeps its messages.
    assert fetch_flags(c) == {1: {"\\Flagged"}, 2: set()}
    typ, body = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"message 2" in body[0][1]
    c.select("INBOX")
    assert len(uids_of(c)) == 4

    # UID COPY keeps the pairing, element by element.
    # (imaplib's uid() drops the tagged text, so the command is sent as is.)
    typ, data = c._simple_command("UID", "COPY", "%d,%d" % (src_uids[3], src_uids[0]), "Archive")
    assert typ == "OK"
    _, src, dst = code_of(data, "COPYUID").split()
    assert expand(src) == [src_uids[0], src_uids[3]]
    assert len(expand(dst)) == 2 and expand(dst)[0] < expand(dst)[1]
    c.logout()


def test_copy_errors(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    c.select("INBOX")
    typ, data = c.copy("1", "NoSuchBox")
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    with pytest.raises(imaplib.IMAP4.error):
        c.copy("7", "Archive")
    # A UID set naming nothing copies nothing and is no error.
    typ, data = c._simple_command("UID", "COPY", "9999", "Archive")
    assert typ == "OK" and b"COPYUID" not in data[0]
    # COPY from a read-only view is allowed.
    c.select("INBOX", readonly=True)
    typ, data = c.copy("1", "Archive")
    assert typ == "OK" and b"COPYUID" in data[0]
    c.logout()


def test_move(daemon):
    deliver(daemon, 4)
    c = imap_login(daemon)
    c.select("INBOX")
    c.store("3", "+FLAGS", r"(\Seen)")
    src_uids = uids_of(c)
    typ, data = c._simple_command("MOVE", "2:3", "Trash")
    assert typ == "OK", data
    copyuid = c.untagged_responses.pop("COPYUID")[0].decode().split()
    expunged = c.untagged_responses.pop("EXPUNGE")
    # Either order is right (RFC 6851 §3.3); each number is valid when sent.
    assert [int(x) for x in expunged] in ([3, 2], [2, 2])
    assert expand(copyuid[1]) == src_uids[1:3]
    assert uids_of(c) == [src_uids[0], src_uids[3]]
    c.select("Trash")
    assert uids_of(c) == expand(copyuid[2])
    assert fetch_flags(c) == {1: set(), 2: {"\\Seen"}}
    c.logout()
    # POP3 sees INBOX without the moved messages.
    p = daemon.pop3("alice", daemon.password("alice"))
    assert p.stat()[0] == 2
    p.quit()


def test_uid_move_and_errors(daemon):
    deliver(daemon, 3)
    c = imap_login(daemon)
    c.select("INBOX")
    uids = uids_of(c)
    typ, data = c.uid("MOVE", str(uids[2]), "Archive")
    assert typ == "OK"
    assert c.untagged_responses.pop("COPYUID")[0].split()[1] == str(uids[2]).encode()
    typ, data = c._simple_command("UID", "MOVE", str(uids[0]), "Nowhere")
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    c.select("INBOX", readonly=True)
    typ, data = c._simple_command("MOVE", "1", "Archive")
    assert typ == "NO"
    c.select("INBOX")
    assert uids_of(c) == uids[:2]
    c.logout()


def test_move_seen_by_other_session(daemon):
    deliver(daemon, 3)
    a = imap_login(daemon)
    b = imap_login(daemon)
    a.select("INBOX")
    b.select("INBOX")
    typ, _ = a._simple_command("MOVE", "1", "Archive")
    assert typ == "OK"
    b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"]
    a.logout()
    b.logout()


# --------------------------------------------------------------- APPEND

MSG = (b"From: Alice <alice@example.com>\r\n"
       b"To: bob@example.org\r\n"
       b"Subject: appended\r\n"
       b"\r\n"
       b"Line one\r\n"
       b"Line two with trailing spaces   \r\n"
       b".leading dot\r\n")


def test_append_with_flags_and_date(daemon):
    c = imap_login(daemon)
    typ, data = c.append("INBOX", r"(\Seen \Flagged $Sent)", '"14-Feb-2021 16:30:05 +0100"', MSG)
    assert typ == "OK", data
    uidvalidity, uid = (int(x) for x in code_of(data, "APPENDUID").split())
    typ, data = c.select("INBOX")
    assert data == [b"1"]
    typ, vd = c.status("INBOX", "(UIDVALIDITY)")
    assert ("UIDVALIDITY %d" % uidvalidity).encode() in vd[0]
    assert uids_of(c) == [uid]
    assert fetch_flags(c) == {1: {"\\Seen", "\\Flagged", "$Sent"}}
    typ, data = c.fetch("1", "(INTERNALDATE RFC822.SIZE)")
    m = re.search(rb'INTERNALDATE "([^"]+)"', data[0])
    got = time.mktime(imaplib.Internaldate2tuple(b'INTERNALDATE "' + m.group(1) + b'"'))
    want = time.mktime(imaplib.Internaldate2tuple(b'INTERNALDATE "14-Feb-2021 16:30:05 +0100"'))
    assert got == want
    assert re.search(rb"RFC822\.SIZE %d\b" % len(MSG), data[0])
    c.logout()
    # Byte for byte the same over POP3.
    p = daemon.pop3("alice", daemon.password("alice"))
    assert retr_bytes(p, 1) == MSG
    p.quit()


def test_append_without_flags_to_selected_mailbox(daemon):
    deliver(daemon, 1)
    c = imap_login(daemon)
    c.select("INBOX")
    before = time.time()
    typ, data = c.append("INBOX", None, None, MSG)
    assert typ == "OK"
    # The EXISTS for the selected mailbox comes with the answer.
    assert c.untagged_responses.get("EXISTS", [])[-1:] == [b"2"]
    _, uid = code_of(data, "APPENDUID").split()
    assert uids_of(c)[-1] == int(uid)
    assert fetch_flags(c, "2") == {2: set()}
    typ, data = c.fetch("2", "(INTERNALDATE)")
    t = time.mktime(imaplib.Internaldate2tuple(data[0]))
    assert before - 5 <= t <= time.time() + 5
    c.logout()


def test_append_errors(daemon):
    c = imap_login(daemon)
    typ, data = c.append("NoSuchBox", None, None, MSG)
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    with pytest.raises(imaplib.IMAP4.error):
        c.append("INBOX", r"(\Bogus)", None, MSG)
    typ, data = c.append("Archive", None, None, MSG)
    assert typ == "OK"
    typ, data = c.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0]
    typ, data = c.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0]
    c.logout()


def test_append_over_quota(daemon):
    r = daemon.cli("user", "quota", "alice", "--bytes", "100")
    if r.returncode != 0:
        pytest.skip("no `onebox user quota` in this build: %s" % r.stderr.decode(errors="replace"))
    c = imap_login(daemon)
    typ, data = c.append("INBOX", None, None, MSG * 10)
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
    typ, data = c.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0]
    c.logout()
