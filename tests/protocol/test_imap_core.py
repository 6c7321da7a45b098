"""
IMAP core (RFC 3501 and the small extensions of issue 3) with imaplib and raw
sockets: greeting and CAPABILITY, STARTTLS and LOGINDISABLED, LOGIN and
AUTHENTICATE PLAIN (SASL-IR, cancel), SELECT/EXAMINE field by field, CREATE/
DELETE/RENAME with hierarchy and INBOX, LIST/LSUB and special-use, mUTF-7
names, STATUS, NOOP and IDLE seeing LMTP deliveries and POP3 deletes,
CLOSE/UNSELECT/EXPUNGE/UID EXPUNGE, and the error answers.
"""

import base64
import imaplib
import re
import time

import pytest

from conftest import RawImap as Raw, lmtp_send

PW = "alice-pw"


def msg(subject, body=b"hello\r\n"):
    return (b"From: a@example.org\r\nTo: alice@example.com\r\nSubject: "
            + subject.encode() + b"\r\n\r\n" + body)


def deliver(d, n, user="alice", start=0):
    c = d.lmtp()
    for i in range(start, start + n):
        _, rr, data = lmtp_send(c, "s@example.org", [user + "@example.com"], msg("m%d" % i))
        assert data[user + "@example.com"][0] == 250, (rr, data)
    c.quit()


def mutf7(name):
    """Modified UTF-7 (RFC 3501 §5.1.3) of NAME, for the test's own check."""
    out, buf = [], []

    def flush():
        if buf:
            b = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            buf.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def test_greeting_and_capability(daemon):
    r = Raw(daemon)
    assert re.match(r"^\* OK \[CAPABILITY IMAP4rev1 .*\] onebox ready$", r.greeting), r.greeting
    caps = r.greeting.split("[CAPABILITY ")[1].split("]")[0].split()
    for c in ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
              "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "STARTTLS", "AUTH=PLAIN"):
        assert c in caps, (c, caps)
    assert "LOGINDISABLED" not in caps   # allow_plaintext is on in the default daemon
    unt, t = r.cmd("a", "CAPABILITY")
    assert t == "a OK CAPABILITY completed"
    assert unt == ["* CAPABILITY " + " ".join(caps)]
    r.close()
    m = daemon.imaps()
    typ, caps2 = m.capability()
    assert typ == "OK" and b"STARTTLS" not in caps2[0] and b"AUTH=PLAIN" in caps2[0]
    m.logout()


def test_logindisabled_without_tls_then_starttls(daemon_factory):
    d = daemon_factory(allow_plaintext=False)
    m = d.imap()
    assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
    assert "AUTH=PLAIN" not in m.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        m.login("alice", PW)
    m.starttls(ssl_context=d.ssl_context())
    assert "LOGINDISABLED" not in m.capabilities and "STARTTLS" not in m.capabilities
    assert m.login("alice", PW)[0] == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_starttls_drops_pipelined_command(daemon):
    r = Raw(daemon)
    r.send("a STARTTLS\r\nb CAPABILITY\r\n")
    _, t = r.until("a")
    assert t.startswith("a OK")
    ctx = daemon.ssl_context()
    s = ctx.wrap_socket(r.sock, server_hostname="localhost")
    f = s.makefile("rb")
    s.sendall(b"c NOOP\r\n")
    lines = []
    while True:
        ln = f.readline().decode().rstrip("\r\n")
        lines.append(ln)
        if ln.startswith("c "):
            break
    assert lines == ["c OK NOOP completed"], lines
    s.sendall(b"d STARTTLS\r\n")
    ln = f.readline().decode()
    assert ln.startswith("d BAD"), ln
    s.close()


def test_login_ok_and_fail(daemon):
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("alice", "wrong")
    typ, data = m.login("alice", PW)
    assert typ == "OK" and b"CAPABILITY" in data[0]
    m.logout()
    r = Raw(daemon)
    r.login()
    _, t = r.cmd("x", "LOGIN alice alice-pw")
    assert t == "x BAD Command not valid in this state"
    r.close()


def test_authenticate_plain(daemon):
    m = daemon.imap()
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0alice\0" + PW.encode())
    assert typ == "OK" and m.state == "AUTH"
    m.logout()

    r = Raw(daemon)
    ir = base64.b64encode(b"\0alice\0" + PW.encode()).decode()
    _, t = r.cmd("a", "AUTHENTICATE PLAIN " + ir)   # SASL-IR
    assert t.startswith("a OK [CAPABILITY "), t
    r.close()

    r = Raw(daemon)
    bad = base64.b64encode(b"\0alice\0nope").decode()
    _, t = r.cmd("a", "AUTHENTICATE PLAIN " + bad)
    assert t.startswith("a NO [AUTHENTICATIONFAILED]"), t
    r.send("b AUTHENTICATE PLAIN\r\n")
    assert r.line() == "+ "
    r.send("*\r\n")                                 # cancel
    _, t = r.until("b")
    assert t.startswith("b BAD"), t
    r.send("c AUTHENTICATE PLAIN\r\n")
    assert r.line() == "+ "
    r.send("!!!notbase64\r\n")
    _, t = r.until("c")
    assert t.startswith("c BAD"), t
    _, t = r.cmd("d", "AUTHENTICATE CRAM-MD5")
    assert t.startswith("d NO"), t
    _, t = r.cmd("e", "AUTHENTICATE PLAIN " + base64.b64encode(b"bob\0alice\0" + PW.encode()).decode())
    assert t.startswith("e NO [AUTHORIZATIONFAILED]"), t
    # Still usable afterwards.
    _, t = r.cmd("f", "AUTHENTICATE PLAIN " + ir)
    assert t.startswith("f OK"), t
    r.close()


def test_id_namespace_enable(daemon):
    r = Raw(daemon)
    unt, t = r.cmd("a", 'ID ("name" "pytest")')
    assert t == "a OK ID completed" and unt[0].startswith('* ID ("name" "onebox"')
    _, t = r.cmd("b", "NAMESPACE")
    assert t.startswith("b BAD")                    # not authenticated
    r.login()
    unt, t = r.cmd("c", "NAMESPACE")
    assert unt == ['* NAMESPACE (("" "/")) NIL NIL'] and t.startswith("c OK")
    unt, t = r.cmd("d", "ENABLE CONDSTORE")
    assert unt == ["* ENABLED CONDSTORE"] and t.startswith("d OK")
    _, t = r.cmd("e", "ID NIL")
    assert t.startswith("e OK")
    r.close()


# ------------------------------------------------------------ SELECT/EXAMINE

def test_select_examine_fields(daemon):
    deliver(daemon, 3)
    m = daemon.imap("alice", PW)
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    u = m.untagged_responses
    assert u["FLAGS"] == [rb"(\Answered \Flagged \Deleted \Seen \Draft)"]
    assert u["PERMANENTFLAGS"] == [rb"(\Answered \Flagged \Deleted \Seen \Draft \*)"]
    assert u["RECENT"] == [b"3"]
    assert u["UNSEEN"] == [b"1"]
    assert int(u["UIDVALIDITY"][0]) > 0
    assert u["UIDNEXT"] == [b"4"]
    assert "READ-WRITE" in u
    uidvalidity = u["UIDVALIDITY"][0]
    m.store("1", "+FLAGS", r"(\Seen)")
    m.close()

    # Another session: \Recent was claimed by the first one (RFC 3501 §2.3.2).
    m2 = daemon.imap("alice", PW)
    typ, data = m2.select("INBOX", readonly=True)
    u = m2.untagged_responses
    assert typ == "OK" and data == [b"3"]
    assert u["RECENT"] == [b"0"] and u["UNSEEN"] == [b"2"]
    assert u["UIDVALIDITY"] == [uidvalidity]
    assert u["PERMANENTFLAGS"] == [b"()"]
    assert "READ-ONLY" in u
    m2.logout()
    m.logout()


def test_select_errors_and_deselect(daemon):
    r = Raw(daemon)
    _, t = r.cmd("a", "SELECT INBOX")
    assert t == "a BAD Command not valid in this state"
    r.login()
    _, t = r.cmd("b", "SELECT INBOX")
    assert t.startswith("b OK [READ-WRITE]")
    _, t = r.cmd("c", "SELECT nosuch")
    assert t.startswith("c NO [NONEXISTENT]")
    # RFC 3501 §6.3.1: the failed SELECT left no mailbox selected.
    _, t = r.cmd("d", "FETCH 1 FLAGS")
    assert t == "d BAD Command not valid in this state"
    _, t = r.cmd("e", "SELECT")
    assert t.startswith("e BAD")
    r.close()


# ---------------------------------------------------- CREATE/DELETE/RENAME

def names(m, ref='""', pat="*"):
    typ, data = m.list(ref, pat)
    assert typ == "OK", data
    out = {}
    for line in data:
        if line is None:
            continue
        mm = re.match(rb'^\(([^)]*)\) "/" (.*)$', line)
        assert mm, line
        n = mm.group(2).decode()
        if n.startswith('"'):
            n = n[1:-1]
        out[n] = set(mm.group(1).decode().split())
    return out


def test_create_delete_hierarchy(daemon):
    m = daemon.imap("alice", PW)
    assert m.create("a/b/c")[0] == "OK"
    got = names(m)
    assert got["a"] == {r"\HasChildren"} and got["a/b"] == {r"\HasChildren"}
    assert got["a/b/c"] == {r"\HasNoChildren"}
    assert m.create("x/")[0] == "OK" and "x" in names(m)      # trailing "/" ignored
    typ, data = m.create("INBOX")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
    typ, data = m.create("inbox")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
    typ, data = m.create("a/b")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
    typ, data = m.delete("a")
    assert typ == "NO" and b"children" in data[0]
    typ, data = m.delete("INBOX")
    assert typ == "NO"
    typ, data = m.delete("nosuch")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    assert m.delete("a/b/c")[0] == "OK"
    assert m.delete("a/b")[0] == "OK"
    assert m.delete("a")[0] == "OK"
    assert "a" not in names(m)
    # Deleting the selected mailbox is allowed.
    assert m.select("x")[0] == "OK"
    assert m.delete("x")[0] == "OK"
    m.logout()


def test_rename_with_children_and_inbox(daemon):
    deliver(daemon, 2)
    m = daemon.imap("alice", PW)
    assert m.create("p/q")[0] == "OK"
    assert m.rename("p", "r/s")[0] == "OK"
    got = names(m)
    assert "p" not in got and "p/q" not in got
    assert {"r", "r/s", "r/s/q"} <= set(got)
    typ, data = m.rename("nosuch", "t")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    typ, data = m.rename("r", "Sent")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
    # RFC 3501 §6.3.5: INBOX's messages move, INBOX stays and is empty.
    assert m.rename("INBOX", "old-inbox")[0] == "OK"
    assert m.status("INBOX", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 0)")
    assert m.status("old-inbox", "(MESSAGES)")[1][0].endswith(b"(MESSAGES 2)")
    m.logout()


def test_list_lsub_patterns_and_special_use(daemon):
    m = daemon.imap("alice", PW)
    for n in ("work", "work/2024", "work/2024/q1", "home"):
        assert m.create(n)[0] == "OK"
    got = names(m)
    assert got["Sent"] == {r"\HasNoChildren", r"\Sent"}
    assert got["Drafts"] == {r"\HasNoChildren", r"\Drafts"}
    assert got["Trash"] == {r"\HasNoChildren", r"\Trash"}
    assert got["Junk"] == {r"\HasNoChildren", r"\Junk"}
    assert got["Archive"] == {r"\HasNoChildren", r"\Archive"}
    assert set(names(m, '""', "%")) == {"INBOX", "Sent", "Drafts", "Trash", "Junk",
                                         "Archive", "work", "home"}
    assert set(names(m, '""', "work/%")) == {"work/2024"}
    assert set(names(m, '""', "work/*")) == {"work/2024", "work/2024/q1"}
    assert set(names(m, "work/", "%")) == {"work/2024"}
    assert set(names(m, '""', "w*q1")) == {"work/2024/q1"}
    assert set(names(m, '""', "inbox")) == {"INBOX"}
    assert set(names(m, '""', "nomatch%")) == set()
    typ, data = m.list('""', '""')
    assert data == [rb'(\Noselect) "/" ""']
    # LSUB: created mailboxes are subscribed; unsubscribing hides one.
    assert m.unsubscribe("home")[0] == "OK"
    typ, data = m.lsub('""', "*")
    lsub = {re.match(rb'^\([^)]*\) "/" (.*)$', x).group(1).decode().strip('"') for x in data}
    assert "home" not in lsub and "work/2024" in lsub
    assert m.subscribe("home")[0] == "OK"
    typ, data = m.lsub('""', "ho%")
    assert len(data) == 1 and data[0].endswith(b"home")
    typ, data = m.subscribe("nosuch")
    assert typ == "NO"
    m.logout()


def test_mutf7_names_round_trip(daemon):
    m = daemon.imap("alice", PW)
    wire = mutf7("Entwürfe")
    assert wire == "Entw&APw-rfe"
    assert m.create(wire)[0] == "OK"
    assert m.create(mutf7("日本語/子"))[0] == "OK"
    got = names(m)
    assert wire in got and mutf7("日本語") in got and mutf7("日本語/子") in got
    assert m.select(wire)[0] == "OK"
    typ, data = m.status(wire, "(MESSAGES)")
    assert data[0] == b"Entw&APw-rfe (MESSAGES 0)"
    with pytest.raises(imaplib.IMAP4.error, match="modified UTF-7"):
        m.create("bad&name")               # not valid modified UTF-7: BAD
    m.logout()


def test_status_counts(daemon):
    deliver(daemon, 4)
    m = daemon.imap("alice", PW)
    typ, data = m.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert typ == "OK"
    mm = re.match(rb"INBOX \(MESSAGES 4 RECENT 4 UIDNEXT 5 UIDVALIDITY \d+ UNSEEN 4\)", data[0])
    assert mm, data
    m.select("INBOX")
    m.store("1:2", "+FLAGS", r"(\Seen)")
    typ, data = m.status("INBOX", "(UNSEEN RECENT MESSAGES)")
    assert data[0] == b"INBOX (MESSAGES 4 RECENT 0 UNSEEN 2)"
    typ, data = m.status("nosuch", "(MESSAGES)")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    with pytest.raises(imaplib.IMAP4.error):
        m.status("INBOX", "(BOGUS)")
    m.logout()


# --------------------------------------------------- seeing other clients

def test_noop_sees_lmtp_and_pop3(daemon):
    deliver(daemon, 2)
    m = daemon.imap("alice", PW)
    assert m.select("INBOX")[1] == [b"2"]
    deliver(daemon, 1, start=2)
    m.untagged_responses.clear()
    m.noop()
    assert m.untagged_responses.get("EXISTS") == [b"3"]
    # RECENT counts every message recent in this session (RFC 3501 §7.3.2).
    assert m.untagged_responses.get("RECENT") == [b"3"]
    m.untagged_responses.clear()
    p = daemon.pop3("alice", PW)
    p.dele(1)
    p.quit()
    typ, _ = m.noop()
    assert m.untagged_responses.get("EXPUNGE") == [b"1"]
    typ, data = m.fetch("1:*", "(UID)")
    assert [re.search(rb"UID (\d+)", x).group(1) for x in data] == [b"2", b"3"]
    m.logout()


def idle_start(d):
    r = Raw(d)
    r.login()
    r.cmd("s", "SELECT INBOX")
    r.send("i IDLE\r\n")
    assert r.line() == "+ idling"
    return r


def test_idle_gets_exists_and_expunge(daemon):
    deliver(daemon, 2)
    r = idle_start(daemon)
    r.sock.settimeout(10)
    t0 = time.monotonic()
    deliver(daemon, 1, start=2)
    lines = [r.line()]
    if lines[0].endswith("EXISTS"):
        lines.append(r.line())
    assert lines[0] == "* 3 EXISTS" and lines[1] == "* 3 RECENT", lines
    assert time.monotonic() - t0 < 10
    p = daemon.pop3("alice", PW)
    p.dele(2)
    p.quit()
    assert r.line() == "* 2 EXPUNGE"
    r.send("DONE\r\n")
    _, t = r.until("i")
    assert t == "i OK IDLE terminated"
    # Anything else than DONE ends IDLE with BAD.
    r.send("j IDLE\r\n")
    assert r.line() == "+ idling"
    r.send("k NOOP\r\n")
    _, t = r.until("j")
    assert t.startswith("j BAD")
    _, t = r.cmd("l", "NOOP")
    assert t == "l OK NOOP completed"
    r.close()


# ---------------------------------------------- CLOSE/UNSELECT/EXPUNGE

def all_uids(m):
    typ, data = m.fetch("1:*", "(UID)")
    if data == [None]:
        return []
    return [int(re.search(rb"UID (\d+)", x).group(1)) for x in data if x]


def test_expunge_and_uid_expunge(daemon):
    deliver(daemon, 5)
    m = daemon.imap("alice", PW)
    m.select("INBOX")
    m.store("2,4", "+FLAGS", r"(\Deleted)")
    typ, data = m.expunge()
    # Highest sequence number first, so that none shifts under the next.
    assert typ == "OK" and data == [b"4", b"2"], data
    assert all_uids(m) == [1, 3, 5]
    m.store("1:3", "+FLAGS", r"(\Deleted)")
    # RFC 4315: only the given UIDs that have \Deleted.
    typ, data = m.uid("EXPUNGE", "3:4")
    assert typ == "OK"
    assert all_uids(m) == [1, 5]
    typ, data = m.uid("EXPUNGE", "100")
    assert typ == "OK" and all_uids(m) == [1, 5]
    m.logout()


def test_close_unselect(daemon):
    deliver(daemon, 3)
    m = daemon.imap("alice", PW)
    m.select("INBOX")
    m.store("1", "+FLAGS", r"(\Deleted)")
    assert m.unselect()[0] == "OK"           # never expunges
    m.select("INBOX", readonly=True)
    assert m.close()[0] == "OK"              # read-only: no expunge
    m.select("INBOX")
    assert all_uids(m) == [1, 2, 3]
    m.untagged_responses.clear()
    typ, data = m.close()
    assert typ == "OK" and "EXPUNGE" not in m.untagged_responses   # silently
    m.select("INBOX")
    assert all_uids(m) == [2, 3]
    m.close()
    with pytest.raises(imaplib.IMAP4.error):
        m.close()                            # not selected: BAD
    m.logout()


def test_examine_refuses_expunge(daemon):
    deliver(daemon, 1)
    r = Raw(daemon)
    r.login()
    _, t = r.cmd("a", "EXAMINE INBOX")
    assert t.startswith("a OK [READ-ONLY]")
    _, t = r.cmd("b", "EXPUNGE")
    assert t.startswith("b NO [READ-ONLY]")
    r.close()


# -------------------------------------------------------------- errors

def test_error_answers(daemon):
    deliver(daemon, 2)
    r = Raw(daemon)
    _, t = r.cmd("a", "FROBNICATE")
    assert t == "a BAD Unknown command"
    _, t = r.cmd("b", "LIST \"\" *")
    assert t == "b BAD Command not valid in this state"
    r.send("\r\n")
    _, t = r.until("*")
    assert t.startswith("* BAD")
    r.login()
    _, t = r.cmd("c", "EXPUNGE")
    assert t == "c BAD Command not valid in this state"
    _, t = r.cmd("d", "SELECT INBOX extra")
    assert t.startswith("d BAD")
    _, t = r.cmd("e", "SELECT INBOX")
    assert t.startswith("e OK")
    _, t = r.cmd("f", "FETCH 5 FLAGS")          # past the mailbox
    assert t.startswith("f BAD"), t
    _, t = r.cmd("g", "FETCH 0 FLAGS")
    assert t.startswith("g BAD"), t
    _, t = r.cmd("h", "UID EXPUNGE 1:x")
    assert t.startswith("h BAD"), t
    _, t = r.cmd("i", "UID FROB 1")
    assert t.startswith("i BAD"), t
    _, t = r.cmd("j", "CREATE")
    assert t.startswith("j BAD"), t
    _, t = r.cmd("k", 'STATUS nosuch (MESSAGES)')
    assert t.startswith("k NO [NONEXISTENT]"), t
    _, t = r.cmd("l", "NOOP")
    assert t == "l OK NOOP completed"
    r.close()


def test_literals_and_oversize_literal(daemon):
    r = Raw(daemon)
    r.send("a LOGIN {5}\r\n")
    assert r.line().startswith("+ ")
    r.send("alice {8}\r\n")
    assert r.line().startswith("+ ")
    r.send(PW + "\r\n")
    _, t = r.until("a")
    assert t.startswith("a OK"), t
    r.send("b CREATE {3+}\r\nfoo\r\n")             # LITERAL+
    _, t = r.until("b")
    # RFC 8474 §4.1: the OK carries the new mailbox's MAILBOXID.
    assert re.fullmatch(r"b OK \[MAILBOXID \([A-Za-z0-9_-]+\)\] CREATE completed", t), t
    # A synchronizing literal past the limit is refused before it is sent.
    r.send("c CREATE {99999999}\r\n")
    _, t = r.until("c")
    assert t.startswith("c BAD"), t
    _, t = r.cmd("d", "NOOP")
    assert t == "d OK NOOP completed"
    r.close()


def test_too_many_bad_commands(daemon):
    r = Raw(daemon)
    r.send("".join("t%d BOGUS\r\n" % i for i in range(25)))
    lines = []
    try:
        while True:
            lines.append(r.line())
    except (EOFError, ConnectionError):
        pass
    assert lines[-1] == "* BYE Too many invalid commands", lines[-3:]
    assert sum(1 for x in lines if " BAD " in x) == 20
    r.close()


def test_pipelined_commands_run_in_order(daemon):
    r = Raw(daemon)
    r.login()
    r.send("a CREATE one\r\nb CREATE one/two\r\nc LIST \"\" one*\r\nd DELETE one/two\r\n"
           "e LIST \"\" one*\r\n")
    seen = []
    for tag in "abcde":
        unt, t = r.until(tag)
        seen.append((tag, unt, t))
    assert all(t.startswith(tag + " OK") for tag, _, t in seen), seen
    assert len(seen[2][1]) == 2 and len(seen[4][1]) == 1
    r.close()


def test_logout(daemon):
    r = Raw(daemon)
    unt, t = r.cmd("a", "LOGOUT")
    assert unt == ["* BYE onebox logging out"] and t == "a OK LOGOUT completed"
    with pytest.raises(EOFError):
        r.line()
    r.close()
