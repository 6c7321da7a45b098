#!/usr/bin/python3
"""
bench.py - run onebox and Dovecot side by side under the same load and
report absolute figures and the onebox/Dovecot ratio (issue 6).

It starts both servers as private instances on free loopback ports in a
fresh temporary folder, creates the same users with the same kind of
password hash in both, loads the same mail into both over LMTP, then runs
every scenario with onebox-loadgen (tests/bench/loadgen.c) against onebox,
then Dovecot, then onebox, then Dovecot (--rounds), so that drift of the
machine cancels.  Around each run it reads the CPU time of every server
process (/proc/PID/stat) and their memory (PSS, /proc/PID/smaps_rollup).
The result is a Markdown table on stdout and in OUT/results.md, with the
raw data in OUT/results.json.  docs/benchmarks.md describes the scenarios
and the fairness rules; tests/bench/run is the one command that builds and
calls this.

Python 3 standard library only (Debian's /usr/bin/python3).  Every wait is
bounded, both servers are stopped on any exit, and only loopback addresses
are used.
"""

import argparse
import contextlib
import ctypes
import json
import math
import mmap
import os
import pathlib
import platform
import pwd
import grp
import random
import re
import resource
import select
import shutil
import signal
import smtplib
import socket
import imaplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent

HOST = "127.0.0.1"
PASSWORD = "bench-password"
SEARCH_WORD = "zebra"
BENCH_USER = "onebench"          # the uid both servers' mail code runs as (root only)
AUTH_CACHE_TTL = "5m"            # onebox auth.cache_ttl default; Dovecot matches it
START_TIMEOUT = 30               # seconds for a server to accept on every port
STOP_TIMEOUT = 30                # seconds for a clean exit after SIGTERM
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def shout(msg):
    """Something the reader must not miss (Dovecot missing, say)."""
    bar = "!" * 72
    print("\n%s\nbench: %s\n%s\n" % (bar, msg, bar), file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    """A signal or the overall time bound: unwind and clean up."""


# ------------------------------------------------------------ /proc readings

def proc_table():
    """{pid: (ppid, cpu_ticks, major_faults)} of every process, both
    counting its own and its reaped children's (user and system time;
    page faults that had to read from the disk)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the
        # last ')'.  Fields then start at "state" (field 3 of proc(5)).
        rest = data[data.rfind(b")") + 2:].split()
        try:
            ppid = int(rest[1])
            ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
            majflt = int(rest[9]) + int(rest[10])
        except (IndexError, ValueError):
            continue
        out[int(name)] = (ppid, ticks, majflt)
    return out


def tree_pids(root, table=None):
    """ROOT and all its descendants."""
    table = table if table is not None else proc_table()
    children = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root] if root in table else []
    while todo and len(out) < 1000000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_usage(root):
    """(seconds of CPU, major page faults) used so far by ROOT's process
    tree, from one scan of /proc.  A child that has exited and been reaped
    is in its parent's cutime/cstime and cmajflt, so both sums only grow;
    the difference of two readings is the interval's.  A major fault is a
    read from the disk that a thread waited for, such as a page of a
    memory-mapped file the kernel had evicted."""
    table = proc_table()
    pids = tree_pids(root, table)
    return (sum(table[p][1] for p in pids) / CLK_TCK, sum(table[p][2] for p in pids))


def tree_pss_kib(root):
    """Memory of ROOT's tree: {"pss_kib": sum of every process's PSS,
    "pss_anon_kib": the anonymous part of it (heap, stacks: not the page
    cache of a memory-mapped file such as onebox's LMDB), "pss_procs": how
    many processes}, all from /proc/PID/smaps_rollup."""
    total, anon, n = 0, 0, 0
    for pid in tree_pids(root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        n += 1
                    elif line.startswith("Pss_Anon:"):
                        anon += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return {"pss_kib": total, "pss_anon_kib": anon, "pss_procs": n}


# ------------------------------------------------------------- identities

class Identity:
    """Who the servers' mail code runs as.  As root: the system user
    "onebench" (created if missing), for both servers, because Dovecot
    refuses to touch mail as root.  Otherwise: the current user."""

    def __init__(self):
        self.root = os.geteuid() == 0
        if self.root:
            try:
                pw = pwd.getpwnam(BENCH_USER)
            except KeyError:
                say("creating the system user %s" % BENCH_USER)
                subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                                BENCH_USER], check=True, timeout=60,
                               stdin=subprocess.DEVNULL)
                pw = pwd.getpwnam(BENCH_USER)
        else:
            pw = pwd.getpwuid(os.geteuid())
        self.user = pw.pw_name
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid
        self.group = grp.getgrgid(pw.pw_gid).gr_name

    def give(self, path):
        if self.root:
            os.chown(path, self.uid, self.gid)


def crypt_hash(password):
    """A crypt(3) hash made exactly as `onebox user add` makes one
    (server/auth.c: crypt_gensalt_ra("$y$", 0) - yescrypt at libxcrypt's
    default cost - falling back to SHA-512-crypt), for Dovecot's {CRYPT}."""
    lib = ctypes.CDLL("libcrypt.so.1")
    libc = ctypes.CDLL(None)
    lib.crypt_gensalt_ra.restype = ctypes.c_void_p
    lib.crypt_gensalt_ra.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.free.argtypes = [ctypes.c_void_p]
    for prefix in (b"$y$", b"$6$"):
        p = lib.crypt_gensalt_ra(prefix, 0, None, 0)
        if not p:
            continue
        salt = ctypes.cast(p, ctypes.c_char_p).value
        libc.free(p)
        h = lib.crypt(password.encode(), salt)
        if h and not h.startswith(b"*"):
            return h.decode()
    raise BenchError("libcrypt made no hash")


# ---------------------------------------------------------------- helpers

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ports(ports, proc, timeout, log):
    """Until every port accepts, the process dies, or TIMEOUT passes."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise BenchError("exited with status %s before listening; log:\n%s"
                             % (proc.returncode, tail(log)))
        if time.monotonic() > deadline:
            raise BenchError("not listening on %s after %d s; log:\n%s"
                             % (pending, timeout, tail(log)))
        try:
            with socket.create_connection((HOST, pending[0]), timeout=1):
                pending.pop(0)
        except OSError:
            time.sleep(0.1)


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


def stop_process(proc, name, group=True):
    """SIGTERM, a bounded wait, then SIGKILL (the whole process group when
    GROUP: Dovecot's children share the master's)."""
    if proc is None:
        return None
    pids = tree_pids(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say("%s did not stop in %d s: killing it" % (name, STOP_TIMEOUT))
        except OSError:
            pass
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode


# ---------------------------------------------------------- message bytes

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo "
         "lima mike november oscar papa quebec romeo sierra tango uniform victor "
         "whiskey xray yankee meeting invoice report schedule project review draft "
         "budget quarter customer order shipment release server mailbox folder "
         "lunch coffee garden weather holiday office printer network backup").split()
assert SEARCH_WORD not in WORDS


def make_message(seq, size, subject=None, body_extra=""):
    """A plain-text message of about SIZE octets, CRLF line ends, no line
    starting with a dot.  Deterministic in SEQ so both servers get the
    same bytes."""
    rnd = random.Random(seq)
    subj = subject or " ".join(rnd.choice(WORDS) for _ in range(5))
    head = ("From: Sender %d <sender%d@example.org>\r\n"
            "To: Bench <bench@example.net>\r\n"
            "Subject: %s\r\n"
            "Date: Mon, 2 Jun 2025 10:%02d:%02d +0000\r\n"
            "Message-ID: <bench-%d@example.org>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n" % (seq % 97, seq % 97, subj, seq // 60 % 60, seq % 60, seq))
    lines, n = [], len(head)
    if body_extra:
        lines.append(body_extra)
        n += len(body_extra) + 2
    while n < size:
        line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 12)))
        lines.append(line)
        n += len(line) + 2
    return (head + "\r\n".join(lines) + "\r\n").encode("ascii")


class Lmtp:
    """A minimal LMTP client for loading data (not for measuring): one
    connection, transactions of up to 100 recipients, one reply per
    recipient after DATA (RFC 2033 section 4.2)."""

    def __init__(self, port, timeout=120):
        self.c = smtplib.LMTP(HOST, port, timeout=timeout)
        code, msg = self.c.ehlo("bench.localhost")
        if code != 250:
            raise BenchError("LHLO: %s %s" % (code, msg))

    def deliver(self, rcpts, msg):
        for i in range(0, len(rcpts), 100):
            batch = rcpts[i:i + 100]
            code, text = self.c.mail("bench@localhost")
            if code != 250:
                raise BenchError("MAIL: %s %s" % (code, text))
            for r in batch:
                code, text = self.c.rcpt(r)
                if code != 250:
                    raise BenchError("RCPT %s: %s %s" % (r, code, text))
            code, text = self.c.docmd("DATA")
            if code != 354:
                raise BenchError("DATA: %s %s" % (code, text))
            data = msg.replace(b"\r\n.", b"\r\n..")
            self.c.send(data + b".\r\n")
            for r in batch:
                code, text = self.c.getreply()
                if code != 250:
                    raise BenchError("delivery to %s: %s %s" % (r, code, text))

    def close(self):
        try:
            self.c.quit()
        except (OSError, smtplib.SMTPException):
            pass


# ---------------------------------------------------------------- servers

class Server:
    """One server under test: its ports, its process, its readings."""

    name = "?"

    def __init__(self, work, ident, conns):
        self.work = work
        self.ident = ident
        self.conns = conns               # connections it must be able to hold
        self.proc = None
        self.log = None
        self.imap, self.pop3, self.lmtp = free_ports(3)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def usage(self):
        return tree_usage(self.proc.pid)

    def pss(self):
        return tree_pss_kib(self.proc.pid)

    def start(self):
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        finally:
            logf.close()
        try:
            wait_ports([self.imap, self.pop3, self.lmtp], self.proc, START_TIMEOUT, self.log)
        except BenchError as e:
            self.stop()
            raise BenchError("%s: %s" % (self.name, e))

    def stop(self):
        rc = stop_process(self.proc, self.name)
        self.proc = None
        return rc


class Onebox(Server):
    name = "onebox"

    def __init__(self, work, ident, conns, binary):
        super().__init__(work, ident, conns)
        self.binary = binary
        self.conf = work / "onebox.conf"
        self.log = work / "onebox.log"
        store = work / "store"
        store.mkdir()
        ident.give(store)
        lines = [
            'storage = { path = "%s"; };' % store,
            "listen = (",
            '  { protocol = "imap"; address = "%s"; port = %d; },' % (HOST, self.imap),
            '  { protocol = "pop3"; address = "%s"; port = %d; },' % (HOST, self.pop3),
            '  { protocol = "lmtp"; address = "%s"; port = %d; }' % (HOST, self.lmtp),
            ");",
            # No TLS on either side; the same password cache lifetime.
            'auth = { allow_plaintext = true; cache_ttl = "%s"; };' % AUTH_CACHE_TTL,
            # Raised as far as Dovecot's limits are.
            "limits = { max_connections = %d; max_per_address = %d; };" % (conns, conns),
            'log_level = "warn";',
        ]
        if ident.root:
            lines.append('user = "%s";' % ident.user)
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self):
        return [str(self.binary), "serve", "-c", str(self.conf)]

    def add_users(self, names):
        for name in names:
            r = subprocess.run([str(self.binary), "user", "add", name, "-c", str(self.conf)],
                               input=(PASSWORD + "\n").encode(), capture_output=True,
                               timeout=60)
            if r.returncode != 0:
                raise BenchError("onebox user add %s: %s" % (name, r.stderr.decode(errors="replace")))


class Dovecot(Server):
    name = "Dovecot"

    def __init__(self, work, ident, conns, binary):
        super().__init__(work, ident, conns)
        self.binary = binary
        self.conf = work / "dovecot.conf"
        self.log = work / "dovecot.log"
        self.passwd = work / "users.passwd"
        self.home = work / "home"
        self.home.mkdir()
        ident.give(self.home)
        (work / "state").mkdir()
        self.passwd.write_text("")
        os.chmod(self.passwd, 0o644)
        if ident.root:
            internal_user, internal_group, login_user = "dovecot", "dovecot", "dovenull"
            for u in ("dovecot", "dovenull"):
                try:
                    pwd.getpwnam(u)
                except KeyError:
                    internal_user = internal_group = login_user = ident.user
        else:
            internal_user, internal_group, login_user = ident.user, ident.group, ident.user
        subst = {
            "WORK": str(work),
            "INSTANCE": str(os.getpid()),
            "INTERNAL_USER": internal_user,
            "INTERNAL_GROUP": internal_group,
            "LOGIN_USER": login_user,
            "FIRST_UID": str(max(1, ident.uid)),
            "FIRST_GID": str(max(1, ident.gid)),
            "PASSWD": str(self.passwd),
            "CACHE_TTL": {"5m": "5 mins"}.get(AUTH_CACHE_TTL, AUTH_CACHE_TTL),
            "IDLE_CONNS": str(conns),
            "PROCESS_LIMIT": str(conns + 500),
            "CLIENT_LIMIT": str(2 * conns + 1000),
            # The sums Dovecot checks at start-up: six services with that
            # process limit may hold an auth connection, three an anvil one.
            "AUTH_CLIENT_LIMIT": str(6 * (conns + 500) + 100),
            "ANVIL_CLIENT_LIMIT": str(3 * (conns + 500) + 100),
            "NPROC": str(os.cpu_count() or 2),
            "IMAP_PORT": str(self.imap),
            "POP3_PORT": str(self.pop3),
            "LMTP_PORT": str(self.lmtp),
        }
        text = (HERE / "dovecot" / "dovecot.conf.in").read_text()
        for k, v in subst.items():
            text = text.replace("@%s@" % k, v)
        left = re.search(r"@[A-Z_]+@", text)
        if left:
            raise BenchError("dovecot.conf.in: %s is not replaced" % left.group(0))
        self.conf.write_text(text)

    def command(self):
        return [self.binary, "-F", "-c", str(self.conf)]

    def add_users(self, names):
        lines = []
        for name in names:
            lines.append("%s:{CRYPT}%s:%d:%d::%s/%s::\n"
                         % (name, crypt_hash(PASSWORD), self.ident.uid, self.ident.gid,
                            self.home, name))
        with open(self.passwd, "a") as f:
            f.writelines(lines)

    def settings(self):
        """`doveconf -n`: every setting that differs from Dovecot's defaults."""
        doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
        try:
            r = subprocess.run([doveconf, "-n", "-c", str(self.conf)], capture_output=True,
                               timeout=30)
            return r.stdout.decode(errors="replace")
        except (OSError, subprocess.SubprocessError):
            return ""


class PushFloor(Server):
    """onebox-pushfloor (tests/bench/pushfloor.c): a do-nothing IMAP and
    LMTP server that, after each LMTP 250, writes one EXISTS to every idle
    connection and does nothing else.  The idle scenario runs the same
    generator against it to show the push latency this machine allows."""

    name = "floor"

    def __init__(self, work, binary, conns):
        self.work = work
        self.binary = binary
        self.conns = conns
        self.proc = None
        self.log = work / "pushfloor.log"
        self.imap = self.lmtp = self.pop3 = None

    def command(self):
        return [str(self.binary), "--imap-port", "0", "--lmtp-port", "0",
                "--max-conns", str(self.conns)]

    def start(self):
        """Start it on free ports: it binds port 0 and prints
        "PORTS imap=N lmtp=N", read here within START_TIMEOUT."""
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=logf,
                                         start_new_session=True)
        finally:
            logf.close()
        fd = self.proc.stdout.fileno()
        got = b""
        deadline = time.monotonic() + START_TIMEOUT
        while b"\n" not in got and len(got) < 4096 and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 256)
                if not chunk:
                    break
                got += chunk
        m = re.match(r"PORTS imap=(\d+) lmtp=(\d+)\s*$", got.decode("ascii", "replace"))
        if not m:
            self.stop()
            raise BenchError("onebox-pushfloor did not report its ports (%r); log:\n%s"
                             % (got[:200], tail(self.log)))
        self.imap, self.lmtp = int(m.group(1)), int(m.group(2))

    def stop(self):
        out = self.proc.stdout if self.proc is not None else None
        rc = super().stop()
        if out is not None:
            out.close()
        return rc


# -------------------------------------------------------------- the plan

class Plan:
    """What to run, from the command line: the full benchmark or --smoke."""

    def __init__(self, a):
        self.smoke = a.smoke
        self.rounds = a.rounds or (1 if a.smoke else 2)
        # Dovecot verifies yescrypt on each of the 10,000 logins: one idle
        # round per side takes it half an hour here, so the full run does one.
        self.idle_rounds = a.idle_rounds or (1 if a.smoke else min(self.rounds, 1))
        self.duration = a.duration or (3 if a.smoke else 20)
        self.mix_clients = ints(a.mix_clients) or ([10] if a.smoke else [10, 100])
        self.pop3_clients = a.pop3_clients or (4 if a.smoke else 10)
        self.lmtp_senders = ints(a.lmtp_senders) or ([4] if a.smoke else [1, 10, 50])
        self.lmtp_sizes = ints(a.lmtp_sizes) or [4096, 262144]
        self.idle = a.idle if a.idle is not None else (100 if a.smoke else 10000)
        self.large = ints(a.large) or ([2000] if a.smoke else [100000, 1000000])
        self.large_repeat = a.large_repeat or (2 if a.smoke else 3)
        self.mix_messages = 20 if a.smoke else 100
        self.deliveries = 5 if a.smoke else 20
        self.only = set(a.only.split(",")) if a.only else None
        self.mix_users = max(self.mix_clients)
        self.pop3_users = self.pop3_clients
        self.lmtp_users = max(self.lmtp_senders)

    def wants(self, scenario):
        return self.only is None or scenario in self.only


def ints(text):
    if not text:
        return []
    return [int(x) for x in str(text).split(",") if x.strip()]


def mix_user(i):
    return "mix%d" % i


def big_fmt(size):
    return "big%d_%%d" % size


# ------------------------------------------------------------ the loadgen

def settle(server, procs_before, bound):
    """Wait, at most BOUND seconds, until SERVER has at most 200 processes
    more than PROCS_BEFORE (Dovecot keeps some idle ones for reuse for a
    minute: its normal state); the seconds it took."""
    t0 = time.monotonic()
    while bound and server.alive() and time.monotonic() - t0 < bound:
        if len(tree_pids(server.proc.pid)) <= procs_before + 200:
            break
        time.sleep(1)
    return round(time.monotonic() - t0, 1)


def run_loadgen(loadgen, args, server, timeout, on_ready=None, sample_at=None,
                settle_bound=0, disk=None):
    """Run onebox-loadgen once against SERVER and return a record: its JSON,
    exit status, server CPU seconds and PSS, the generator's own CPU, and
    with DISK (a BlockDev) what reached the data folder's disk meanwhile."""
    cmd = [str(loadgen)] + [str(a) for a in args]
    rec = {"server": server.name, "argv": cmd[1:]}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    disk0 = disk.read() if disk else None
    cpu0, majflt0 = server.usage()
    pss0 = server.pss()
    rec["pss_before_kib"] = pss0["pss_kib"]
    rec["pss_anon_before_kib"] = pss0["pss_anon_kib"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if on_ready else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    stderr_lines = []
    ready = threading.Event()

    def read_stderr():
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(stderr_lines) < 2000:
                stderr_lines.append(line)
            if line.startswith("READY"):
                rec["ready_line"] = line
                ready.set()
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    out_chunks = []
    out_reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()),
                                  daemon=True)
    out_reader.start()
    deadline = t0 + timeout
    try:
        if on_ready:
            while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
                ready.wait(0.2)
            if ready.is_set():
                rec["ready_seconds"] = round(time.monotonic() - t0, 2)
                on_ready(rec)
                try:
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
                except OSError:
                    pass
            else:
                rec["ready_seconds"] = None
        elif sample_at:
            while proc.poll() is None and time.monotonic() < t0 + sample_at:
                time.sleep(0.1)
            if proc.poll() is None:
                rec.update(server.pss())
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("loadgen ran past its %d s bound: killing it" % timeout)
            rec["killed"] = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(timeout=10)
        reader.join(5)
        out_reader.join(5)
    rec["wall_seconds"] = round(time.monotonic() - t0, 2)
    # After the idle scenario, let the server finish what the run left it
    # (Dovecot's 10,000 processes of closed sessions exit one by one)
    # before reading its CPU and before the next run starts, so that no run
    # pays for the one before.  (Elsewhere the few idle processes Dovecot
    # keeps for reuse are its normal state.)
    rec["settle_seconds"] = settle(server, pss0["pss_procs"], settle_bound)
    cpu1, majflt1 = server.usage()
    rec["server_cpu_s"] = round(cpu1 - cpu0, 3)
    rec["server_major_faults"] = majflt1 - majflt0
    disk1 = disk.read() if disk else None
    if disk0 and disk1:
        rec["disk"] = {k: disk1[k] - disk0[k] for k in disk0}
    if "pss_kib" not in rec and not on_ready:
        rec.update(server.pss())
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec["loadgen_cpu_s"] = round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)
    rec["exit"] = proc.returncode
    rec["stderr_tail"] = stderr_lines[-15:]
    out = b"".join(c for c in out_chunks if c).decode("utf-8", "replace").strip()
    rec["result"] = parse_json(out)
    rec["server_alive"] = server.alive()
    return rec


def parse_json(text):
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_problem(rec, clients):
    """Why this run counts as an error for --smoke, or None.  Never a
    timing: only a generator that failed or produced nothing, a server that
    died, or errors as many as the clients (every client failing)."""
    if rec.get("killed"):
        return "loadgen did not finish in time"
    if rec["exit"] != 0:
        return "loadgen exited with status %s" % rec["exit"]
    if not rec["server_alive"]:
        return "the server died"
    res = rec["result"]
    if not isinstance(res, dict):
        return "loadgen printed no JSON result"
    if (res.get("ops") or 0) == 0 and (res.get("messages") or 0) == 0 \
            and not res.get("idle") and not res.get("latency_ms"):
        return "no operation completed"
    if (res.get("errors") or 0) >= max(1, clients):
        return "%s errors for %d clients: %s" % (res.get("errors"), clients,
                                                  (res.get("error_samples") or [])[:3])
    return None


# -------------------------------------------------------------- scenarios

class Bench:
    def __init__(self, plan, args, loadgen, onebox_bin, dovecot_bin, pushfloor=None):
        self.plan = plan
        self.args = args
        self.loadgen = loadgen
        self.ident = Identity()
        base = args.workdir or None
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="onebox-bench-", dir=base))
        os.chmod(self.work, 0o755)
        say("work folder %s" % self.work)
        self.disk = BlockDev.of(self.work)
        self.settled = False    # settle_memory ran: top up before each round
        conns = max(plan.idle, max(plan.mix_clients), 100) + 200
        (self.work / "onebox").mkdir()
        (self.work / "dovecot").mkdir()
        self.servers = [Onebox(self.work / "onebox", self.ident, conns, onebox_bin)]
        self.dovecot_note = None
        self.pushfloor = pushfloor    # the binary, or None when not built
        self.floor = None             # the PushFloor while it runs
        self.floor_note = None
        if dovecot_bin:
            self.servers.append(Dovecot(self.work / "dovecot", self.ident, conns, dovecot_bin))
        self.runs = []            # every run record
        self.problems = []        # (scenario, server, why)
        self.builds = {}          # large mailbox build seconds
        self.seed = args.seed
        self.onebox_conf = self.servers[0].conf.read_text()
        self.doveconf = self.servers[1].settings() if len(self.servers) > 1 else ""

    # -- setup -------------------------------------------------------------

    def users(self):
        p = self.plan
        names = []
        if p.wants("imap-mix"):
            names += [mix_user(i) for i in range(p.mix_users)]
        if p.wants("pop3"):
            names += ["pop%d" % i for i in range(p.pop3_users)]
        if p.wants("lmtp"):
            names += ["lmtp%d" % i for i in range(p.lmtp_users)]
        if p.wants("idle") and p.idle:
            names.append("idle0")
        if p.wants("large"):
            names += [big_fmt(n) % 0 for n in p.large]
        return names

    def setup(self):
        names = self.users()
        started = []
        for s in list(self.servers):
            t0 = time.monotonic()
            try:
                s.add_users(names)
                s.start()
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                if isinstance(s, Dovecot):
                    shout("Dovecot could not be started; running onebox alone.\n%s" % e)
                    self.dovecot_note = "Dovecot failed to start: %s" % str(e).splitlines()[0]
                    self.servers.remove(s)
                    continue
                raise BenchError("onebox did not start: %s" % e)
            say("%s: %d users, listening (imap %d, pop3 %d, lmtp %d) in %.1f s"
                % (s.name, len(names), s.imap, s.pop3, s.lmtp, time.monotonic() - t0))
            started.append(s)
        if self.plan.wants("imap-mix"):
            for s in self.servers:
                t0 = time.monotonic()
                self.preload_mix(s)
                say("%s: %d messages of 4 KiB in each of %d mailboxes in %.1f s"
                    % (s.name, self.plan.mix_messages, self.plan.mix_users, time.monotonic() - t0))

    def preload_mix(self, s):
        rcpts = ["%s@localhost" % mix_user(i) for i in range(self.plan.mix_users)]
        c = Lmtp(s.lmtp)
        try:
            for k in range(self.plan.mix_messages):
                c.deliver(rcpts, make_message(k, 4096))
        finally:
            c.close()

    def build_large(self, s, size):
        """SIZE messages in big<SIZE>_0's INBOX: a few hundred delivered over
        LMTP, doubled with UID COPY 1:* INBOX, topped up with one more UID
        COPY, then three messages with the search word in Subject and body
        delivered last (so SEARCH finds exactly three)."""
        user = big_fmt(size) % 0
        marked = 3
        seeds = max(1, min(200, size - marked))
        t0 = time.monotonic()
        c = Lmtp(s.lmtp)
        try:
            for k in range(seeds):
                c.deliver(["%s@localhost" % user], make_message(1000 + k, 1500 + (k * 37) % 3000))
        finally:
            c.close()
        timeout = max(600, size // 200)
        m = imaplib.IMAP4(HOST, s.imap, timeout=timeout)
        try:
            m.login(user, PASSWORD)
            typ, data = m.select("INBOX")
            count = int(data[0])
            want = size - marked
            while count * 2 <= want:
                typ, data = m.uid("COPY", "1:*", "INBOX")
                if typ != "OK":
                    raise BenchError("%s: UID COPY 1:* failed: %s" % (s.name, data))
                count *= 2
            if count < want:
                typ, data = m.uid("COPY", "1:%d" % (want - count), "INBOX")
                if typ != "OK":
                    raise BenchError("%s: UID COPY failed: %s" % (s.name, data))
            m.logout()
        finally:
            try:
                m.shutdown()
            except OSError:
                pass
        c = Lmtp(s.lmtp)
        try:
            for k in range(marked):
                c.deliver(["%s@localhost" % user],
                          make_message(900 + k, 2000, subject="the %s report %d" % (SEARCH_WORD, k),
                                       body_extra="A note about the %s crossing." % SEARCH_WORD))
        finally:
            c.close()
        m = imaplib.IMAP4(HOST, s.imap, timeout=timeout)
        try:
            m.login(user, PASSWORD)
            typ, data = m.select("INBOX", readonly=True)
            got = int(data[0])
            m.logout()
        finally:
            try:
                m.shutdown()
            except OSError:
                pass
        if got != size:
            raise BenchError("%s: built %d messages, wanted %d" % (s.name, got, size))
        secs = time.monotonic() - t0
        self.builds.setdefault(str(size), {})[s.name] = round(secs, 1)
        say("%s: %d-message mailbox built in %.1f s" % (s.name, size, secs))

    # -- runs --------------------------------------------------------------

    def common(self, s, port, user_fmt, users, duration=None, timeout=None):
        """The options every mode takes.  TIMEOUT: seconds a reply may take
        before the generator counts an error."""
        return ["--host", HOST, "--port", port, "--duration", duration or self.plan.duration,
                "--user-fmt", user_fmt, "--users", users, "--password", PASSWORD,
                "--timeout", timeout or (60 if self.plan.smoke else 120)]

    def abab(self, scenario, param, clients, make_args, timeout, rounds=None, **kw):
        """Run one scenario/parameter on each server in turn, --rounds times:
        onebox, Dovecot, onebox, Dovecot."""
        for r in range(rounds or self.plan.rounds):
            seed = self.seed + r
            for s in self.servers:
                if not s.alive():
                    self.problems.append((scenario, param, s.name, "server is not running"))
                    continue
                args = make_args(s) + ["--seed", seed]
                say("%s %s, round %d, %s" % (scenario, param, r + 1, s.name))
                topped = top_up_memory(self.work, TOP_UP_LIMIT_S) if self.settled else None
                rec = run_loadgen(self.loadgen, args, s, timeout, disk=self.disk, **kw)
                rec.update({"scenario": scenario, "param": param, "round": r + 1,
                            "clients": clients, "top_up_seconds": topped})
                why = run_problem(rec, clients)
                if why:
                    rec["problem"] = why
                    self.problems.append((scenario, param, s.name, why))
                    say("  PROBLEM: %s; loadgen stderr:\n    %s"
                        % (why, "\n    ".join(rec["stderr_tail"][-8:])))
                else:
                    say("  " + summary(rec))
                self.runs.append(rec)

    def run_all(self):
        p = self.plan
        d = p.duration
        bound = d + (90 if p.smoke else 300)
        if p.wants("imap-mix"):
            for n in p.mix_clients:
                self.abab("imap-mix", "%d clients" % n, n,
                          lambda s, n=n: ["imap-mix"] + self.common(s, s.imap, "mix%d", p.mix_users)
                          + ["--clients", n], bound, sample_at=d * 0.8)
        if p.wants("pop3"):
            n = p.pop3_clients
            self.abab("pop3", "%d clients" % n, n,
                      lambda s: ["pop3"] + self.common(s, s.pop3, "pop%d", p.pop3_users)
                      + ["--clients", n, "--lmtp-port", s.lmtp, "--refill", 20 if p.smoke else 50,
                         "--size", 4096], bound, sample_at=d * 0.8)
        if p.wants("lmtp"):
            for size in p.lmtp_sizes:
                for n in p.lmtp_senders:
                    self.abab("lmtp", "%d sender%s, %s" % (n, "" if n == 1 else "s", kib(size)), n,
                              lambda s, n=n, size=size: ["lmtp"]
                              + self.common(s, s.lmtp, "lmtp%d", p.lmtp_users)
                              + ["--clients", n, "--size", size, "--rcpt-fmt", "lmtp%d@localhost"],
                              bound, sample_at=d * 0.8)
        if p.wants("idle") and p.idle:
            n = p.idle
            srcs = max(1, math.ceil(n / 5000))
            # In idle mode --duration only sets the generator's hard cap
            # (3 x duration + 60 s).  Dovecot verifies yescrypt on every
            # login, a few per second on this machine: 10,000 take tens of
            # minutes.
            cap = max(60, n // 4)

            def at_ready(rec):
                server = next(s for s in self.servers + [self.floor]
                              if s is not None and s.name == rec["server"])
                rec.update(server.pss())

            def idle_args(s):
                return (["idle"] + self.common(s, s.imap, "idle%d", 1, duration=cap, timeout=300)
                        + ["--clients", n, "--lmtp-port", s.lmtp, "--deliveries", p.deliveries,
                           "--interval-ms", 200, "--push-timeout", 10, "--source-addrs", srcs])
            self.abab("idle", "%d connections" % n, n, idle_args,
                      3 * cap + 120, rounds=p.idle_rounds, on_ready=at_ready,
                      settle_bound=120 if p.smoke else 1800)
            self.run_floor(n, idle_args, 3 * cap + 120, at_ready)
        if p.wants("large"):
            for size in p.large:
                for s in list(self.servers):
                    try:
                        self.build_large(s, size)
                    except (BenchError, OSError, imaplib.IMAP4.error, smtplib.SMTPException) as e:
                        self.problems.append(("large", "%s messages" % fmt_count(size), s.name,
                                              "building the mailbox: %s" % e))
                        say("PROBLEM: %s: building the %d mailbox: %s" % (s.name, size, e))
                if not any(str(size) in self.builds and s.name in self.builds[str(size)]
                           for s in self.servers):
                    continue
                # --duration only sets the hard cap here too: SEARCH BODY
                # of 1M messages takes Dovecot about a minute.
                cap = 120 + size * p.large_repeat // 5000
                self.abab("large", "%s messages" % fmt_count(size), 1,
                          lambda s, size=size, cap=cap: ["large"]
                          + self.common(s, s.imap, big_fmt(size), 1, duration=cap,
                                        timeout=600)
                          + ["--pop3-port", s.pop3, "--repeat", p.large_repeat,
                             "--search-word", SEARCH_WORD],
                          3 * cap + 120)

    def run_floor(self, n, make_args, timeout, on_ready):
        """The idle run once more, unchanged, against onebox-pushfloor: the
        least work any one-thread server can do per push, so its push
        latency is this machine's floor (loopback writes, the generator's
        reads).  It only informs: a failure here is printed loudly and
        recorded, never fails the benchmark."""
        param = "%d connections" % n
        if self.pushfloor is None:
            self.floor_note = "onebox-pushfloor is not built: the push floor was not measured"
            say(self.floor_note)
            return
        floor = PushFloor(self.work, self.pushfloor, n + 200)
        self.floor = floor
        try:
            floor.start()
            say("idle %s, floor: onebox-pushfloor (imap %d, lmtp %d)"
                % (param, floor.imap, floor.lmtp))
            rec = run_loadgen(self.loadgen, make_args(floor) + ["--seed", self.seed], floor,
                              timeout, on_ready=on_ready)
            rec.update({"scenario": "idle", "param": param, "round": 1, "clients": n})
            why = run_problem(rec, n)
            if why:
                rec["problem"] = why
                self.problems.append(("idle", param, floor.name, why))
                shout("the push floor run failed (this does not fail the benchmark): %s\n%s"
                      % (why, "\n".join(rec["stderr_tail"][-8:])))
            else:
                say("  " + summary(rec))
            self.runs.append(rec)
        except (BenchError, OSError, subprocess.SubprocessError) as e:
            self.problems.append(("idle", param, floor.name, str(e).splitlines()[0]))
            shout("the push floor could not be measured (this does not fail the "
                  "benchmark): %s" % e)
        finally:
            self.floor = None
            rc = floor.stop()
            if rc not in (0, None):
                say("onebox-pushfloor exited with status %s at SIGTERM; log:\n%s"
                    % (rc, tail(floor.log)))

    def stop(self):
        if self.floor is not None:
            self.floor.stop()
            self.floor = None
        for s in self.servers:
            rc = s.stop()
            if rc not in (0, None) and s.name == "onebox":
                say("onebox exited with status %s at SIGTERM; log:\n%s" % (rc, tail(s.log)))


def kib(size):
    return "%d KiB" % (size // 1024) if size % 1024 == 0 else "%d B" % size


def fmt_count(n):
    if n % 1000000 == 0:
        return "%dM" % (n // 1000000)
    if n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def summary(rec):
    res = rec.get("result") or {}
    bits = []
    for k in ("ops_per_sec", "messages_per_sec"):
        if res.get(k) is not None:
            bits.append("%s %.1f" % (k, res[k]))
    if res.get("idle") is not None:
        bits.append("idle %s" % res.get("idle"))
        pm = res.get("push_ms") or {}
        if pm:
            bits.append("push p99 %s ms" % pm.get("p99"))
        bits.append("missed %s" % res.get("missed"))
    bits.append("errors %s" % res.get("errors"))
    bits.append("server CPU %.2f s" % rec["server_cpu_s"])
    if rec.get("pss_kib") is not None:
        bits.append("PSS %.1f MiB" % (rec["pss_kib"] / 1024))
    return ", ".join(bits)


# ----------------------------------------------------------------- report

def mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def num(x, digits=None):
    if x is None:
        return "—"
    if digits is None:
        a = abs(x)
        digits = 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3
    return "{:,.{}f}".format(x, digits)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


class Report:
    """Averages the rounds per side and lays out the table."""

    def __init__(self, bench, flush=None):
        self.b = bench
        self.flush = flush if flush and "error" not in flush else {}
        self.rows = []
        self.details = []

    def recs(self, scenario, param, server):
        return [r for r in self.b.runs if r["scenario"] == scenario and r["param"] == param
                and r["server"] == server and isinstance(r.get("result"), dict)]

    def both(self, scenario, param, fn):
        """(onebox mean, Dovecot mean) of FN(record) over the rounds."""
        return (mean([fn(r) for r in self.recs(scenario, param, "onebox")]),
                mean([fn(r) for r in self.recs(scenario, param, "Dovecot")]))

    def row(self, scenario, metric, pair, target="", check=None, digits=None,
            optional=False):
        """One line of the table; OPTIONAL: left out when neither side has
        the figure (results.json of an older bench.py)."""
        a, d = pair
        if optional and a is None and d is None:
            return
        met = "—"
        if check is not None and a is not None:
            ok = check(a, d)
            if ok is not None:
                met = "met" if ok else "**missed**"
        r = ratio(a, d)
        self.rows.append((scenario, metric, num(a, digits), num(d, digits),
                          "—" if r is None else "%.2f×" % r, target or "", met))

    def params(self, scenario):
        seen = []
        for r in self.b.runs:
            if r["scenario"] == scenario and r["param"] not in seen:
                seen.append(r["param"])
        return seen

    def latency_cmds(self, scenario, param):
        cmds = []
        for r in self.recs(scenario, param, "onebox") + self.recs(scenario, param, "Dovecot"):
            for c in (r["result"].get("latency_ms") or {}):
                if c not in cmds:
                    cmds.append(c)
        return cmds

    def lat(self, scenario, param, cmd, q):
        return self.both(scenario, param,
                         lambda r: ((r["result"].get("latency_ms") or {}).get(cmd) or {}).get(q))

    def common_rows(self, sc, label, param):
        self.row(label, "errors (sum of rounds)",
                 (sum_or_none([r["result"].get("errors") for r in self.recs(sc, param, "onebox")]),
                  sum_or_none([r["result"].get("errors") for r in self.recs(sc, param, "Dovecot")])),
                 digits=0)
        self.row(label, "server CPU s per run", self.both(sc, param, lambda r: r["server_cpu_s"]))
        self.row(label, "server PSS MiB (under load)",
                 self.both(sc, param, lambda r: kib_to_mib(r.get("pss_kib"))))
        self.row(label, "  of which anonymous MiB",
                 self.both(sc, param, lambda r: kib_to_mib(r.get("pss_anon_kib"))), optional=True)

    def throughput(self, sc, key, unit):
        for param in self.params(sc):
            label = "%s, %s" % (sc, param)
            self.row(label, unit, self.both(sc, param, lambda r: r["result"].get(key)),
                     "≥ 3× Dovecot", lambda a, d: None if d is None else a >= 3 * d)
            for cmd in self.latency_cmds(sc, param):
                # A p99 of a handful of samples (LHLO: one per connection)
                # is one sample's luck: shown, not judged.
                n = min(x or 0 for x in self.lat(sc, param, cmd, "n"))
                if n < P99_MIN_SAMPLES:
                    self.row(label, "%s p99 ms (%d sample%s: not judged)"
                             % (cmd, n, "" if n == 1 else "s"),
                             self.lat(sc, param, cmd, "p99"), "lower")
                else:
                    self.row(label, "%s p99 ms" % cmd, self.lat(sc, param, cmd, "p99"),
                             "lower", lambda a, d: None if d is None else a < d)
                self.detail(sc, param, cmd)
            self.common_rows(sc, label, param)
            if sc == "lmtp":
                self.disk_rows(sc, label, param)

    def disk_rows(self, sc, label, param):
        """What each message cost the disk: write requests (one per run of
        adjacent blocks), KiB and cache flushes, from the device's counters."""
        def per_msg(key):
            def fn(r):
                n = r["result"].get("messages")
                return r["disk"][key] / n if n and r.get("disk") else None
            return fn
        for key, metric in (("writes", "disk write requests per message"),
                            ("write_kib", "disk KiB written per message"),
                            ("flushes", "disk cache flushes per message")):
            self.row(label, metric, self.both(sc, param, per_msg(key)), optional=True)

        def faults(r):
            n = r["result"].get("messages")
            f = r.get("server_major_faults")
            return f / n if n and f is not None else None
        # A fault is a page the server needed and the kernel had evicted:
        # a wait for the disk outside any commit's flush.
        self.row(label, "server major page faults per message", self.both(sc, param, faults),
                 optional=True)

        def mib_per_s(r):
            n, rate = r["result"].get("messages"), r["result"].get("messages_per_sec")
            if not n or rate is None or not r.get("disk"):
                return None
            return r["disk"]["write_kib"] / n * rate / 1024
        written = self.both(sc, param, mib_per_s)
        self.row(label, "disk MiB/s written", written, optional=True)
        bw = self.flush.get("sequential write MiB/s")
        if bw:
            self.row(label, "  %% of the disk's %.0f MiB/s (probe)" % bw,
                     tuple(None if x is None else 100 * x / bw for x in written),
                     optional=True)
        # One sender waits for every commit: the disk probe's commit of
        # this size bounds it (disk_flush).
        if param.startswith("1 sender,"):
            key = {"4 KiB": "one-sender commits/s at most, %d pages" % SCATTERED_PAGES,
                   "256 KiB": "one-sender commits/s at most, 256 KiB"}.get(
                       param.split(", ", 1)[1])
            if key and key in self.flush:
                self.row(label, "messages/s one sender can get at most (disk probe)",
                         (self.flush[key], None))

    def detail(self, sc, param, cmd):
        cells = []
        for side in ("onebox", "Dovecot"):
            v = [self.both(sc, param, lambda r, q=q:
                           ((r["result"].get("latency_ms") or {}).get(cmd) or {}).get(q))
                 [0 if side == "onebox" else 1] for q in ("p50", "p99", "max")]
            cells.append(" / ".join(num(x) for x in v))
        self.details.append(("%s, %s" % (sc, param), cmd, cells[0], cells[1]))

    def idle(self):
        for param in self.params("idle"):
            label = "idle, %s" % param
            sc = "idle"
            self.row(label, "connections idle at READY",
                     self.both(sc, param, lambda r: r["result"].get("idle")), digits=0)

            def per_conn(r):
                n = r["result"].get("idle") or r["result"].get("connected")
                if not n or r.get("pss_kib") is None:
                    return None
                return (r["pss_kib"] - r["pss_before_kib"]) / n
            self.row(label, "PSS KiB per idle connection", self.both(sc, param, per_conn),
                     "≤ 32 KiB", lambda a, d: a <= 32)
            self.row(label, "server PSS MiB at READY",
                     self.both(sc, param, lambda r: kib_to_mib(r.get("pss_kib"))))

            def anon_per_conn(r):
                n = r["result"].get("idle") or r["result"].get("connected")
                if not n or r.get("pss_anon_kib") is None:
                    return None
                return (r["pss_anon_kib"] - r["pss_anon_before_kib"]) / n
            self.row(label, "  of which anonymous, KiB per connection",
                     self.both(sc, param, anon_per_conn), optional=True)
            for q, target, check in (("p50", "", None),
                                     ("p99", "≤ 5 ms", lambda a, d: a <= 5),
                                     ("max", "", None)):
                self.row(label, "push %s ms (LMTP 250 → EXISTS)" % q,
                         self.both(sc, param, lambda r, q=q: (r["result"].get("push_ms") or {}).get(q)),
                         target, check)
            # From the final dot of DATA instead: includes the commit, and
            # is never 0 when EXISTS overtakes the 250.
            for q in ("p50", "p99"):
                self.row(label, "push %s ms from the end of DATA" % q,
                         self.both(sc, param, lambda r, q=q:
                                   (r["result"].get("push_after_data_ms") or {}).get(q)),
                         optional=True)
            self.floor_rows(label, sc, param)
            self.row(label, "pushes missed (sum of rounds)",
                     (sum_or_none([r["result"].get("missed") for r in self.recs(sc, param, "onebox")]),
                      sum_or_none([r["result"].get("missed") for r in self.recs(sc, param, "Dovecot")])),
                     "0", lambda a, d: a == 0, digits=0)
            self.row(label, "seconds until all idle",
                     self.both(sc, param, lambda r: r.get("ready_seconds")))
            self.row(label, "errors (sum of rounds)",
                     (sum_or_none([r["result"].get("errors") for r in self.recs(sc, param, "onebox")]),
                      sum_or_none([r["result"].get("errors") for r in self.recs(sc, param, "Dovecot")])),
                     digits=0)
            self.row(label, "server CPU s per run", self.both(sc, param, lambda r: r["server_cpu_s"]))

    def floor_rows(self, label, sc, param):
        """The do-nothing server's push latency (bench.py's run_floor), in
        the onebox column, and onebox's p99 over it."""
        recs = self.recs(sc, param, "floor")
        if not recs:
            return
        for q in ("p50", "p99", "max"):
            self.row(label, "push %s ms of a do-nothing server (floor)" % q,
                     (mean([(r["result"].get("push_ms") or {}).get(q) for r in recs]), None))
        onebox = self.both(sc, param, lambda r: (r["result"].get("push_ms") or {}).get("p99"))[0]
        floor = mean([(r["result"].get("push_ms") or {}).get("p99") for r in recs])
        r = ratio(onebox, floor)
        self.rows.append((label, "onebox push p99 / floor p99",
                          "—" if r is None else "%.2f×" % r, "—", "—", "", "—"))

    def large(self):
        sc = "large"
        params = self.params(sc)
        for param in params:
            label = "large, %s" % param
            lower = (lambda a, d: None if d is None else a < d)
            for cmd in self.latency_cmds(sc, param):
                n = min(x or 0 for x in self.lat(sc, param, cmd, "n"))
                if "FETCH" in cmd.upper() and "FLAGS" in cmd.upper() and param.startswith("1M"):
                    # The target: every sample under a second.
                    self.row(label, "%s p99 ms" % cmd, self.lat(sc, param, cmd, "p99"),
                             "< 1000 ms", lambda a, d: a < 1000)
                elif n < P99_MIN_SAMPLES:
                    # A few samples a round: the p99 is the slowest one (the
                    # first, on a cold cache, as a rule), shown; the p50 is
                    # judged, as in throughput().
                    self.row(label, "%s p50 ms" % cmd, self.lat(sc, param, cmd, "p50"),
                             "lower", lower)
                    self.row(label, "%s p99 ms (%d samples: not judged)" % (cmd, n),
                             self.lat(sc, param, cmd, "p99"), "lower")
                else:
                    self.row(label, "%s p99 ms" % cmd, self.lat(sc, param, cmd, "p99"),
                             "lower", lower)
                self.detail(sc, param, cmd)
            # The scenario's "POP3 login+UIDL": a server may list the
            # maildrop at PASS or at the first command that needs it.
            cmds = self.latency_cmds(sc, param)
            if "POP3_LOGIN" in cmds and "UIDL" in cmds:
                login = self.lat(sc, param, "POP3_LOGIN", "p50")
                uidl = self.lat(sc, param, "UIDL", "p50")
                self.row(label, "POP3 login + UIDL, sum of the p50s ms",
                         tuple(None if a is None or b is None else a + b
                               for a, b in zip(login, uidl)), "lower", lower)
            self.row(label, "server CPU s per run", self.both(sc, param, lambda r: r["server_cpu_s"]))
            self.row(label, "server PSS MiB (end)",
                     self.both(sc, param, lambda r: kib_to_mib(r.get("pss_kib"))))
            self.row(label, "  of which anonymous MiB",
                     self.both(sc, param, lambda r: kib_to_mib(r.get("pss_anon_kib"))), optional=True)
            size = param.split()[0]
            builds = self.b.builds.get(str(parse_count(size)), {})
            self.row(label, "mailbox build s (LMTP + UID COPY)",
                     (builds.get("onebox"), builds.get("Dovecot")))
        # Growth from the smallest to the largest size: O(log n) means a
        # factor near 1 (log 1M / log 100k = 1.2); linear would be 10.
        if len(params) >= 2:
            small, big = params[0], params[-1]
            label = "large, growth %s → %s" % (small.split()[0], big.split()[0])
            for cmd in self.latency_cmds(sc, big):
                u = cmd.upper()
                lo, hi = self.lat(sc, small, cmd, "p50"), self.lat(sc, big, cmd, "p50")
                growth = (ratio(hi[0], lo[0]), ratio(hi[1], lo[1]))
                target, check = "", None
                if "SELECT" in u or "QRESYNC" in u:
                    target, check = "≤ 2× (log)", (lambda a, d: a <= 2)
                self.row(label, "%s p50 growth ×" % cmd, growth, target, check)

    def build(self):
        self.throughput("imap-mix", "ops_per_sec", "commands/s")
        self.throughput("pop3", "messages_per_sec", "messages/s")
        self.throughput("lmtp", "messages_per_sec", "messages/s")
        self.idle()
        self.large()

    def markdown(self, meta):
        out = []
        out.append("# onebox vs Dovecot: benchmark results\n")
        for k, v in meta.items():
            out.append("- %s: %s" % (k, v))
        out.append("")
        if self.b.dovecot_note:
            out.append("**%s — onebox ran alone; no ratios.**\n" % self.b.dovecot_note)
        out.append("Means of the rounds per side; ratio = onebox / Dovecot.\n")
        if any(r["server"] == "floor" for r in self.b.runs):
            out.append("Rows marked (floor): the idle run against onebox-pushfloor, a "
                       "do-nothing server (tests/bench/pushfloor.c), shown in the onebox "
                       "column.\n")
        out.append("| scenario | metric | onebox | Dovecot | ratio | target | |")
        out.append("|---|---|--:|--:|--:|---|---|")
        last = None
        for sc, metric, a, d, r, t, met in self.rows:
            out.append("| %s | %s | %s | %s | %s | %s | %s |"
                       % (sc if sc != last else "", metric, a, d, r, t, met))
            last = sc
        if self.details:
            out.append("\nLatency in ms, p50 / p99 / max (means of the rounds):\n")
            out.append("| scenario | command | onebox | Dovecot |")
            out.append("|---|---|--:|--:|")
            last = None
            for sc, cmd, a, d in self.details:
                out.append("| %s | %s | %s | %s |" % (sc if sc != last else "", cmd, a, d))
                last = sc
        if self.b.problems:
            out.append("\nProblems:\n")
            for sc, param, server, why in self.b.problems:
                out.append("- %s %s, %s: %s" % (sc, param, server, why))
        return "\n".join(out) + "\n"


def sum_or_none(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) if xs else None


def kib_to_mib(x):
    return None if x is None else x / 1024


def parse_count(text):
    if text.endswith("M"):
        return int(text[:-1]) * 1000000
    if text.endswith("k"):
        return int(text[:-1]) * 1000
    return int(text)


def machine():
    total = mem_total()
    mem = "%.1f GiB" % (total / GIB) if total else "?"
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%d × %s, %s RAM, Linux %s" % (os.cpu_count() or 0, model, mem, platform.release())


@contextlib.contextmanager
def scratch_file(folder, name):
    """The path of a probe file in FOLDER, removed afterwards."""
    path = os.path.join(str(folder), name)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


PAGE_PROBE_MIB = 64
MSG_CHUNK = 256 << 10
GIB = 1 << 30
SETTLE_LIMIT_S = 300
TOP_UP_LIMIT_S = 120
BALLAST = "memory-ballast"


def mem_total():
    """The machine's memory in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def settle_memory(folder, limit_s):
    """Put the machine's memory in use before any load, as a mail host's is
    after its first hours: read a sparse file one GiB larger than the
    memory, so that the page cache holds it (holes cost no disk) and the
    kernel takes a new page from it, already touched, rather than from
    memory nobody has touched.  On this kind of virtual machine the host
    takes back the guest's free memory within seconds and charges a fault
    for the first touch of each page it gives out again (the mean per
    page of the fill, its first GiB left out since it may come from pages
    just freed, is reported); a server whose store grows by 256 KiB a
    message would pay 64 of those faults a message, Dovecot as much as
    onebox.  The file (BALLAST in FOLDER) stays until the end of the run,
    even with --keep, and the kernel drops its pages, the oldest first,
    as the servers need memory; top_up_memory reads it again before each
    round.
    Bounded by LIMIT_S seconds."""
    total = mem_total()
    if not total:
        return {"error": "no MemTotal in /proc/meminfo"}
    try:
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(folder)], capture_output=True,
                            timeout=10).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        fs = "?"
    if fs in ("tmpfs", "ramfs", "?"):
        # There the file's pages would be memory that cannot be dropped.
        return {"error": "the data folder is on %s" % fs}
    size = (total // GIB + 1) * GIB
    say("settling memory: reading a %d GiB sparse file into the page cache" % (size // GIB))
    t0 = time.monotonic()
    try:
        fd = os.open(os.path.join(str(folder), BALLAST),
                     os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return {"error": str(e)}
    try:
        os.ftruncate(fd, size)
        rates = read_ballast(fd, size, t0 + limit_s)
    except OSError as e:
        return {"error": str(e)}
    finally:
        os.close(fd)
    cold = rates[1:] or rates
    return {"GiB read": len(rates), "seconds": time.monotonic() - t0,
            "first touch us per page": sum(cold) / len(cold)}


def read_ballast(fd, size, deadline):
    """Read the ballast file FD of SIZE octets, a GiB at a time, until the
    monotonic DEADLINE: the microseconds per 4 KiB page of each GiB read."""
    buf = bytearray(1 << 20)
    rates = []
    for g in range(size // GIB):
        t = time.perf_counter()
        for off in range(g * GIB, (g + 1) * GIB, len(buf)):
            os.preadv(fd, [buf], off)
        rates.append((time.perf_counter() - t) / (GIB // 4096) * 1e6)
        if time.monotonic() > deadline:
            break
    return rates


def top_up_memory(folder, limit_s):
    """Read settle_memory's file again, so that each round starts with the
    memory in use as the first one did: this machine's kernel pages out
    page cache nobody touched for some seconds (a DAMON pageout scheme,
    tens of MB/s) and hands the freed memory back to the host (free page
    reporting), so without this the rounds late in a run would pay a host
    fault for each new page that the early ones did not (docs/benchmarks.md,
    "The machine").  Cached pages cost a copy; the pages dropped since are
    read again.  Seconds taken, or None without the file.  Bounded by
    LIMIT_S seconds."""
    path = os.path.join(str(folder), BALLAST)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    t0 = time.monotonic()
    try:
        read_ballast(fd, os.fstat(fd).st_size, t0 + limit_s)
    except OSError:
        return None
    finally:
        os.close(fd)
    return time.monotonic() - t0


def page_cost(folder):
    """What new memory costs now: a 256 KiB write into a new file (the page
    cache takes new pages for it, after settle_memory ones it frees from
    its own cache) and the same write over those now cached pages, each
    the mean of PAGE_PROBE_MIB MiB of them; and the first and the second
    touch of a 4 KiB page of fresh anonymous memory, a page fault and a
    plain store (a virtual machine that shadows the guest's page tables
    makes every page fault a trip to the host)."""
    size = PAGE_PROBE_MIB << 20
    pages = size // 4096
    chunk = os.urandom(MSG_CHUNK)
    out = {}
    try:
        with scratch_file(folder, "page-probe") as path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                for key in ("256 KiB write into new page-cache pages ms",
                            "256 KiB write into cached pages ms"):
                    t = time.perf_counter()
                    for off in range(0, size, MSG_CHUNK):
                        os.pwrite(fd, chunk, off)
                    out[key] = (time.perf_counter() - t) / (size // MSG_CHUNK) * 1000
            finally:
                os.close(fd)
            m = mmap.mmap(-1, size)
            try:
                for key in ("fault on fresh anonymous memory us per page", "second touch us"):
                    t = time.perf_counter()
                    for off in range(0, size, 4096):
                        m[off] = 1
                    out[key] = (time.perf_counter() - t) / pages * 1e6
            finally:
                m.close()
    except OSError as e:
        return {"error": str(e)}
    return out


def probe_line(result, describe):
    """The header line of a probe: DESCRIBE(RESULT), or why it was not
    measured."""
    if "error" in result:
        return "not measured: %s" % result["error"]
    return describe(result)


# Fewer samples per run than this on either side: a p99 row is not judged.
P99_MIN_SAMPLES = 100

SCATTERED_PAGES = 16
SCATTER_FILE_MIB = 64
SEQ_PROBE_MIB = 256     # the bandwidth probe's file (96 MiB in smoke mode)
BIG_COMMIT_KIB = 260    # a 256 KiB message in LMDB overflow pages (65 pages)


def disk_flush(folder, n):
    """What durability costs on the data folder's disk: the mean of N
    4 KiB appends each followed by fdatasync, of N 4 KiB writes through an
    O_DSYNC descriptor, and of N rounds of SCATTERED_PAGES 4 KiB writes at
    random places of a 64 MiB file followed by fdatasync.  An LMDB commit
    pays a flush of its data pages, then an O_DSYNC write of its meta page,
    so one sender waiting for every commit can never exceed 1000 / (sum)
    commits per second: the physical floor of scenario 3 with one sender.
    A commit's data pages are the copied path of every B-tree it changed,
    scattered over the file (the lmtp rows "disk write requests per
    message" count them), hence the third figure.  Then the disk's write
    bandwidth (rewriting cached pages and flushing them: what the 256 KiB
    rows' "disk MiB/s written" is measured against), and what one commit
    of one 256 KiB message costs: its 65 overflow pages in one write,
    SCATTERED_PAGES pages elsewhere, fdatasync, the meta page O_DSYNC."""
    block = os.urandom(4096)
    out = {}
    try:
        with scratch_file(folder, "flush-probe") as path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                mib = os.urandom(1 << 20)
                for i in range(SCATTER_FILE_MIB):
                    os.pwrite(fd, mib, i << 20)
                os.fdatasync(fd)
                rnd = random.Random(1)
                pages = SCATTER_FILE_MIB * 256
                t = time.perf_counter()
                for i in range(n):
                    for pg in sorted(rnd.sample(range(pages), SCATTERED_PAGES)):
                        os.pwrite(fd, block, pg * 4096)
                    os.fdatasync(fd)
                out["%d scattered pages + fdatasync ms" % SCATTERED_PAGES] = (
                    (time.perf_counter() - t) / n * 1000)
            finally:
                os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                t = time.perf_counter()
                for i in range(n):
                    os.pwrite(fd, block, i * 4096)
                    os.fdatasync(fd)
                out["write + fdatasync ms"] = (time.perf_counter() - t) / n * 1000
            finally:
                os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
            try:
                t = time.perf_counter()
                for i in range(n):
                    os.pwrite(fd, block, 0)
                out["O_DSYNC write ms"] = (time.perf_counter() - t) / n * 1000
            finally:
                os.close(fd)
            seq_mib = SEQ_PROBE_MIB if n >= 100 else SCATTER_FILE_MIB + 32
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # The disk's write bandwidth: lay the file down, then time
                # rewriting its (now cached) pages and flushing them, so
                # that the figure is the device's, not the page cache's.
                def write_file():
                    for i in range(seq_mib):
                        os.pwrite(fd, mib, i << 20)
                    os.fdatasync(fd)
                write_file()
                t = time.perf_counter()
                write_file()
                out["sequential write MiB/s"] = seq_mib / (time.perf_counter() - t)
                # One sender's commit of one 256 KiB message: the body's
                # pages (cached, as the store's runway keeps the space
                # ahead of the file's end), SCATTERED_PAGES B-tree pages
                # elsewhere, fdatasync, then the meta page O_DSYNC.
                body = os.urandom(BIG_COMMIT_KIB * 1024)
                per = len(body) // 4096
                dsync = os.open(path, os.O_WRONLY | os.O_DSYNC)
                try:
                    t = time.perf_counter()
                    for i in range(n):
                        pg0 = SCATTER_FILE_MIB * 256 + (i * per) % (
                            (seq_mib - SCATTER_FILE_MIB) * 256 - per)
                        os.pwrite(fd, body, pg0 * 4096)
                        for pg in sorted(rnd.sample(range(SCATTER_FILE_MIB * 256),
                                                    SCATTERED_PAGES)):
                            os.pwrite(fd, block, pg * 4096)
                        os.fdatasync(fd)
                        os.pwrite(dsync, block, 0)
                    out["256 KiB commit ms"] = (time.perf_counter() - t) / n * 1000
                finally:
                    os.close(dsync)
            finally:
                os.close(fd)
    except OSError as e:
        return {"error": str(e)}
    out["one-sender commits/s at most"] = 1000 / (out["write + fdatasync ms"]
                                                  + out["O_DSYNC write ms"])
    out["one-sender commits/s at most, %d pages" % SCATTERED_PAGES] = 1000 / (
        out["%d scattered pages + fdatasync ms" % SCATTERED_PAGES] + out["O_DSYNC write ms"])
    out["one-sender commits/s at most, 256 KiB"] = 1000 / out["256 KiB commit ms"]
    return out


class BlockDev:
    """The counters of the block device a folder lives on
    (/sys/dev/block/MAJ:MIN/stat, Documentation/block/stat.rst): write
    requests as the device saw them (after the kernel merged adjacent
    ones), KiB written, cache flushes.  Only one server is loaded at a
    time, so the difference over a run is that server's (plus the little
    the rest of the machine wrote meanwhile)."""

    def __init__(self, path):
        self.path = path

    @classmethod
    def of(cls, folder):
        try:
            st = os.stat(str(folder))
            path = "/sys/dev/block/%d:%d/stat" % (os.major(st.st_dev), os.minor(st.st_dev))
            dev = cls(path)
            return dev if dev.read() else None
        except OSError:
            return None

    def read(self):
        try:
            with open(self.path) as f:
                v = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return None
        if len(v) < 7:
            return None
        return {"writes": v[4], "write_kib": v[6] // 2,
                "flushes": v[15] if len(v) >= 16 else 0}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ------------------------------------------------------- process limits

class Sysctl:
    """fs.inotify.max_user_instances: Dovecot gives every IMAP process in
    IDLE its own inotify instance, all under one uid; the kernel's default
    of 128 would make every connection past it fall back to polling.  A
    Dovecot admin with thousands of IDLE users raises it; so do we (as root,
    restored at exit) unless --keep-inotify-limit."""

    PATH = "/proc/sys/fs/inotify/max_user_instances"

    def __init__(self):
        self.old = None

    def raise_to(self, n):
        try:
            with open(self.PATH) as f:
                cur = int(f.read())
        except (OSError, ValueError):
            return None
        if cur >= n:
            return cur
        try:
            with open(self.PATH, "w") as f:
                f.write(str(n))
            self.old = cur
            say("fs.inotify.max_user_instances %d → %d for this run" % (cur, n))
            return n
        except OSError:
            say("cannot raise fs.inotify.max_user_instances (%d): Dovecot's IDLE past "
                "that many connections falls back to polling" % cur)
            return cur

    def restore(self):
        if self.old is not None:
            try:
                with open(self.PATH, "w") as f:
                    f.write(str(self.old))
            except OSError:
                pass
            self.old = None


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


# ------------------------------------------------------------------ main

def find_loadgen(build, name="onebox-loadgen"):
    for cand in (build / name, build / "tests" / "bench" / name, build / "tests" / name):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Run onebox and Dovecot side by side (issue 6).")
    ap.add_argument("--smoke", action="store_true",
                    help="CI mode: a few seconds per scenario, small sizes, one round; "
                         "fails only when a scenario errors, never on a timing")
    ap.add_argument("--build", default=str(REPO / "build-bench"),
                    help="build folder with onebox and onebox-loadgen (default build-bench)")
    ap.add_argument("--onebox", help="the onebox binary (default BUILD/onebox)")
    ap.add_argument("--loadgen", help="the onebox-loadgen binary (default: found in BUILD)")
    ap.add_argument("--dovecot", default=shutil.which("dovecot") or "/usr/sbin/dovecot",
                    help="the dovecot binary")
    ap.add_argument("--no-dovecot", action="store_true", help="run onebox alone")
    ap.add_argument("--out", help="where results.md and results.json go (default BUILD)")
    ap.add_argument("--workdir", help="parent of the temporary data folder (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--no-settle", action="store_true",
                    help="do not fill the page cache before the runs (see settle_memory)")
    ap.add_argument("--rounds", type=int, help="rounds of onebox-then-Dovecot (default 2)")
    ap.add_argument("--duration", type=int, help="seconds per timed run (default 20)")
    ap.add_argument("--only", help="comma-separated: imap-mix,pop3,lmtp,idle,large")
    ap.add_argument("--mix-clients", help="imap-mix client counts (default 10,100)")
    ap.add_argument("--pop3-clients", type=int, help="POP3 clients (default 10)")
    ap.add_argument("--lmtp-senders", help="LMTP sender counts (default 1,10,50)")
    ap.add_argument("--lmtp-sizes", help="LMTP message sizes in bytes (default 4096,262144)")
    ap.add_argument("--idle", type=int, help="IDLE connections (default 10000; 0 skips)")
    ap.add_argument("--idle-rounds", type=int, help="rounds of the idle scenario (default 1)")
    ap.add_argument("--large", help="large mailbox sizes (default 100000,1000000)")
    ap.add_argument("--large-repeat", type=int, help="repetitions per large run (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="loadgen seed of round 1")
    ap.add_argument("--keep-inotify-limit", action="store_true",
                    help="leave fs.inotify.max_user_instances as it is")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only print the table again from a results.json")
    ap.add_argument("--max-minutes", type=float,
                    help="hard bound on the whole run (default 10 with --smoke, 240)")
    return ap.parse_args(argv)


def report_again(path):
    """The Markdown table of an earlier run, from its results.json."""
    with open(path) as f:
        data = json.load(f)
    b = argparse.Namespace(runs=data["runs"], builds=data.get("builds", {}),
                           problems=data.get("problems", []), dovecot_note=None)
    rep = Report(b, (data.get("probes") or {}).get("disk flush"))
    rep.build()
    print(rep.markdown(data.get("meta", {})))
    return 0


def main(argv):
    a = parse_args(argv)
    if a.report:
        return report_again(a.report)
    plan = Plan(a)
    build = pathlib.Path(a.build).resolve()
    out_dir = pathlib.Path(a.out).resolve() if a.out else build
    onebox_bin = pathlib.Path(a.onebox or build / "onebox").resolve()
    loadgen = pathlib.Path(a.loadgen).resolve() if a.loadgen else find_loadgen(build)
    if not onebox_bin.is_file():
        say("no onebox binary at %s (tests/bench/run builds it)" % onebox_bin)
        return 2
    if loadgen is None or not loadgen.is_file():
        say("no onebox-loadgen in %s (tests/bench/run builds it)" % build)
        return 2
    dovecot_bin = None
    dovecot_note = None
    if a.no_dovecot:
        dovecot_note = "Dovecot not run (--no-dovecot)"
    elif not (a.dovecot and os.access(a.dovecot, os.X_OK)):
        dovecot_note = "Dovecot is not installed (tools/deps.sh bench installs it)"
    else:
        dovecot_bin = a.dovecot
    if dovecot_note:
        shout(dovecot_note + "; onebox runs ALONE, there are no ratios.")

    max_minutes = a.max_minutes or (10 if plan.smoke else 240)

    def on_signal(signum, frame):
        raise Interrupted("signal %d" % signum)

    def on_alarm(signum, frame):
        raise Interrupted("the run took longer than %g minutes (--max-minutes)" % max_minutes)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(max_minutes * 60))

    conns = max(plan.idle, 100)
    nofile = raise_nofile(2 * conns + 2000)
    if nofile < conns + 500:
        plan.idle = max(0, nofile - 1000)
        say("open-file limit %d: IDLE connections lowered to %d" % (nofile, plan.idle))
    sysctl = Sysctl()
    inotify = None
    if plan.wants("idle") and plan.idle and dovecot_bin and not a.keep_inotify_limit:
        inotify = sysctl.raise_to(plan.idle + 1000)

    started = time.time()
    load0 = loadavg()
    flush = {"error": "not run"}
    settled = pages = {"error": "not run"}
    bench = None
    status = 0
    try:
        bench = Bench(plan, a, loadgen, onebox_bin, dovecot_bin,
                      pushfloor=find_loadgen(build, "onebox-pushfloor"))
        if dovecot_note:
            bench.dovecot_note = dovecot_note
        # Before any load, on the disk the stores live on: the memory
        # settled first, so that the probes see the pages the runs get.
        settled = ({"error": "--smoke or --no-settle"}
                   if plan.smoke or a.no_settle else settle_memory(bench.work, SETTLE_LIMIT_S))
        bench.settled = "error" not in settled
        pages = page_cost(bench.work)
        flush = disk_flush(bench.work, 50 if plan.smoke else 300)
        bench.setup()
        bench.run_all()
    except Interrupted as e:
        say("stopped: %s" % e)
        status = 3
    except BenchError as e:
        say("FAILED: %s" % e)
        status = 1
    finally:
        if bench is not None:
            bench.stop()
        sysctl.restore()
        signal.alarm(0)
    if bench is None:
        return status or 1

    dovecot_version = "—"
    if any(isinstance(s, Dovecot) for s in bench.servers) or dovecot_bin:
        try:
            dovecot_version = subprocess.run([dovecot_bin, "--version"], capture_output=True,
                                             timeout=10).stdout.decode().strip()
        except (OSError, subprocess.SubprocessError, TypeError):
            pass
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
        "mode": "smoke" if plan.smoke else "full",
        "command": "tests/bench/run " + " ".join(argv),
        "machine": machine(),
        "load average at start / end": "%s / %s" % (load0, loadavg()),
        "Dovecot": dovecot_version if dovecot_bin else (bench.dovecot_note or dovecot_note),
        "rounds": "%d (onebox, Dovecot, onebox, Dovecot ...)%s"
                  % (plan.rounds, "" if plan.idle_rounds == plan.rounds
                     else "; idle: %d" % plan.idle_rounds),
        "seconds per timed run": plan.duration,
        "fs.inotify.max_user_instances": inotify if inotify is not None else "unchanged",
        "wall time": "%.1f min" % ((time.time() - started) / 60),
    }
    if bench.floor_note:
        meta["push floor"] = bench.floor_note
    k = SCATTERED_PAGES
    meta["disk flush (data folder)"] = probe_line(flush, lambda f: (
        "4 KiB write + fdatasync %.3f ms, 4 KiB O_DSYNC write %.3f ms, %d scattered "
        "4 KiB writes + fdatasync %.3f ms (means); an LMDB commit flushes its data "
        "pages, then writes its meta page O_DSYNC, so one sender can get at most "
        "%.0f commits/s, and %.0f if a commit writes %d scattered pages"
        % (f["write + fdatasync ms"], f["O_DSYNC write ms"], k,
           f["%d scattered pages + fdatasync ms" % k], f["one-sender commits/s at most"],
           f["one-sender commits/s at most, %d pages" % k], k)
        + "; %.0f MiB/s written and flushed in 1 MiB writes; a 256 KiB message's "
        "commit (%d KiB in one write, %d scattered pages, fdatasync, O_DSYNC meta "
        "page) %.3f ms, %.0f commits/s"
        % (f["sequential write MiB/s"], BIG_COMMIT_KIB, k, f["256 KiB commit ms"],
           f["one-sender commits/s at most, 256 KiB"])))
    tops = [r["top_up_seconds"] for r in bench.runs if r.get("top_up_seconds") is not None]
    meta["memory settled"] = probe_line(settled, lambda s: (
        "the page cache was filled with %d GiB of a sparse file in %.0f s before the "
        "runs (settle_memory): %.2f us per new 4 KiB page (mean, the first GiB left out)"
        % (s["GiB read"], s["seconds"], s["first touch us per page"])
        + ("; read again before each of %d rounds (top_up_memory): %.1f s a round on "
           "average, %.1f s at most" % (len(tops), sum(tops) / len(tops), max(tops))
           if tops else "")))
    meta["new memory"] = probe_line(pages, lambda p: (
        "a 256 KiB write into new page-cache pages %.3f ms, into cached pages %.3f ms; "
        "a page fault on fresh anonymous memory %.2f us per 4 KiB page, a second "
        "touch %.2f us (means)"
        % (p["256 KiB write into new page-cache pages ms"],
           p["256 KiB write into cached pages ms"],
           p["fault on fresh anonymous memory us per page"], p["second touch us"])))
    rep = Report(bench, flush)
    rep.build()
    md = rep.markdown(meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(md)
    with open(out_dir / "results.json", "w") as f:
        json.dump({"meta": meta, "builds": bench.builds, "runs": bench.runs,
                   "problems": bench.problems, "onebox_conf": bench.onebox_conf,
                   "probes": {"disk flush": flush, "memory settled": settled,
                              "new memory": pages},
                   "dovecot_doveconf_n": bench.doveconf}, f, indent=1)
    print(md)
    say("written %s and %s" % (out_dir / "results.md", out_dir / "results.json"))
    if a.keep:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(str(bench.work), BALLAST))
        say("data kept in %s" % bench.work)
    else:
        shutil.rmtree(bench.work, ignore_errors=True)

    onebox_problems = [p for p in bench.problems if p[2] == "onebox"]
    other = [p for p in bench.problems if p[2] == "Dovecot"]
    # A generator that crashed is our bug whichever server it drove; the
    # push floor only informs, so its runs are reported and never fail.
    crashed = [r for r in bench.runs if isinstance(r.get("exit"), int) and r["exit"] < 0
               and not r.get("killed") and r["server"] != "floor"]
    for r in crashed:
        say("FAILED: onebox-loadgen %s died of signal %d against %s"
            % (r["scenario"], -r["exit"], r["server"]))
    floor_problems = [p for p in bench.problems if p[2] == "floor"]
    if floor_problems:
        shout("push floor problems (reported, not failing the run):\n" +
              "\n".join("%s %s: %s" % (p[0], p[1], p[3]) for p in floor_problems))
    if other:
        shout("Dovecot side problems (reported, not failing the run):\n" +
              "\n".join("%s %s: %s" % (p[0], p[1], p[3]) for p in other))
    if bench.dovecot_note:
        shout(bench.dovecot_note + "; onebox ran ALONE.")
    if status:
        return status
    if onebox_problems or crashed:
        say("FAILED: %d onebox run(s) had problems" % len(onebox_problems))
        return 1
    if not any(r["server"] == "onebox" for r in bench.runs):
        say("FAILED: onebox ran no scenario")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
