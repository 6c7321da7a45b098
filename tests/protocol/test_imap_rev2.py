"""
test_imap_rev2.py - IMAP4rev2 (RFC 9051) beside IMAP4rev1: a session that
sends ENABLE IMAP4rev2 and one that does not, on the same mailbox.

What the rev2 session must see differently: no RECENT responses and no
\\Recent flag (and its SELECT does not take \\Recent from a rev1 session),
ESEARCH instead of SEARCH, a LIST line in SELECT, UID in every unsolicited
FETCH, mailbox names in UTF-8 (a rev1 session sees the same mailbox in
modified UTF-7, and the other way round), HASCHILDREN, OLDNAME after
RENAME.  What must be the same: STATUS DELETED and SIZE, the $ keywords of
RFC 9051 §2.3.2, "*" in UID ranges, BINARY, LSUB.

The client is a raw socket reading lines as bytes, so the assertions are on
the exact responses; imaplib knows neither ESEARCH nor UTF-8 names.
"""

import base64
import re

from conftest import TaggedImap, lmtp_send


class Client(TaggedImap):
    def esearch(self, text):
        """The one ESEARCH response to TEXT, after its (TAG ...) correlator,
        which must name this command; no SEARCH response may come."""
        unt, tagged = self.cmd(text)
        assert tagged.startswith(b"OK"), (text, unt, tagged)
        found = [ln for ln in unt if ln.startswith(b"* ESEARCH")]
        assert len(found) == 1 and not [ln for ln in unt if ln.startswith(b"* SEARCH")], unt
        head = b'* ESEARCH (TAG "t%d")' % self.n
        assert found[0].startswith(head), (head, found)
        return found[0][len(head):].strip()

    def enable_rev2(self):
        unt = self.ok("ENABLE IMAP4rev2")
        assert unt == [b"* ENABLED IMAP4rev2"], unt
        return self


def deliver(daemon, n, start=1, rcpt="alice@example.com"):
    with daemon.lmtp() as lm:
        for i in range(start, start + n):
            msg = ("Subject: message %d\r\nFrom: s@example.net\r\n\r\nbody %d\r\n"
                   % (i, i)).encode()
            _, _, data = lmtp_send(lm, "s@example.net", [rcpt], msg)
            assert data[rcpt][0] == 250, data


def starting(lines, prefix):
    return [ln for ln in lines if ln.startswith(prefix)]


# ------------------------------------------------------------- ENABLE

def test_capability_and_enable(daemon):
    c = Client(daemon)
    caps_before = c.ok("CAPABILITY")
    caps = caps_before[0].split()
    for want in (b"IMAP4rev1", b"IMAP4rev2", b"LIST-EXTENDED", b"CHILDREN",
                 b"CREATE-SPECIAL-USE", b"SPECIAL-USE", b"LIST-STATUS", b"STATUS=SIZE",
                 b"ENABLE", b"ESEARCH", b"BINARY"):
        assert want in caps, (want, caps)
    assert b"IMAP4rev2" in c.greeting
    # RFC 9051 §6.3.1: ENABLED names what this command turned on, only
    # that; the capability list does not change.
    c.enable_rev2()
    assert c.ok("ENABLE IMAP4rev2 X-UNKNOWN") == [b"* ENABLED"]
    assert c.ok("ENABLE imap4rev2 CONDSTORE") == [b"* ENABLED CONDSTORE"]
    assert c.ok("CAPABILITY") == caps_before
    # ENABLE belongs to the authenticated state, before SELECT.
    c.ok("SELECT INBOX")
    unt, tagged = c.cmd("ENABLE IMAP4rev2")
    assert tagged.startswith(b"BAD"), tagged
    c.close()


# ----------------------------------------------------- \Recent, SELECT

def test_select_and_recent_rev2_versus_rev1(daemon):
    deliver(daemon, 2)
    r2 = Client(daemon).enable_rev2()
    unt = r2.ok("SELECT INBOX")
    assert b"* 2 EXISTS" in unt, unt
    assert not starting(unt, b"* OK [UNSEEN"), unt
    assert not [ln for ln in unt if ln.endswith(b" RECENT")], unt
    # RFC 9051 §6.3.2: the LIST response for the mailbox, attributes
    # accurate (INBOX has no children, is subscribed).
    assert starting(unt, b"* LIST ") == [b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX'], unt
    unt = r2.ok("FETCH 1:* (FLAGS)")
    assert unt == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())"], unt
    # SEARCH RECENT and NEW find nothing, OLD everything.
    assert r2.esearch("SEARCH RECENT") == b""
    assert r2.esearch("SEARCH NEW") == b""
    assert r2.esearch("SEARCH OLD") == b"ALL 1:2"
    # The rev2 SELECT claimed nothing: a rev1 session still gets \Recent.
    r1 = Client(daemon)
    unt = r1.ok("SELECT INBOX")
    assert b"* 2 RECENT" in unt and b"* OK [UNSEEN 1] First unseen message" in unt, unt
    assert not starting(unt, b"* LIST"), unt
    unt = r1.ok("FETCH 1:* (FLAGS)")
    assert unt == [b"* 1 FETCH (FLAGS (\\Recent))", b"* 2 FETCH (FLAGS (\\Recent))"], unt
    assert r1.ok("SEARCH RECENT") == [b"* SEARCH 1 2"]
    # A new message: EXISTS to both, RECENT only to rev1.
    deliver(daemon, 1, start=3)
    unt = r2.ok("NOOP")
    assert unt == [b"* 3 EXISTS"], unt
    unt = r1.ok("NOOP")
    assert unt == [b"* 3 EXISTS", b"* 3 RECENT"], unt
    # STATUS RECENT: a rev2 session sees none, a rev1 session the count of
    # messages no session has claimed.
    deliver(daemon, 1, start=4, rcpt="alice@example.com")
    r3 = Client(daemon).enable_rev2()
    r4 = Client(daemon)
    assert r3.ok("STATUS INBOX (RECENT MESSAGES)") == [b"* STATUS INBOX (MESSAGES 4 RECENT 0)"]
    assert r4.ok("STATUS INBOX (RECENT MESSAGES)") == [b"* STATUS INBOX (MESSAGES 4 RECENT 1)"]
    for c in (r1, r2, r3, r4):
        c.close()


def test_select_list_line_attributes(daemon):
    c = Client(daemon).enable_rev2()
    c.ok("CREATE Projects/Alpha")
    c.ok("UNSUBSCRIBE Projects")
    unt = c.ok("EXAMINE Projects")
    assert starting(unt, b"* LIST ") == [b'* LIST (\\HasChildren) "/" Projects'], unt
    unt = c.ok("SELECT Trash")
    assert unt[0] == b"* OK [CLOSED] Previous mailbox closed", unt
    assert starting(unt, b"* LIST ") == [b'* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" Trash']
    c.close()


# ------------------------------------------------------------- SEARCH

def test_search_answers_esearch(daemon):
    deliver(daemon, 4)
    r2 = Client(daemon).enable_rev2()
    r1 = Client(daemon)
    r2.ok("SELECT INBOX")
    r1.ok("SELECT INBOX")
    r1.ok("STORE 2,4 +FLAGS (\\Flagged)")
    assert r2.esearch("SEARCH FLAGGED") == b"ALL 2,4"
    assert r2.esearch("UID SEARCH FLAGGED") == b"UID ALL 2,4"
    # Nothing found: the ESEARCH response is still sent, empty.
    assert r2.esearch("SEARCH KEYWORD nosuch") == b""
    assert r2.esearch("UID SEARCH KEYWORD nosuch") == b"UID"
    assert r2.esearch("SEARCH CHARSET UTF-8 SUBJECT message") == b"ALL 1:4"
    assert r2.esearch("SEARCH RETURN (COUNT MIN) FLAGGED") == b"MIN 2 COUNT 2"
    # SAVE alone: no untagged response; "$" then names the saved result.
    assert r2.ok("SEARCH RETURN (SAVE) FLAGGED") == []
    unt = r2.ok("FETCH $ (UID)")
    assert unt == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)"], unt
    # A rev1 session on the same mailbox keeps the SEARCH response.
    assert r1.ok("SEARCH FLAGGED") == [b"* SEARCH 2 4"]
    assert r1.ok("UID SEARCH KEYWORD nosuch") == [b"* SEARCH"]
    r1.close()
    r2.close()


# ---------------------------------------------------- unsolicited FETCH

def test_unsolicited_fetch_carries_uid(daemon):
    deliver(daemon, 2)
    r2 = Client(daemon).enable_rev2()
    r1 = Client(daemon)
    other = Client(daemon)
    for c in (r2, r1, other):
        c.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    # RFC 9051 §7.5.2: unsolicited FETCH responses include UID.
    assert r2.ok("NOOP") == [b"* 2 FETCH (UID 2 FLAGS (\\Flagged))"]
    # RFC 3501 has no such rule.  R1 is the first IMAP4rev1 session to
    # select the mailbox (R2 claims nothing), so it sees \Recent.
    assert r1.ok("NOOP") == [b"* 2 FETCH (FLAGS (\\Flagged \\Recent))"]
    # A body fetch that sets \Seen reports the new flags in its own FETCH.
    unt = r2.ok("FETCH 1 (BODY[TEXT])")
    assert unt[0].startswith(b"* 1 FETCH ("), unt
    assert any(b"\\Seen" in ln for ln in unt), unt
    for c in (r1, r2, other):
        c.close()


# --------------------------------------------------- UTF-8 mailbox names

def test_utf8_names_and_mutf7_round_trip(daemon):
    r2 = Client(daemon).enable_rev2()
    r1 = Client(daemon)
    # Created under rev2 in UTF-8: a rev1 session sees modified UTF-7.
    r2.ok('CREATE "Entwürfe"'.encode())
    unt = r2.ok('LIST "" "Entw*"')
    assert unt == ['* LIST (\\HasNoChildren) "/" "Entwürfe"'.encode()], unt
    unt = r1.ok('LIST "" "Entw*"')
    assert unt == [b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe'], unt
    # Created by rev1 in modified UTF-7: the rev2 session sees UTF-8.
    r1.ok("CREATE &ZeVnLIqe-/&W1A-")
    unt = r2.ok('LIST "" "*"')
    assert '* LIST (\\HasChildren) "/" "日本語"'.encode() in unt, unt
    assert '* LIST (\\HasNoChildren) "/" "日本語/子"'.encode() in unt, unt
    # "&" is an ordinary character in a UTF-8 name.
    r2.ok("CREATE R&D")
    assert r2.ok('LIST "" "R*"') == [b'* LIST (\\HasNoChildren) "/" R&D']
    assert r1.ok('LIST "" "R*"') == [b'* LIST (\\HasNoChildren) "/" R&-D']
    # So a rev2 client naming the mUTF-7 form names another mailbox.
    unt, tagged = r2.cmd('SELECT "Entw&APw-rfe"')
    assert tagged.startswith(b"NO [NONEXISTENT]"), tagged
    # Every command takes and gives UTF-8: APPEND, STATUS, SELECT, RENAME.
    msg = b"Subject: hi\r\n\r\nhello\r\n"
    r2.sock.sendall(b"a1 APPEND \"Entw\xc3\xbcrfe\" {%d+}\r\n" % len(msg) + msg + b"\r\n")
    ln = r2.line()
    assert ln.startswith(b"a1 OK [APPENDUID "), ln
    assert r2.ok('STATUS "Entwürfe" (MESSAGES)'.encode()) == \
        ['* STATUS "Entwürfe" (MESSAGES 1)'.encode()]
    assert r1.ok("STATUS Entw&APw-rfe (MESSAGES)") == [b"* STATUS Entw&APw-rfe (MESSAGES 1)"]
    unt = r2.ok('SELECT "日本語/子"'.encode())
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "日本語/子"'.encode() in unt, unt
    r2.ok("UNSELECT")
    # Not UTF-8 at all: a BAD, and nothing created.
    unt, tagged = r2.cmd(b'CREATE "bad\xff\xfe"')
    assert tagged.startswith(b"BAD"), tagged
    unt, tagged = r1.cmd('CREATE "Entwürfe2"'.encode())   # 8-bit is rev2 only
    assert tagged.startswith(b"BAD"), tagged
    # UTF-8, but a C1 control: not Net-Unicode (RFC 9051 §5.1).
    unt, tagged = r2.cmd(b'CREATE "a\xc2\x85b"')
    assert tagged.startswith(b"NO [CANNOT]"), tagged
    r1.close()
    r2.close()


# ------------------------------------------------------------- STATUS

def test_status_deleted_and_size(daemon):
    deliver(daemon, 3)
    r1 = Client(daemon)
    r1.ok("SELECT INBOX")
    sizes = []
    for ln in r1.ok("FETCH 1:* (RFC822.SIZE)"):
        sizes.append(int(re.search(rb"RFC822.SIZE (\d+)", ln).group(1)))
    r1.ok("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    r1.ok("UNSELECT")
    want = b"* STATUS INBOX (MESSAGES 3 DELETED 2 SIZE %d)" % sum(sizes)
    r2 = Client(daemon).enable_rev2()
    for c in (r1, r2):
        assert c.ok("STATUS INBOX (MESSAGES DELETED SIZE)") == [want]
    # What the rev2 grammar lists, in one STATUS.
    unt = r2.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE)")
    assert re.fullmatch(rb"\* STATUS INBOX \(MESSAGES 3 UIDNEXT 4 UIDVALIDITY \d+ UNSEEN 3 "
                        rb"DELETED 2 SIZE \d+\)", unt[0]), unt
    r1.close()
    r2.close()


# ------------------------------------------- DELETE, RENAME, LSUB, CHECK

def test_delete_rename_lsub(daemon):
    r2 = Client(daemon).enable_rev2()
    r1 = Client(daemon)
    r2.ok("CREATE Plans/2025")
    # RFC 9051 §6.3.5: HASCHILDREN for rev2; rev1 keeps INUSE.
    unt, tagged = r2.cmd("DELETE Plans")
    assert tagged.startswith(b"NO [HASCHILDREN]"), tagged
    unt, tagged = r1.cmd("DELETE Plans")
    assert tagged.startswith(b"NO [INUSE]"), tagged
    # RFC 9051 §6.3.9.7: the new name with OLDNAME; no LIST to rev1.
    unt = r2.ok('RENAME Plans "Pläne"'.encode())
    assert unt == ['* LIST () "/" "Pläne" ("OLDNAME" (Plans))'.encode()], unt
    assert r1.ok("RENAME Pl&AOQ-ne Plans") == []
    unt = r2.ok('LIST "" "Plans*"')
    assert unt == [b'* LIST (\\HasChildren) "/" Plans',
                   b'* LIST (\\HasNoChildren) "/" Plans/2025'], unt
    # LSUB is deprecated by RFC 9051 (Appendix E item 19) but still served.
    unt = r2.ok('LSUB "" "Plans*"')
    assert b'* LSUB (\\HasChildren) "/" Plans' in unt, unt
    # CHECK was removed from rev2; it stays a harmless NOOP.
    r2.ok("SELECT INBOX")
    r2.ok("CHECK")
    r1.close()
    r2.close()


# ------------------------------------------------- keywords, UID sets

def test_dollar_keywords_and_uid_star(daemon):
    deliver(daemon, 3)
    c = Client(daemon).enable_rev2()
    c.ok("SELECT INBOX")
    kws = b"$Forwarded $MDNSent $Junk $NotJunk $Phishing"
    unt = c.ok(b"STORE 2 +FLAGS (" + kws + b")")
    assert starting(unt, b"* 2 FETCH") == [b"* 2 FETCH (FLAGS (" + kws + b"))"], unt
    # The new keywords are announced in FLAGS and PERMANENTFLAGS.
    flags = starting(unt, b"* FLAGS ")
    assert flags and all(k in flags[0].split(b"(")[1] for k in kws.split()), unt
    assert c.esearch("SEARCH KEYWORD $Phishing") == b"ALL 2"
    assert c.esearch("SEARCH UNKEYWORD $MDNSent") == b"ALL 1,3"
    # Kept by COPY and MOVE, and by APPEND.
    c.ok("COPY 2 Archive")
    msg = b"Subject: kw\r\n\r\nx\r\n"
    c.sock.sendall(b"a1 APPEND Archive ($Forwarded $Junk) {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert c.line().startswith(b"a1 OK"), "APPEND"
    c.ok("SELECT Archive")
    got = {}
    for ln in c.ok("FETCH 1:* (FLAGS)"):
        m = re.fullmatch(rb"\* (\d) FETCH \(FLAGS \(([^)]*)\)\)", ln)
        assert m, ln
        got[int(m.group(1))] = set(m.group(2).split())
    assert got == {1: set(kws.split()), 2: {b"$Forwarded", b"$Junk"}}, got
    # RFC 9051 §6.4.9: a UID range with "*" always holds the last UID.
    c.ok("SELECT INBOX")
    assert c.ok("UID FETCH 999:* (FLAGS)") == [b"* 3 FETCH (UID 3 FLAGS ())"]
    assert c.esearch("UID SEARCH UID 999:*") == b"UID ALL 3"
    c.close()


def test_binary_fetch(daemon):
    c = Client(daemon).enable_rev2()
    body = b"caf\xc3\xa9 au lait\r\n"
    enc = base64.encodebytes(body).replace(b"\n", b"\r\n")
    msg = (b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + enc)
    c.sock.sendall(b"a1 APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert c.line().startswith(b"a1 OK"), "APPEND"
    c.ok("SELECT INBOX")
    unt = c.ok("FETCH 1 (BINARY.SIZE[1])")
    assert unt == [b"* 1 FETCH (BINARY.SIZE[1] %d)" % len(body)], unt
    c.sock.sendall(b"b1 FETCH 1 (BINARY.PEEK[1])\r\n")
    ln = c.line()
    m = re.fullmatch(rb"\* 1 FETCH \(BINARY\[1\] ~?\{(\d+)\}", ln)
    assert m and int(m.group(1)) == len(body), ln
    assert c.f.read(len(body)) == body
    assert c.line() == b")"
    assert c.line().startswith(b"b1 OK")
    c.close()
