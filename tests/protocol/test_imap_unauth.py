"""
UNAUTHENTICATE (RFC 8437) over raw IMAP: the session goes back to not
authenticated state on the same connection, keeps TLS, and forgets the
user, the selected mailbox (without expunging), what ENABLE turned on, the
saved search result and the mailbox watch; the next LOGIN or AUTHENTICATE
may be another user, who sees only their own mail.
"""

import base64
import re
import socket
import zlib

import pytest

from conftest import lmtp_send


def msg(subject, body=b"hello\r\n"):
    return (b"From: a@example.org\r\nTo: someone@example.com\r\nSubject: "
            + subject.encode() + b"\r\n\r\n" + body)


def deliver(d, user, subjects):
    c = d.lmtp()
    for s in subjects:
        _, rr, data = lmtp_send(c, "s@example.org", [user + "@example.com"], msg(s))
        assert data[user + "@example.com"][0] == 250, (rr, data)
    c.quit()


class Raw:
    """A raw IMAP client: send lines, read responses up to a tag."""

    def __init__(self, d, timeout=30):
        self.d = d
        self.sock = socket.create_connection(("127.0.0.1", d.imap_port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        self.greeting = self.line()

    def starttls(self):
        unt, t = self.cmd("T", "STARTTLS")
        assert t.startswith("T OK"), t
        self.f.close()
        self.sock = self.d.ssl_context().wrap_socket(self.sock, server_hostname="localhost")
        self.f = self.sock.makefile("rb")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        ln = self.f.readline()
        if not ln:
            raise EOFError("connection closed")
        return ln.rstrip(b"\r\n").decode("utf-8", "replace")

    def until(self, tag):
        got = []
        for _ in range(100000):
            ln = self.line()
            if ln.startswith(tag + " "):
                return got, ln
            got.append(ln)
        raise AssertionError("no tagged answer")

    def cmd(self, tag, text):
        self.send("%s %s\r\n" % (tag, text))
        return self.until(tag)

    def ok(self, text, tag="t"):
        unt, t = self.cmd(tag, text)
        assert t.startswith(tag + " OK"), (text, t, unt)
        return unt, t

    def bad(self, text, tag="t"):
        unt, t = self.cmd(tag, text)
        assert t.startswith(tag + " BAD"), (text, t, unt)
        return unt, t

    def caps(self):
        unt, _ = self.ok("CAPABILITY")
        line = [u for u in unt if u.startswith("* CAPABILITY ")]
        assert len(line) == 1, unt
        return line[0].split()[2:]

    def login(self, user, pw):
        return self.ok("LOGIN %s %s" % (user, pw), tag="L")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def subjects(r, n):
    """The Subject of messages 1..N of the selected mailbox."""
    if n == 0:
        return []
    unt, _ = r.ok("FETCH 1:%d (BODY.PEEK[HEADER.FIELDS (SUBJECT)])" % n)
    text = "\n".join(unt)
    return re.findall(r"Subject: (\S+)", text)


def exists(unt):
    for u in unt:
        m = re.match(r"^\* (\d+) EXISTS$", u)
        if m:
            return int(m.group(1))
    return None


# --------------------------------------------------------------------- tests

def test_unauthenticate_then_another_user_sees_only_their_mail(daemon):
    d = daemon
    deliver(d, "alice", ["alice-1", "alice-2", "alice-3"])
    deliver(d, "bob", ["bob-1"])
    r = Raw(d)
    assert "UNAUTHENTICATE" not in r.greeting      # only once logged in (§3)
    assert "UNAUTHENTICATE" not in r.caps()
    r.login("alice", "alice-pw")
    assert "UNAUTHENTICATE" in r.caps()
    r.ok("CREATE AliceOnly")
    unt, _ = r.ok("SELECT INBOX")
    assert exists(unt) == 3
    assert subjects(r, 3) == ["alice-1", "alice-2", "alice-3"]
    # A \Deleted message must survive: no implicit expunge (RFC 8437 §3).
    r.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")

    unt, t = r.cmd("u", "UNAUTHENTICATE")
    assert t.startswith("u OK"), t
    assert not any("EXPUNGE" in u or "VANISHED" in u for u in unt), unt

    # Not authenticated: the pre-login capabilities, and commands that
    # need a login are protocol errors.
    caps = r.caps()
    assert "UNAUTHENTICATE" not in caps and "AUTH=PLAIN" in caps
    for c in ("SELECT INBOX", "FETCH 1 (FLAGS)", "LIST \"\" *", "STATUS INBOX (MESSAGES)",
              "NOOP extra", "UNAUTHENTICATE", "UNSELECT", "ENABLE CONDSTORE"):
        r.bad(c)
    r.ok("NOOP")

    r.login("bob", "bob-pw")
    unt, _ = r.ok("SELECT INBOX")
    assert exists(unt) == 1
    assert subjects(r, 1) == ["bob-1"]
    unt, _ = r.ok("LIST \"\" *")
    assert not any("AliceOnly" in u for u in unt), unt
    unt, _ = r.ok("STATUS INBOX (MESSAGES)")
    assert any("MESSAGES 1" in u for u in unt), unt
    unt, t = r.cmd("q", "GETQUOTAROOT INBOX")
    assert t.startswith("q OK"), t
    r.ok("LOGOUT")
    r.close()

    # Alice's mailbox is as she left it: three messages, the second
    # flagged \Deleted and not expunged.
    r = Raw(d)
    r.login("alice", "alice-pw")
    unt, _ = r.ok("SELECT INBOX")
    assert exists(unt) == 3
    unt, _ = r.ok("FETCH 2 (FLAGS)")
    assert any("\\Deleted" in u for u in unt), unt
    r.close()
    assert "imap unauthenticate" in d.log_text()


def test_unauthenticate_drops_the_mailbox_watch(daemon):
    d = daemon
    deliver(d, "alice", ["a1"])
    r = Raw(d)
    r.login("alice", "alice-pw")
    r.ok("SELECT INBOX")
    r.ok("UNAUTHENTICATE")
    deliver(d, "alice", ["a2"])
    # Nothing of alice's mailbox reaches the unauthenticated session.
    unt, _ = r.ok("NOOP")
    assert unt == [], unt
    r.login("bob", "bob-pw")
    unt, _ = r.ok("NOOP")
    assert not any("EXISTS" in u or "FETCH" in u for u in unt), unt
    unt, _ = r.ok("SELECT INBOX")
    assert exists(unt) == 0
    r.close()


def test_unauthenticate_resets_enable_state(daemon):
    d = daemon
    deliver(d, "alice", ["m1", "m2", "m3"])
    r = Raw(d)
    r.login("alice", "alice-pw")
    unt, _ = r.ok("ENABLE CONDSTORE QRESYNC")
    assert unt == ["* ENABLED CONDSTORE QRESYNC"], unt
    r.ok("SELECT INBOX")
    unt, _ = r.ok("STORE 1 +FLAGS (\\Flagged)")
    assert any(re.search(r"MODSEQ \(\d+\)", u) for u in unt), unt
    r.ok("SEARCH RETURN (SAVE) ALL")
    r.ok("UNAUTHENTICATE")

    # RFC 8437 §4.1: as if no CONDSTORE-enabling command had been issued.
    r.login("alice", "alice-pw")
    unt, _ = r.ok("SELECT INBOX")
    unt, _ = r.ok("STORE 1 +FLAGS (\\Seen)")
    fetch = [u for u in unt if " FETCH " in u]
    assert fetch and not any("MODSEQ" in u for u in fetch), unt
    # "$" is empty (SEARCHRES, §4.1).
    unt, _ = r.ok("FETCH $ (FLAGS)")
    assert not any(" FETCH " in u for u in unt), unt
    # QRESYNC is off: SELECT (QRESYNC ...) needs ENABLE again.
    r.ok("UNSELECT")
    r.bad("SELECT INBOX (QRESYNC (1 1))")
    # Without QRESYNC an expunge is "* n EXPUNGE", not VANISHED.
    r.ok("SELECT INBOX")
    r.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    unt, _ = r.ok("EXPUNGE")
    assert "* 3 EXPUNGE" in unt and not any("VANISHED" in u for u in unt), unt
    # ENABLE names them again: they were off.
    r.ok("UNSELECT")
    unt, _ = r.ok("ENABLE CONDSTORE QRESYNC")
    assert unt == ["* ENABLED CONDSTORE QRESYNC"], unt
    r.close()


def test_unauthenticate_in_not_authenticated_state_is_bad(daemon):
    r = Raw(daemon)
    r.bad("UNAUTHENTICATE")
    r.login("alice", "alice-pw")
    # Arguments are a syntax error, and the session stays logged in.
    r.bad("UNAUTHENTICATE now")
    r.ok("SELECT INBOX")
    r.bad("UNAUTHENTICATE now")
    r.ok("FETCH 1:* (FLAGS)")
    r.ok("UNAUTHENTICATE")
    r.bad("UNAUTHENTICATE")
    r.close()


def test_unauthenticate_pipelined_with_authenticate(daemon):
    """§3: with no SASL layer the client may pipeline AUTHENTICATE (with
    SASL-IR) right behind UNAUTHENTICATE."""
    d = daemon
    deliver(d, "bob", ["for-bob"])
    r = Raw(d)
    r.login("alice", "alice-pw")
    r.ok("SELECT INBOX")
    ir = base64.b64encode(b"\0bob\0bob-pw").decode()
    r.send("u UNAUTHENTICATE\r\na AUTHENTICATE PLAIN %s\r\ns SELECT INBOX\r\n" % ir)
    _, t = r.until("u")
    assert t.startswith("u OK"), t
    _, t = r.until("a")
    assert t.startswith("a OK"), t
    unt, t = r.until("s")
    assert t.startswith("s OK") and exists(unt) == 1, (t, unt)
    assert subjects(r, 1) == ["for-bob"]
    r.close()


def test_unauthenticate_keeps_tls_after_starttls(daemon_factory):
    # Password login only over TLS: a LOGIN after UNAUTHENTICATE working
    # shows the TLS layer is still there.
    d = daemon_factory(allow_plaintext=False)
    deliver(d, "bob", ["b1", "b2"])
    r = Raw(d)
    assert "LOGINDISABLED" in r.caps()
    r.starttls()
    r.login("alice", "alice-pw")
    r.ok("SELECT INBOX")
    r.ok("UNAUTHENTICATE")
    caps = r.caps()
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps
    unt, t = r.cmd("x", "STARTTLS")
    assert t.startswith("x BAD"), t               # TLS is still on
    r.login("bob", "bob-pw")
    unt, _ = r.ok("SELECT INBOX")
    assert exists(unt) == 2
    r.ok("LOGOUT")
    r.close()


def test_unauthenticate_on_imaps(daemon):
    d = daemon
    deliver(d, "alice", ["x"])
    sock = socket.create_connection(("127.0.0.1", d.imaps_port), timeout=30)
    s = d.ssl_context().wrap_socket(sock, server_hostname="localhost")
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(b"a LOGIN bob bob-pw\r\nb UNAUTHENTICATE\r\nc LOGIN alice alice-pw\r\n"
              b"d SELECT INBOX\r\ne LOGOUT\r\n")
    out = []
    for _ in range(200):
        ln = f.readline()
        if not ln:
            break
        out.append(ln.decode().rstrip("\r\n"))
    tagged = {ln.split(" ", 1)[0]: ln for ln in out if not ln.startswith("*")}
    for tag in "abcde":
        assert tagged[tag].startswith(tag + " OK"), out
    assert "* 1 EXISTS" in out, out
    s.close()


def test_unauthenticate_brings_back_the_preauth_timeout(daemon_factory):
    """After UNAUTHENTICATE the connection is held to the pre-login
    timeout again, not the 30 minutes of an authenticated session."""
    d = daemon_factory(limits={"preauth_timeout": 3})
    r = Raw(d, timeout=120)
    r.login("alice", "alice-pw")
    r.ok("UNAUTHENTICATE")
    lines = []
    try:
        for _ in range(10):
            lines.append(r.line())
    except EOFError:
        pass
    assert any(ln.startswith("* BYE") for ln in lines), lines
    r.close()


def test_unauthenticate_idle_and_utf8(daemon):
    """IDLE ends before UNAUTHENTICATE can run; UTF-8 names, turned on by
    ENABLE IMAP4rev2 (or UTF8=ACCEPT, when offered), are forgotten with the
    rest of what ENABLE did."""
    d = daemon
    r = Raw(d)
    r.login("alice", "alice-pw")
    r.send("i IDLE\r\n")
    assert r.line().startswith("+")
    r.send("x UNAUTHENTICATE\r\n")              # not DONE: ends IDLE with BAD
    _, t = r.until("i")
    assert t.startswith("i BAD"), t
    r.ok("CREATE &AMk-t&AOk-")                     # "Été" in modified UTF-7
    caps = r.caps()
    enables = [c for c in ("IMAP4rev2", "UTF8=ACCEPT") if c in caps]
    assert enables, caps
    for cap in enables:
        unt, _ = r.ok("ENABLE " + cap)
        assert unt == ["* ENABLED " + cap], unt
        unt, _ = r.ok('LIST "" *')
        assert any("Été" in u for u in unt), unt
        r.ok("UNAUTHENTICATE")
        r.login("alice", "alice-pw")
        unt, _ = r.ok('LIST "" *')
        assert any("&AMk-t&AOk-" in u for u in unt), unt
        assert not any("Été" in u for u in unt), unt
    r.ok("LOGOUT")
    r.close()


def test_unauthenticate_under_compress_closes_with_bye(daemon):
    """RFC 8437 §4.1 wants DEFLATE to end with the OK; it cannot be turned
    off here, and §3 forbids NO, so the server says BYE and closes (§3)."""
    d = daemon
    deliver(d, "alice", ["c1"])
    r = Raw(d)
    r.login("alice", "alice-pw")
    if "COMPRESS=DEFLATE" not in r.caps():
        pytest.skip("COMPRESS=DEFLATE not offered")
    r.ok("COMPRESS DEFLATE", tag="z")
    comp = zlib.compressobj(wbits=-15)
    decomp = zlib.decompressobj(wbits=-15)
    r.send(comp.compress(b"s SELECT INBOX\r\nu UNAUTHENTICATE\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    for _ in range(1000):
        chunk = r.sock.recv(65536)
        if not chunk:
            break
        data += decomp.decompress(chunk)
    text = data.decode("utf-8", "replace")
    assert "s OK" in text and "* 1 EXISTS" in text, text
    assert "* BYE" in text and "u OK" not in text, text
    r.close()
    assert "unauthenticate under COMPRESS" in d.log_text()
