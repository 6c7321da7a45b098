"""
conftest.py - the harness of onebox's protocol tests (tests/protocol/).

Every test that asks for a daemon gets a fresh data folder, a config file
written from the test's overrides, users made with `onebox user add`, and
`onebox serve -c` started on free loopback ports (127.0.0.1 and ::1 only).
The daemon is the sanitizer build (ONEBOX_BIN, set by ./test.sh).  At
teardown it gets SIGTERM and must exit 0, and no log it or the CLI wrote may
hold an AddressSanitizer, UBSan or LeakSanitizer report.

The clients are independent implementations (smtplib.LMTP, poplib, ssl);
the helpers below only fill the gaps those modules leave (LMTP's
per-recipient replies after DATA, exact bytes back from RETR).
"""

import imaplib
import os
import pathlib
import poplib
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

import random

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ONEBOX_BIN = os.environ.get("ONEBOX_BIN") or str(REPO / "build-test" / "onebox")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# poplib refuses reply lines over 2048 octets; messages with 100 KB lines
# are part of what we test, so lift the client's limit (not the server's).
poplib._MAXLINE = 1 << 24

CLIENT_TIMEOUT = 60       # seconds any one socket operation may block
START_TIMEOUT = 20        # seconds for `onebox serve` to accept on every port
STOP_TIMEOUT = 60         # seconds for a clean exit after SIGTERM (LSan runs then)
TEST_TIME_BOUND = 300     # seconds a whole test may take before it is failed

DEFAULT_USERS = {"alice": "alice-pw", "bob": "bob-pw"}


# ------------------------------------------------------------ environment

def sanitizer_env():
    """The environment for every onebox process the tests run."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS",
                   "detect_leaks=1:halt_on_error=1:abort_on_error=0:"
                   "print_stacktrace=1:check_initialization_order=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.setdefault("LSAN_OPTIONS", "print_suppressions=0")
    return env


def sanitizer_findings(text):
    """Lines of TEXT around any sanitizer report, or '' if there is none."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            out.append("\n".join(lines[max(0, i - 2):i + 30]))
            if len(out) >= 3:
                break
    return "\n...\n".join(out)


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = ipv6_loopback_available()


def free_ports(n, host="127.0.0.1"):
    """N distinct port numbers that were free a moment ago on HOST.  Another
    process may take one before the daemon binds it: start() retries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------- libconfig

def cfg_value(v):
    """A Python value as libconfig text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if -2**31 <= v < 2**31 else "%dL" % v
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, cfg_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "( " + ", ".join(cfg_value(x) for x in v) + " )"
    raise TypeError("no libconfig form for %r" % (v,))


def cfg_text(settings):
    """Top-level SETTINGS (a dict) as a config file, one setting a line."""
    return "".join("%s = %s;\n" % (k, cfg_value(v)) for k, v in settings.items())


# ----------------------------------------------------------- message bytes

def make_body(size, seed, eightbit=True, line_max=200):
    """About SIZE octets of CRLF-terminated lines of random length (0 to
    LINE_MAX) and random bytes: 8-bit (every octet but NUL, CR, LF) or
    printable ASCII.  Lines that start with a dot, or are a single dot, come
    up by chance in large bodies, as they do in real mail."""
    rnd = random.Random(seed)
    raw = rnd.randbytes(size)
    if eightbit:
        raw = raw.translate(bytes.maketrans(b"\x00\r\n", b"@#%"))
    else:
        raw = raw.translate(bytes(0x20 + b % 0x5f for b in range(256)))
    lines = []
    pos = 0
    while pos < size:
        n = rnd.randint(0, line_max)
        lines.append(raw[pos:pos + n])
        pos += n
    return b"\r\n".join(lines) + b"\r\n"


def crlf(data):
    """DESIGN §3 / store.h: a bare LF or bare CR becomes CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def lmtp_stored(msg):
    """What the store must hold after smtplib sends MSG as DATA: smtplib ends
    the data with CRLF if MSG does not (so b'' arrives as one empty line),
    and the server turns bare CR/LF into CRLF."""
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    return crlf(msg)


def retr_bytes(p, n):
    """Message N of POP3 session P, as the octets the server stored:
    poplib has removed the dot-stuffing and split the lines."""
    resp, lines, _ = p.retr(n)
    assert resp.startswith(b"+OK"), resp
    return b"".join(line + b"\r\n" for line in lines)


def uidl_map(p):
    """{msg number: unique id} from UIDL without an argument."""
    resp, lines, _ = p.uidl()
    assert resp.startswith(b"+OK"), resp
    out = {}
    for line in lines:
        num, uid = line.split(b" ", 1)
        out[int(num)] = uid.decode("ascii")
    return out


def list_map(p):
    """{msg number: size in octets} from LIST without an argument."""
    resp, lines, _ = p.list()
    assert resp.startswith(b"+OK"), resp
    out = {}
    for line in lines:
        num, size = line.split()
        out[int(num)] = int(size)
    return out




class TaggedImap:
    """A logged-in raw IMAP connection that numbers its own tags: cmd()
    returns (untagged lines, tagged line after the tag) as bytes without
    CRLF.  Literals in responses are not expected."""

    def __init__(self, daemon, user="alice", timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", daemon.imap_port), timeout=timeout)
        self.f = self.sock.makefile("rb")
        self.greeting = self.line()
        self.n = 0
        self.ok("LOGIN %s %s" % (user, daemon.password(user)))

    def line(self):
        ln = self.f.readline()
        if not ln:
            raise EOFError("connection closed")
        assert ln.endswith(b"\r\n"), ln
        return ln[:-2]

    def cmd(self, text):
        if isinstance(text, str):
            text = text.encode()
        self.n += 1
        tag = b"t%d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        unt = []
        for _ in range(100000):
            ln = self.line()
            if ln.startswith(tag + b" "):
                return unt, ln[len(tag) + 1:]
            unt.append(ln)
        raise AssertionError("no tagged answer to %r" % text)

    def ok(self, text):
        unt, tagged = self.cmd(text)
        assert tagged.startswith(b"OK"), (text, unt, tagged)
        return unt

    LIST_RE = re.compile(rb'\* (LIST|LSUB) \(([^)]*)\) "/" (\S+|"[^"]*")( .*)?$')

    def listing(self, text):
        """{name: (set of attributes, extended data or b"")} from a LIST
        or LSUB command that must succeed; each name at most once (RFC 5258
        section 3.3 rule 1).  STATUS lines (LIST-STATUS) are skipped."""
        out = {}
        for ln in self.ok(text):
            if ln.startswith(b"* STATUS"):
                continue
            m = self.LIST_RE.match(ln)
            assert m, ln
            name = m.group(3).strip(b'"').decode()
            assert name not in out, ("listed twice", name)
            out[name] = (set(m.group(2).split()), (m.group(4) or b"").strip())
        return out

    def close(self):
        self.f.close()
        self.sock.close()


class RawImap:
    """A raw IMAP client for the exact bytes of responses: send lines,
    read up to a tag.  Lines are returned as text without CRLF."""

    def __init__(self, d, port=None, timeout=30):
        self.d = d
        self.sock = socket.create_connection(("127.0.0.1", port or d.imap_port),
                                             timeout=timeout)
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
        """Lines up to and including the one tagged TAG: (untagged, tagged)."""
        got = []
        for _ in range(1000000):
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

    def messages(self, mailbox="INBOX"):
        unt, _ = self.ok("STATUS %s (MESSAGES)" % mailbox)
        for u in unt:
            if u.startswith("* STATUS"):
                return int(u.rsplit("MESSAGES ", 1)[1].rstrip(")"))
        raise AssertionError(unt)

    def login(self, user="alice", pw="alice-pw"):
        return self.ok("LOGIN %s %s" % (user, pw), tag="L")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def lmtp_send(conn, sender, rcpts, msg, mail_options=()):
    """One LMTP transaction.  smtplib.LMTP.sendmail reads a single reply
    after DATA; RFC 2033 §4.2 sends one per accepted recipient, so this runs
    the steps itself.  Returns (mail_reply, {rcpt: rcpt_reply},
    {rcpt: reply_after_data}) with each reply a (code, text) pair."""
    conn.ehlo_or_helo_if_needed()
    mail = conn.mail(sender, list(mail_options))
    if mail[0] != 250:
        conn.rset()
        return mail, {}, {}
    rcpt_replies = {}
    for r in rcpts:
        rcpt_replies[r] = conn.rcpt(r)
    accepted = [r for r in rcpts if rcpt_replies[r][0] in (250, 251)]
    if not accepted:
        conn.rset()
        return mail, rcpt_replies, {}
    data_replies = {accepted[0]: conn.data(msg)}
    for r in accepted[1:]:
        data_replies[r] = conn.getreply()
    return mail, rcpt_replies, data_replies


class Conn:
    """A raw client connection read by lines.  close() closes the socket
    for real (a socket with a makefile() still open is not closed)."""

    def __init__(self, sock):
        self.sock = sock
        self.f = sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def readline(self, limit=-1):
        return self.f.readline(limit)

    def read(self, n):
        return self.f.read(n)

    def close(self):
        self.f.close()
        self.sock.close()


class Replies:
    """Reads SMTP/LMTP replies (possibly multi-line) from a raw socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply line; have %r" % self.buf[:200])
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    out, self.buf = self.buf, b""
                    return out
                return None
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out.rstrip(b"\r")

    def reply(self):
        """(code, [text lines]) of the next SMTP reply, or None at EOF."""
        texts = []
        for _ in range(1000):
            line = self.line()
            if line is None:
                return None
            assert re.match(rb"^[2-5][0-9][0-9][ -]", line + b" "), line
            texts.append(line[4:])
            if line[3:4] != b"-":
                return int(line[:3]), texts
        raise AssertionError("reply of more than 1000 lines")


# ------------------------------------------------------------- the daemon

def run_onebox(*args, input=b"", timeout=120):
    """Run `onebox ARGS` to completion from / (another folder than the
    config's, so relative paths must resolve against the config file) and
    return the CompletedProcess.  A sanitizer report fails the test."""
    r = subprocess.run([ONEBOX_BIN, *args], input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=sanitizer_env(), timeout=timeout, cwd="/")
    found = sanitizer_findings(r.stderr.decode("utf-8", "replace"))
    if found:
        raise AssertionError("onebox %s: sanitizer report:\n%s" % (" ".join(args), found))
    return r


class DaemonError(AssertionError):
    pass


class Daemon:
    """One `onebox serve` over one data folder, and clients for it."""

    def __init__(self, root, certs, users, settings, ipv6):
        self.dir = pathlib.Path(root)
        self.conf = self.dir / "onebox.conf"
        self.users = dict(users)
        self.settings = settings
        self.tls = "tls" in settings
        self.ipv6 = ipv6 and HAVE_IPV6
        self.cafile = certs["cert"] if certs else None
        if self.tls:
            # Relative names: they must resolve against the config's folder.
            shutil.copy(certs["cert"], self.dir / "cert.pem")
            shutil.copy(certs["key"], self.dir / "key.pem")
        self.lmtp_socket = self.dir / "lmtp.sock"
        self.proc = None
        self.logs = []
        self.problems = []
        self._pick_ports()
        self.write_config()

    # --- configuration

    def _pick_ports(self):
        p = free_ports(5)
        self.pop3_port, self.lmtp_port, self.pop3s_port, self.imap_port, self.imaps_port = p
        self.pop3_v6_port = free_ports(1, "::1")[0] if self.ipv6 else None

    def listen(self):
        out = [{"protocol": "pop3", "address": "127.0.0.1", "port": self.pop3_port},
               {"protocol": "lmtp", "address": "127.0.0.1", "port": self.lmtp_port},
               {"protocol": "lmtp", "path": "lmtp.sock"},
               {"protocol": "imap", "address": "127.0.0.1", "port": self.imap_port}]
        if self.tls:
            out.append({"protocol": "pop3s", "address": "127.0.0.1", "port": self.pop3s_port})
            out.append({"protocol": "imaps", "address": "127.0.0.1", "port": self.imaps_port})
        if self.ipv6:
            out.append({"protocol": "pop3", "address": "::1", "port": self.pop3_v6_port})
        return out

    def write_config(self):
        s = dict(self.settings)
        s["listen"] = self.listen()
        self.conf.write_text(cfg_text(s))

    def update_settings(self, overrides):
        """Merge OVERRIDES ({group: {key: value}} or {key: value}) into the
        settings and rewrite the config file."""
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(self.settings.get(k), dict):
                self.settings[k] = {**self.settings[k], **v}
            else:
                self.settings[k] = v
        self.write_config()

    def tcp_endpoints(self):
        out = [("127.0.0.1", self.pop3_port), ("127.0.0.1", self.lmtp_port),
               ("127.0.0.1", self.imap_port)]
        if self.tls:
            out.append(("127.0.0.1", self.pop3s_port))
            out.append(("127.0.0.1", self.imaps_port))
        if self.ipv6:
            out.append(("::1", self.pop3_v6_port))
        return out

    # --- the CLI

    def cli(self, *args, input=b"", timeout=120):
        """`onebox ARGS -c CONF`: see run_onebox."""
        return run_onebox(*args, "-c", str(self.conf), input=input, timeout=timeout)

    def user_add(self, name, password):
        r = self.cli("user", "add", name, input=password.encode() + b"\n")
        if r.returncode != 0:
            raise DaemonError("onebox user add %s: exit %d: %s"
                              % (name, r.returncode, r.stderr.decode(errors="replace")))

    def deliver(self, name, data):
        """`onebox deliver NAME` with DATA on stdin; returns the exit code."""
        return self.cli("deliver", name, input=data).returncode

    # --- lifecycle

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def start(self, fixed_ports=False):
        for attempt in range(4):
            log = self.dir / ("serve.%d.log" % len(self.logs))
            self.logs.append(log)
            with open(log, "wb") as f:
                self.proc = subprocess.Popen(
                    [ONEBOX_BIN, "serve", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                    stdout=f, stderr=subprocess.STDOUT, env=sanitizer_env(), cwd="/")
            why = self._wait_ready()
            if why is None:
                return
            exited = self.proc.poll() is not None
            if exited and attempt < 3 and re.search(r"(?i)in use", log.read_text(errors="replace")):
                # A port was taken between our probe and the daemon's bind.
                if not fixed_ports:
                    self._pick_ports()
                    self.write_config()
                else:
                    time.sleep(0.5)
                continue
            if not exited:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
            raise DaemonError("onebox serve did not start: %s\n--- log tail ---\n%s"
                              % (why, self.log_tail()))

    def _wait_ready(self):
        """None once every listener accepts, else why not."""
        pending = list(self.tcp_endpoints()) + [str(self.lmtp_socket)]
        deadline = time.monotonic() + START_TIMEOUT
        while pending:
            if self.proc.poll() is not None:
                return "exited with status %d before listening" % self.proc.returncode
            if time.monotonic() > deadline:
                return "not accepting on %r after %ds" % (pending, START_TIMEOUT)
            ep = pending[0]
            try:
                if isinstance(ep, str):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.settimeout(2)
                    s.connect(ep)
                else:
                    s = socket.create_connection(ep, timeout=2)
                s.close()
                pending.pop(0)
            except OSError:
                time.sleep(0.05)
        return None

    def stop(self):
        """SIGTERM; return a list of problems (empty when it exited 0)."""
        if self.proc is None:
            return []
        problems = []
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
                problems.append("onebox serve did not exit within %ds of SIGTERM" % STOP_TIMEOUT)
        if proc.returncode != 0 and not problems:
            problems.append("onebox serve exited with status %d (expected 0 after SIGTERM)"
                            % proc.returncode)
        return problems

    def restart(self, **overrides):
        """Stop cleanly (exit 0 required) and start again on the same data
        folder and ports, with OVERRIDES merged into the config."""
        problems = self.stop()
        if problems:
            raise DaemonError("; ".join(problems) + "\n--- log tail ---\n" + self.log_tail())
        if overrides:
            self.update_settings(overrides)
        self.start(fixed_ports=True)

    def kill9(self):
        assert self.running(), "kill9: daemon not running\n" + self.log_tail()
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def proc_status(self, field):
        """A field of /proc/PID/status in kB (VmRSS, RssAnon, ...)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    def rss_kb(self):
        return self.proc_status("VmRSS")

    def log_text(self):
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, n=60):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def teardown(self):
        """Stop, then check every log; return the problems found."""
        problems = self.stop()
        found = sanitizer_findings(self.log_text())
        if found:
            problems.append("sanitizer report in the daemon's log:\n" + found)
        if problems:
            problems.append("--- log tail (%s) ---\n%s" % (self.dir, self.log_tail()))
        return problems

    # --- clients

    def ssl_context(self):
        """A client context that trusts only the test certificate and checks
        the host name (the certificate names localhost, 127.0.0.1, ::1)."""
        ctx = ssl.create_default_context(cafile=self.cafile)
        ctx.check_hostname = True
        return ctx

    def lmtp(self, timeout=CLIENT_TIMEOUT, source=None):
        src = (source, 0) if source else None
        return smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=timeout, source_address=src)

    def lmtp_unix(self, timeout=CLIENT_TIMEOUT):
        return smtplib.LMTP(str(self.lmtp_socket), timeout=timeout)

    def _login(self, p, user, password):
        if user is not None:
            p.user(user)
            p.pass_(password)
        return p

    def pop3(self, user=None, password=None, host="127.0.0.1", timeout=CLIENT_TIMEOUT):
        port = self.pop3_v6_port if host == "::1" else self.pop3_port
        return self._login(poplib.POP3(host, port, timeout=timeout), user, password)

    def pop3s(self, user=None, password=None, timeout=CLIENT_TIMEOUT):
        p = poplib.POP3_SSL("127.0.0.1", self.pop3s_port, timeout=timeout,
                            context=self.ssl_context())
        return self._login(p, user, password)

    def pop3_stls(self, user=None, password=None, timeout=CLIENT_TIMEOUT):
        p = poplib.POP3("127.0.0.1", self.pop3_port, timeout=timeout)
        p.stls(self.ssl_context())
        return self._login(p, user, password)

    def imap(self, user=None, password=None, timeout=CLIENT_TIMEOUT):
        """An imaplib client on the cleartext IMAP port, logged in if USER."""
        m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=timeout)
        if user is not None:
            m.login(user, password)
        return m

    def imaps(self, user=None, password=None, timeout=CLIENT_TIMEOUT):
        m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, timeout=timeout,
                              ssl_context=self.ssl_context())
        if user is not None:
            m.login(user, password)
        return m

    def raw(self, port, source=None, timeout=CLIENT_TIMEOUT):
        """A plain TCP socket to 127.0.0.1:PORT (optionally from SOURCE)."""
        return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0) if source else None)

    def conn(self, port, source=None, timeout=CLIENT_TIMEOUT):
        """raw(), read by lines: a Conn."""
        return Conn(self.raw(port, source, timeout))

    def password(self, user):
        return self.users[user]

    def messages(self, user):
        """Every message of USER's INBOX over POP3, in order, then QUIT
        (RETR then QUIT changes nothing POP3 can see)."""
        p = self.pop3(user, self.users[user])
        try:
            count, _ = p.stat()
            return [retr_bytes(p, i) for i in range(1, count + 1)]
        finally:
            p.quit()


def base_settings(tls=True, allow_plaintext=True):
    s = {"storage": {"path": "store"}}
    if tls:
        s["tls"] = {"certificate": "cert.pem", "key": "key.pem"}
    s["auth"] = {"allow_plaintext": allow_plaintext}
    s["log_level"] = "debug"
    return s


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def onebox_bin():
    if not os.access(ONEBOX_BIN, os.X_OK):
        pytest.fail("no onebox binary at %s (build it, or set ONEBOX_BIN; ./test.sh does both)"
                    % ONEBOX_BIN, pytrace=False)
    return ONEBOX_BIN


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A self-signed certificate for localhost, 127.0.0.1 and ::1, made once."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-days", "30",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    return {"cert": str(cert), "key": str(key)}


@pytest.fixture
def workdir(request):
    """A short folder of our own: unix socket paths must fit in 108 bytes,
    which pytest's tmp_path does not promise.  Kept when the test failed."""
    d = tempfile.mkdtemp(prefix="onebox-t-")
    os.chmod(d, 0o755)   # a daemon that drops privileges must reach its data
    yield pathlib.Path(d)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and not getattr(request.node, "_onebox_keep", False):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print("onebox test folder kept: %s" % d)


@pytest.fixture
def daemon_factory(request, onebox_bin, certs, workdir):
    """make(users=..., tls=True, allow_plaintext=True, pop3={...}, lmtp={...},
    limits={...}, auth={...}, settings={...}, ipv6=True, start=True) -> Daemon.
    Each call makes a new data folder; all are stopped and checked at
    teardown."""
    made = []
    request.node._onebox_daemons = made

    def make(users=None, tls=True, allow_plaintext=True, pop3=None, lmtp=None,
             limits=None, auth=None, settings=None, ipv6=True, start=True):
        root = workdir / ("d%d" % len(made))
        root.mkdir()
        s = base_settings(tls=tls, allow_plaintext=allow_plaintext)
        for name, group in (("auth", auth), ("pop3", pop3), ("lmtp", lmtp), ("limits", limits)):
            if group:
                s[name] = {**s.get(name, {}), **group}
        if settings:
            s.update(settings)
        d = Daemon(root, certs if tls else None,
                   DEFAULT_USERS if users is None else users, s, ipv6)
        made.append(d)
        for name, pw in d.users.items():
            d.user_add(name, pw)
        if start:
            d.start()
        return d

    yield make
    problems = []
    for d in made:
        problems += d.teardown()
    if problems:
        request.node._onebox_keep = True
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def daemon(daemon_factory):
    """A daemon with TLS, allow_plaintext, users alice and bob."""
    return daemon_factory()


@pytest.fixture(autouse=True)
def _time_bound(request):
    """Fail a test that hangs (every loop in the tests is bounded too; this
    is the backstop).  Covers the daemon's teardown as well."""
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError("test still running after %ds" % TEST_TIME_BOUND)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIME_BOUND)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item, and attach the tail of the
    daemon's log to a failing test's report."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.when == "call" and rep.failed:
        for d in getattr(item, "_onebox_daemons", []):
            rep.sections.append(("onebox log tail: %s" % d.dir, d.log_tail()))
