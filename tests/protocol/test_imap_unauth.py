"""
UNAUTHENTICATE (RFC 8437) over raw IMAP: the session goes back to not
authenticated state on the same connection, keeps TLS, and forgets the
user, the selected mailbox (without expunging), what ENABLE turned on, the
saved search result and the mailbox watch; the next LOGIN or AUTHENTICATE
may be another user, who sees only their own mail.  Under COMPRESS both
sides end their deflate streams around the OK (RFC 8437 section 4.1) and
the connection goes on in clear, ready for another COMPRESS.
"""

import base64
import re
import socket
import zlib

from conftest import RawImap as Raw, lmtp_send, make_body


def msg(subject, body=b"hello\r\n"):
    return (b"From: a@example.org\r\nTo: someone@example.com\r\nSubject: "
            + subject.encode() + b"\r\n\r\n" + body)


def deliver(d, user, subjects):
    c = d.lmtp()
    for s in subjects:
        _, rr, data = lmtp_send(c, "s@example.org", [user + "@example.com"], msg(s))
        assert data[user + "@example.com"][0] == 250, (rr, data)
    c.quit()


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


# ------------------------------------------------- under COMPRESS (RFC 4978)

class ZRaw:
    """A raw IMAP client whose two directions can each be DEFLATE
    compressed (raw deflate, wbits -15, with Python's zlib as the
    independent implementation) and can end compression: the server's
    stream is inflated until its final block, and whatever follows that end
    is read as clear text again, as RFC 8437 section 4.1 describes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.comp = None
        self.decomp = None
        self.zlines = []        # lines that came through the inflater
        self.server_ends = 0    # server streams seen to their end

    # -- what we send
    def start_client(self):
        self.comp = zlib.compressobj(wbits=-15)

    def packet(self, data, end=False):
        """DATA as it goes on the wire now; END closes our stream after it
        (Z_FINISH), so later packets are clear."""
        if not self.comp:
            return data
        out = self.comp.compress(data)
        if end:
            out += self.comp.flush(zlib.Z_FINISH)
            self.comp = None
        else:
            out += self.comp.flush(zlib.Z_SYNC_FLUSH)
        return out

    def send(self, data, end=False):
        self.sock.sendall(self.packet(data, end))

    # -- what we receive
    def start_server(self):
        """The server compresses after the line just read; bytes already
        buffered behind that line are compressed."""
        self.decomp = zlib.decompressobj(wbits=-15)
        pending, self.buf = self.buf, b""
        self._feed(pending)

    def _feed(self, raw):
        if not self.decomp:
            self.buf += raw
            return
        text = self.decomp.decompress(raw)
        self.zlines.append(text)
        self.buf += text
        if self.decomp.eof:
            self.server_ends += 1
            rest = self.decomp.unused_data
            self.decomp = None
            self.buf += rest

    def compressed_text(self):
        return b"".join(self.zlines)

    def line(self):
        for _ in range(100000):
            if b"\r\n" in self.buf:
                out, self.buf = self.buf.split(b"\r\n", 1)
                return out.decode("utf-8", "replace")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf[:200])
            self._feed(chunk)
        raise AssertionError("no line end")

    def until(self, tag):
        got = []
        for _ in range(100000):
            ln = self.line()
            if ln.startswith(tag + " "):
                return got, ln
            got.append(ln)
        raise AssertionError("no tagged answer for %r" % tag)

    def ok(self, tag, text):
        self.send(("%s %s\r\n" % (tag, text)).encode())
        unt, t = self.until(tag)
        assert t.startswith(tag + " OK"), (text, t, unt)
        return unt, t

    def compress(self, tag="z"):
        self.ok(tag, "COMPRESS DEFLATE")
        self.start_client()
        self.start_server()


def zconnect(d, tls=False):
    sock = socket.create_connection(("127.0.0.1", d.imaps_port if tls else d.imap_port),
                                    timeout=30)
    if tls:
        sock = d.ssl_context().wrap_socket(sock, server_hostname="localhost")
    z = ZRaw(sock)
    assert z.line().startswith("* OK")
    return z


def assert_server_stream_ended_with(z, tag):
    """The server ended its deflate stream (final block) right after the
    CRLF of TAG's OK: the inflater saw the end, and the OK is the last
    thing it produced."""
    assert z.server_ends == 1 and z.decomp is None, z.server_ends
    text = z.compressed_text()
    assert text.endswith(b"\r\n"), text[-200:]
    last = text[:-2].rsplit(b"\r\n", 1)[-1]
    assert last.startswith(tag.encode() + b" OK"), text[-200:]


def test_unauthenticate_under_compress_ends_it_both_ways(daemon):
    d = daemon
    deliver(d, "alice", ["c1"])
    deliver(d, "bob", ["b1", "b2"])
    z = zconnect(d)
    z.ok("L", "LOGIN alice alice-pw")
    z.compress()
    unt, _ = z.ok("s", "SELECT INBOX")
    assert exists(unt) == 1, unt

    # Our stream ends right after the command's CRLF (Z_FINISH).
    z.send(b"u UNAUTHENTICATE\r\n", end=True)
    _, t = z.until("u")
    assert t.startswith("u OK"), t
    assert_server_stream_ended_with(z, "u")
    assert z.buf == b"", z.buf              # nothing follows the end yet

    # Both directions are clear now, and the session is not authenticated.
    z.send(b"x SELECT INBOX\r\n")
    _, t = z.until("x")
    assert t.startswith("x BAD"), t
    z.ok("L2", "LOGIN bob bob-pw")
    unt, _ = z.ok("s2", "SELECT INBOX")
    assert exists(unt) == 2, unt

    # COMPRESS may start again, with fresh streams both ways.
    z.compress("z2")
    unt, _ = z.ok("f", "FETCH 1:2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert re.findall(r"Subject: (\S+)", "\n".join(unt)) == ["b1", "b2"], unt
    assert z.decomp is not None                 # the answer came compressed
    z.send(b"o LOGOUT\r\n")
    unt, t = z.until("o")
    assert t.startswith("o OK") and any(u.startswith("* BYE") for u in unt), (t, unt)
    z.sock.close()
    assert "imap unauthenticate (ending COMPRESS)" in d.log_text()


def test_unauthenticate_under_compress_pipelined(daemon):
    """One packet: compressed SELECT and UNAUTHENTICATE with our stream's
    end, then clear LOGIN, SELECT and COMPRESS, then commands in a second
    compressed stream.  Each byte must be read through the right layer."""
    d = daemon
    deliver(d, "alice", ["a1"])
    deliver(d, "bob", ["b1", "b2", "b3"])
    z = zconnect(d)
    z.ok("L", "LOGIN alice alice-pw")
    z.compress()
    packet = z.packet(b"s SELECT INBOX\r\nu UNAUTHENTICATE\r\n", end=True)
    packet += b"L2 LOGIN bob bob-pw\r\ns2 SELECT INBOX\r\nz2 COMPRESS DEFLATE\r\n"
    z.start_client()
    packet += z.packet(b"n NOOP\r\nf FETCH 3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    z.sock.sendall(packet)

    unt, t = z.until("s")
    assert t.startswith("s OK") and exists(unt) == 1, (t, unt)
    _, t = z.until("u")
    assert t.startswith("u OK"), t
    assert_server_stream_ended_with(z, "u")
    _, t = z.until("L2")
    assert t.startswith("L2 OK"), t
    unt, t = z.until("s2")
    assert t.startswith("s2 OK") and exists(unt) == 3, (t, unt)
    _, t = z.until("z2")
    assert t.startswith("z2 OK"), t
    z.start_server()
    _, t = z.until("n")
    assert t.startswith("n OK"), t
    unt, t = z.until("f")
    assert t.startswith("f OK"), t
    assert "Subject: b3" in "\n".join(unt), unt
    assert z.decomp is not None
    z.sock.close()


def test_unauthenticate_under_compress_client_end_comes_later(daemon):
    """The client's final block may follow in a later packet than its
    UNAUTHENTICATE line: until it comes, input is still inflated."""
    d = daemon
    deliver(d, "bob", ["b1"])
    z = zconnect(d)
    z.ok("L", "LOGIN alice alice-pw")
    z.compress()
    z.send(b"u UNAUTHENTICATE\r\n")           # a sync flush, not the end
    _, t = z.until("u")
    assert t.startswith("u OK"), t
    assert_server_stream_ended_with(z, "u")
    z.sock.sendall(z.comp.flush(zlib.Z_FINISH))
    z.comp = None
    unt, _ = z.ok("L2", "LOGIN bob bob-pw")
    unt, _ = z.ok("s", "SELECT INBOX")
    assert exists(unt) == 1, unt
    z.sock.close()


def test_unauthenticate_under_compress_over_tls(daemon):
    """TLS stays (RFC 8437 section 3), DEFLATE above it goes; a large
    message through the second compressed stream checks the layers."""
    d = daemon
    big = msg("big", make_body(300 * 1024, seed=8437, eightbit=False))
    assert d.deliver("bob", big) == 0
    z = zconnect(d, tls=True)
    z.ok("L", "LOGIN alice alice-pw")
    z.compress()
    z.sock.sendall(z.packet(b"u UNAUTHENTICATE\r\n", end=True)
                   + b"L2 LOGIN bob bob-pw\r\n")
    _, t = z.until("u")
    assert t.startswith("u OK"), t
    assert_server_stream_ended_with(z, "u")
    _, t = z.until("L2")
    assert t.startswith("L2 OK"), t
    z.send(b"x STARTTLS\r\n")
    _, t = z.until("x")
    assert t.startswith("x BAD"), t             # TLS is still on
    z.compress("z2")
    z.ok("s", "SELECT INBOX")
    z.send(b"f FETCH 1 BODY[]\r\n")
    head = z.line()
    m = re.match(r"^\* 1 FETCH \(BODY\[\] \{(\d+)\}$", head)
    assert m, head
    n = int(m.group(1))
    for _ in range(100000):
        if len(z.buf) >= n:
            break
        z._feed(z.sock.recv(65536))
    assert z.buf[:n] == big
    z.buf = z.buf[n:]
    _, t = z.until("f")
    assert t.startswith("f OK"), t
    z.sock.close()


def test_unauthenticate_under_compress_then_starttls(daemon):
    """Once both streams have ended the connection is clear again, so a
    STARTTLS there is a normal upgrade, and COMPRESS after the next login
    sits above the new TLS layer."""
    d = daemon
    deliver(d, "bob", ["b1"])
    z = zconnect(d)
    z.ok("L", "LOGIN alice alice-pw")
    z.compress()
    z.send(b"u UNAUTHENTICATE\r\n", end=True)
    _, t = z.until("u")
    assert t.startswith("u OK"), t
    assert_server_stream_ended_with(z, "u")
    z.ok("T", "STARTTLS")
    assert z.buf == b"", z.buf
    z.sock = d.ssl_context().wrap_socket(z.sock, server_hostname="localhost")
    z.ok("L2", "LOGIN bob bob-pw")
    z.compress("z2")
    unt, _ = z.ok("s", "SELECT INBOX")
    assert exists(unt) == 1, unt
    z.sock.close()
