"""
test_imap_compress.py - IMAP COMPRESS=DEFLATE (RFC 4978) over a raw socket.

imaplib has no COMPRESS, so these tests speak IMAP themselves and use
Python's zlib as the independent DEFLATE implementation: raw deflate
(wbits -15) with a Z_SYNC_FLUSH after each batch of commands, as RFC 4978
clients do.  They check what comes back byte for byte (a FETCH BODY[]
equals the delivered message), that the server's side really is
compressed, pipelining behind COMPRESS, the refusals, implicit TLS, a
deflate bomb, a broken stream and a client that ends its stream.
"""

import re
import socket
import ssl
import zlib

import pytest

from conftest import CLIENT_TIMEOUT, make_body

MSG_HEAD = (b"From: Carol <carol@example.com>\r\nTo: alice@example.com\r\n"
            b"Subject: compressed\r\n\r\n")


class ZImap:
    """A line-reading IMAP client over SOCK that can switch on DEFLATE."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.comp = None
        self.decomp = None
        self.raw_in = 0     # octets received from the socket after COMPRESS

    def send(self, data):
        if self.comp:
            data = self.comp.compress(data) + self.comp.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def compress_client(self):
        """Compress what we send from now on."""
        self.comp = zlib.compressobj(wbits=-15)

    def compress_server(self):
        """What the server sends after the line just read is compressed,
        including anything already buffered behind that line."""
        self.decomp = zlib.decompressobj(wbits=-15)
        self.raw_in += len(self.buf)
        self.buf = self.decomp.decompress(self.buf)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; have %r" % self.buf[:200])
        if self.decomp:
            self.raw_in += len(chunk)
            chunk = self.decomp.decompress(chunk)
        self.buf += chunk

    def line(self):
        for _ in range(1_000_000):
            if b"\r\n" in self.buf:
                out, self.buf = self.buf.split(b"\r\n", 1)
                return out
            self._fill()
        raise AssertionError("no line end")

    def read(self, n):
        for _ in range(1_000_000):
            if len(self.buf) >= n:
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            self._fill()
        raise AssertionError("short read")

    def until_tagged(self, tag):
        """Untagged lines (literals inlined) up to the tagged one:
        (untagged list, tagged line)."""
        untagged = []
        for _ in range(100_000):
            line = self.line()
            m = re.search(rb"\{(\d+)\}$", line)
            if m:
                line += b"\r\n" + self.read(int(m.group(1))) + self.line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)
        raise AssertionError("no tagged answer for %r" % tag)

    def command(self, tag, text):
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def close(self):
        self.sock.close()


def connect(d, tls=False):
    if tls:
        raw = socket.create_connection(("127.0.0.1", d.imaps_port), timeout=CLIENT_TIMEOUT)
        sock = d.ssl_context().wrap_socket(raw, server_hostname="localhost")
    else:
        sock = d.raw(d.imap_port)
    c = ZImap(sock)
    greeting = c.line()
    assert greeting.startswith(b"* OK"), greeting
    assert b"COMPRESS=DEFLATE" not in greeting, "COMPRESS is a command-auth extension"
    return c


def login(c, d, user="alice"):
    _, ok = c.command(b"l", b"LOGIN %s %s" % (user.encode(), d.password(user).encode()))
    assert ok.startswith(b"l OK"), ok
    assert b"COMPRESS=DEFLATE" in ok, ok


def compress(c):
    _, ok = c.command(b"z", b"COMPRESS DEFLATE")
    assert ok.startswith(b"z OK"), ok
    c.compress_client()
    c.compress_server()


def body_of(untagged, seq):
    """The BODY[] literal of message SEQ among untagged FETCH lines."""
    for line in untagged:
        m = re.match(rb"\* %d FETCH \(.*BODY\[\] \{(\d+)\}\r\n" % seq, line, re.S)
        if m:
            start = m.end()
            return line[start:start + int(m.group(1))]
    raise AssertionError("no BODY[] in %r" % [u[:80] for u in untagged])


def fetch_body(c, tag=b"f", seq=1):
    untagged, ok = c.command(tag, b"FETCH %d BODY[]" % seq)
    assert ok.startswith(tag + b" OK"), ok
    return body_of(untagged, seq)


def test_compress_login_select_fetch(daemon):
    # Repetitive text: compression must shrink what the server sends.
    body = b"".join(b"line %d of a very repetitive message body\r\n" % (i % 50)
                    for i in range(5000))
    msg = MSG_HEAD + body
    assert daemon.deliver("alice", msg) == 0

    c = connect(daemon)
    untagged, ok = c.command(b"c", b"CAPABILITY")
    assert b"COMPRESS=DEFLATE" not in b"".join(untagged)
    login(c, daemon)
    untagged, ok = c.command(b"c2", b"CAPABILITY")
    assert b"COMPRESS=DEFLATE" in b"".join(untagged), untagged
    compress(c)

    untagged, ok = c.command(b"s", b"SELECT INBOX")
    assert ok.startswith(b"s OK"), ok
    assert b"* 1 EXISTS" in untagged, untagged
    got = fetch_body(c)
    assert got == msg
    # RFC 4978 exists to save bandwidth: 200 KB of repeated lines must
    # arrive in far fewer octets.
    assert c.raw_in < len(msg) // 4, (c.raw_in, len(msg))

    # STARTTLS is a not-authenticated command, so never after COMPRESS.
    _, ok = c.command(b"t", b"STARTTLS")
    assert ok.startswith(b"t BAD"), ok
    _, ok = c.command(b"o", b"LOGOUT")
    assert ok.startswith(b"o OK"), ok
    c.close()


def test_compress_pipelined_commands_after_compress(daemon):
    """RFC 4978 section 3: the client compresses from the first command
    after COMPRESS.  Commands sent in the same packet as COMPRESS, before
    its OK, must be inflated, not read as clear text."""
    assert daemon.deliver("alice", MSG_HEAD + b"pipelined\r\n") == 0
    c = connect(daemon)
    login(c, daemon)
    comp = zlib.compressobj(wbits=-15)
    after = comp.compress(b"p1 NOOP\r\np2 SELECT INBOX\r\np3 FETCH 1 BODY[]\r\n")
    after += comp.flush(zlib.Z_SYNC_FLUSH)
    c.sock.sendall(b"z COMPRESS DEFLATE\r\n" + after)
    ok = c.line()
    assert ok.startswith(b"z OK"), ok
    c.comp = comp
    c.compress_server()
    _, ok = c.until_tagged(b"p1")
    assert ok.startswith(b"p1 OK"), ok
    untagged, ok = c.until_tagged(b"p2")
    assert ok.startswith(b"p2 OK"), ok
    untagged, ok = c.until_tagged(b"p3")
    assert ok.startswith(b"p3 OK"), ok
    assert body_of(untagged, 1) == MSG_HEAD + b"pipelined\r\n"
    # And later commands, sent on their own, still work.
    _, ok = c.command(b"n", b"NOOP")
    assert ok.startswith(b"n OK"), ok
    c.close()


def test_compress_refusals(daemon):
    c = connect(daemon)
    # Not before login (RFC 4978 section 5: command-auth).
    _, ok = c.command(b"a", b"COMPRESS DEFLATE")
    assert ok.startswith(b"a BAD"), ok
    login(c, daemon)
    # An unknown mechanism is BAD, and compression stays off.
    _, ok = c.command(b"b", b"COMPRESS LZW")
    assert ok.startswith(b"b BAD"), ok
    _, ok = c.command(b"b2", b"COMPRESS")
    assert ok.startswith(b"b2 BAD"), ok
    _, ok = c.command(b"b3", b"NOOP")
    assert ok == b"b3 OK NOOP completed", ok
    # Lower case is the same mechanism (RFC 4978 section 5).
    _, ok = c.command(b"z", b"compress deflate")
    assert ok.startswith(b"z OK"), ok
    c.compress_client()
    c.compress_server()
    # A second one: NO [COMPRESSIONACTIVE], and the session goes on.
    _, ok = c.command(b"d", b"COMPRESS DEFLATE")
    assert ok.startswith(b"d NO [COMPRESSIONACTIVE]"), ok
    untagged, ok = c.command(b"e", b"LIST \"\" \"*\"")
    assert ok.startswith(b"e OK"), ok
    assert any(b"INBOX" in u for u in untagged), untagged
    c.close()


def test_compress_over_implicit_tls(daemon):
    """TLS below, DEFLATE above (RFC 4978 section 3), with a message large
    enough that the output queue fills and drains several times."""
    big = MSG_HEAD + make_body(3 * 1024 * 1024, seed=4978)
    assert daemon.deliver("alice", big) == 0
    assert daemon.deliver("alice", MSG_HEAD + b"second\r\n") == 0
    c = connect(daemon, tls=True)
    login(c, daemon)
    compress(c)
    untagged, ok = c.command(b"s", b"EXAMINE INBOX")
    assert ok.startswith(b"s OK"), ok
    assert fetch_body(c, b"f1", 1) == big
    assert fetch_body(c, b"f2", 2) == MSG_HEAD + b"second\r\n"
    _, ok = c.command(b"d", b"COMPRESS DEFLATE")
    assert ok.startswith(b"d NO [COMPRESSIONACTIVE]"), ok
    # What imaplib sees on a fresh connection is unchanged.
    m = daemon.imaps("alice", daemon.password("alice"))
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("2", "(BODY[])")
    assert typ == "OK" and data[0][1] == MSG_HEAD + b"second\r\n"
    m.logout()
    c.close()


def test_compress_append_literal(daemon):
    """A literal (bytes mode) sent compressed is stored as sent, and the
    other protocol sees it."""
    c = connect(daemon)
    login(c, daemon)
    compress(c)
    msg = MSG_HEAD + make_body(200 * 1024, seed=7, eightbit=False)
    c.send(b"a APPEND INBOX {%d}\r\n" % len(msg))
    cont = c.line()
    assert cont.startswith(b"+"), cont
    c.send(msg + b"\r\n")
    _, ok = c.until_tagged(b"a")
    assert ok.startswith(b"a OK"), ok
    c.close()
    assert daemon.messages("alice") == [msg]


def test_compress_deflate_bomb(daemon):
    """A few KiB that inflate to 8 MiB of one byte, as one line: the line
    limit answers it like clear input, memory does not follow the
    inflated size, and the session and the daemon go on."""
    c = connect(daemon)
    login(c, daemon)
    compress(c)
    _, ok = c.command(b"n0", b"NOOP")   # buffers of a compressed session exist
    rss_before = daemon.rss_kb()
    bomb_size = 8 * 1024 * 1024
    comp = c.comp
    packet = comp.compress(b"x" * bomb_size + b"\r\n")
    packet += comp.compress(b"n1 NOOP\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)
    assert len(packet) < 64 * 1024
    c.sock.sendall(packet)
    untagged, ok = c.until_tagged(b"n1")
    assert ok.startswith(b"n1 OK"), ok
    assert any(b"BAD" in u and b"too long" in u for u in untagged), untagged
    rss_after = daemon.rss_kb()
    # The inflated line never sits in memory: growth stays far below it.
    assert rss_after - rss_before < bomb_size // 1024 // 2, (rss_before, rss_after)
    _, ok = c.command(b"n2", b"NOOP")
    assert ok.startswith(b"n2 OK"), ok
    c.close()
    m = daemon.imap("bob", daemon.password("bob"))
    assert m.noop()[0] == "OK"
    m.logout()


def test_compress_broken_stream_closes(daemon):
    c = connect(daemon)
    login(c, daemon)
    compress(c)
    # A final block of the reserved type 3 (RFC 1951 section 3.2.3): invalid.
    c.sock.sendall(b"\xff\xff\xff\xff")
    with pytest.raises((EOFError, ConnectionResetError)):
        for _ in range(100):
            c._fill()
    c.close()
    assert "compressed input is broken" in daemon.log_text()
    m = daemon.imap("alice", daemon.password("alice"))
    assert m.noop()[0] == "OK"
    m.logout()


def test_compress_idle_gets_pushed_responses(daemon):
    """Output written outside any command (IDLE's EXISTS after a delivery
    by another protocol) is flushed through the compressor at once."""
    assert daemon.deliver("alice", MSG_HEAD + b"one\r\n") == 0
    c = connect(daemon)
    login(c, daemon)
    compress(c)
    _, ok = c.command(b"s", b"SELECT INBOX")
    assert ok.startswith(b"s OK"), ok
    c.send(b"i IDLE\r\n")
    assert c.line().startswith(b"+"), "no IDLE continuation"
    lm = daemon.lmtp()
    lm.sendmail("carol@example.com", ["alice@example.com"], MSG_HEAD + b"two\r\n")
    lm.quit()
    for _ in range(100):
        line = c.line()
        if line == b"* 2 EXISTS":
            break
    else:
        raise AssertionError("no EXISTS while idling")
    c.send(b"DONE\r\n")
    _, ok = c.until_tagged(b"i")
    assert ok.startswith(b"i OK"), ok
    c.close()


def test_compress_client_stream_end_is_end_of_input(daemon):
    """A client that ends its deflate stream (a final block) outside
    UNAUTHENTICATE has ended its input: what came before the end is
    answered, nothing sent after it is read as a command, and the server
    closes.  (UNAUTHENTICATE, the one place where the stream may end and
    the connection go on in clear, is in test_imap_unauth.py.)"""
    c = connect(daemon)
    login(c, daemon)
    compress(c)
    c.sock.sendall(c.comp.compress(b"n NOOP\r\n") + c.comp.flush(zlib.Z_FINISH)
                   + b"x LOGOUT\r\n")
    _, ok = c.until_tagged(b"n")
    assert ok.startswith(b"n OK"), ok
    with pytest.raises((EOFError, ConnectionResetError)):
        for _ in range(100):
            c._fill()
    assert b"x " not in c.buf and b"BYE" not in c.buf, c.buf
    c.close()
    assert "the client ended its compressed stream" in daemon.log_text()
    m = daemon.imap("alice", daemon.password("alice"))
    assert m.noop()[0] == "OK"
    m.logout()
