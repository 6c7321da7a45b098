"""
test_faults.py - what onebox does when things go wrong around it, and the
default quota that keeps one user from filling the disk.

- quota.storage / quota.messages: the limit of every user without their
  own (`onebox user quota`), in the daemon and in `onebox deliver` alike,
  reported by GETQUOTA; quota.lmtp_over_quota chooses 552 5.2.2 (bounce)
  or 452 4.2.2 (retry) for LMTP, and exit 77 or 75 for `onebox deliver`.
- A full disk (the data folder on a small tmpfs): LMTP answers 452 4.3.1,
  IMAP APPEND answers NO [UNAVAILABLE], reads go on, nothing stored is lost,
  and once there is room again delivery works without a restart.
- A data folder holding something that is not a onebox store (random
  bytes, another program's LMDB file, a truncated store): serve, check,
  user list and deliver refuse it, name the path, and leave it untouched.
"""

import hashlib
import os
import poplib
import random
import re
import shutil
import struct
import subprocess

import pytest

from conftest import (ONEBOX_BIN, DaemonError, lmtp_send, lmtp_stored, make_body,
                      sanitizer_env, sanitizer_findings)


def msg(subject, size=0, seed=0):
    body = make_body(size, seed=seed, eightbit=False) if size else b"hello\r\n"
    return b"Subject: %s\r\nFrom: s@example.org\r\n\r\n" % subject.encode() + body


def kib(n):
    return (n + 1023) // 1024


def getquota(c):
    typ, data = c.getquota('""')
    assert typ == "OK", data
    return data[0]


def set_quota(d, user, *args):
    r = d.cli("user", "quota", user, *args)
    assert r.returncode == 0, r.stderr
    return r


def lmtp_one(d, rcpts, m):
    """Deliver M over LMTP to RCPTS; {rcpt: (code, text)} after DATA."""
    c = d.lmtp()
    try:
        _, rr, after = lmtp_send(c, "s@example.org", rcpts, m)
        for r in rcpts:
            assert rr[r][0] == 250, rr
        return after
    finally:
        c.quit()


# ------------------------------------------------------- the default quota

def test_default_quota_limits_append_copy_and_getquota(daemon_factory):
    """Users without a quota of their own get quota.*: GETQUOTA reports it,
    APPEND and COPY over it answer NO [OVERQUOTA] and store nothing, and a
    MOVE (which adds nothing) still works at the limit."""
    d = daemon_factory(settings={"quota": {"storage": "4K", "messages": 3}})
    c = d.imap("alice", d.password("alice"))
    assert getquota(c) == b'"" (STORAGE 0 4 MESSAGE 0 3)'
    m = msg("append", 900, seed=1)
    used = 0
    for _ in range(3):
        typ, data = c.append("INBOX", None, None, m)
        assert typ == "OK", data
        used += len(m)
    assert getquota(c) == b'"" (STORAGE %d 4 MESSAGE 3 3)' % kib(used)
    typ, data = c.append("INBOX", None, None, msg("fourth"))
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
    c.select("INBOX")
    typ, data = c.copy("1", "Archive")
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
    typ, data = c.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0], data
    typ, data = c._simple_command("MOVE", "1", "Archive")
    assert typ == "OK", data
    typ, data = c.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    c.logout()
    # bob has the same default, counted on his own.
    b = d.imap("bob", d.password("bob"))
    assert getquota(b) == b'"" (STORAGE 0 4 MESSAGE 0 3)'
    b.logout()
    assert len(d.messages("alice")) == 2


def test_default_quota_applies_to_lmtp_and_deliver(daemon_factory):
    """The default is enforced by the daemon's LMTP and by `onebox deliver`
    (another process, reading the same config): 552 5.2.2 and exit 77."""
    d = daemon_factory(settings={"quota": {"messages": 2}})
    assert d.deliver("alice", msg("cli one")) == 0
    after = lmtp_one(d, ["alice@example.com"], msg("lmtp two"))
    assert after["alice@example.com"][0] == 250, after
    after = lmtp_one(d, ["alice@example.com"], msg("lmtp three"))
    assert after["alice@example.com"][0] == 552, after
    assert after["alice@example.com"][1].startswith(b"5.2.2 "), after
    r = d.cli("deliver", "alice", input=msg("cli four"))
    assert r.returncode == 77, r
    assert r.stderr.startswith(b"5.2.2 "), r.stderr
    stored = d.messages("alice")
    assert [re.search(rb"Subject: ([^\r]*)", m).group(1) for m in stored] == [
        b"cli one", b"lmtp two"]


def test_lmtp_over_quota_temporary(daemon_factory):
    """quota.lmtp_over_quota = "temporary": the full mailbox's recipient
    gets 452 4.2.2 and nothing is stored for it, the other recipient of the
    same transaction gets the message, and `onebox deliver` exits 75."""
    d = daemon_factory(settings={"quota": {"messages": 1, "lmtp_over_quota": "temporary"}})
    after = lmtp_one(d, ["alice@example.com"], msg("first"))
    assert after["alice@example.com"][0] == 250, after
    after = lmtp_one(d, ["alice@example.com", "bob@example.com"], msg("second"))
    assert after["alice@example.com"][0] == 452, after
    assert after["alice@example.com"][1].startswith(b"4.2.2 "), after
    assert after["bob@example.com"][0] == 250, after
    r = d.cli("deliver", "alice", input=msg("third"))
    assert r.returncode == 75, r
    assert r.stderr.startswith(b"4.2.2 "), r.stderr
    alice = d.messages("alice")
    assert len(alice) == 1 and b"Subject: first" in alice[0], alice
    assert len(d.messages("bob")) == 1
    c = d.imap("alice", d.password("alice"))
    assert getquota(c) == b'"" (MESSAGE 1 1)'
    c.logout()


def test_user_quota_overrides_the_default(daemon_factory):
    """`user quota NAME` values win over the default; "none" (or 0) is no
    limit whatever the default; "default" follows the config again; a
    user who follows the default sees a new default after a restart."""
    d = daemon_factory(settings={"quota": {"messages": 1}})
    set_quota(d, "alice", "--messages", "3")
    c = d.imap("alice", d.password("alice"))
    assert getquota(c) == b'"" (MESSAGE 0 3)'
    for i in range(3):
        typ, data = c.append("INBOX", None, None, msg("own %d" % i))
        assert typ == "OK", data
    typ, data = c.append("INBOX", None, None, msg("over"))
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
    out = d.cli("user", "quota", "alice").stdout
    assert re.search(rb"3 of 3 messages \[own\]", out), out
    assert re.search(rb"of 0 bytes \[default\]", out), out

    set_quota(d, "alice", "--messages", "none")
    assert getquota(c) == b'"" ()'
    typ, data = c.append("INBOX", None, None, msg("unlimited"))
    assert typ == "OK", data
    set_quota(d, "alice", "--messages", "0")
    assert getquota(c) == b'"" ()'

    set_quota(d, "alice", "--messages", "default")
    assert getquota(c) == b'"" (MESSAGE 4 1)'
    typ, data = c.append("INBOX", None, None, msg("over again"))
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
    out = d.cli("user", "quota", "alice").stdout
    assert re.search(rb"4 of 1 messages \[default\]", out), out
    # Setting one resource keeps the other as it was set (following the
    # default), not as it was in force.
    set_quota(d, "alice", "--bytes", "1M")
    out = d.cli("user", "quota", "alice").stdout
    assert re.search(rb"of 1048576 bytes \[own\], 4 of 1 messages \[default\]", out), out
    c.logout()

    b = d.imap("bob", d.password("bob"))
    assert getquota(b) == b'"" (MESSAGE 0 1)'
    b.logout()
    d.restart(quota={"messages": 10})
    b = d.imap("bob", d.password("bob"))
    assert getquota(b) == b'"" (MESSAGE 0 10)'
    b.logout()
    c = d.imap("alice", d.password("alice"))
    assert getquota(c) == b'"" (STORAGE %d 1024 MESSAGE 4 10)' % kib(
        sum(len(m) for m in d.messages("alice")))
    c.logout()


def test_quota_config_errors(daemon_factory):
    d = daemon_factory(start=False)
    d.update_settings({"quota": {"lmtp_over_quota": "maybe", "storage": "1Q",
                                 "messages": -1, "files": 3}})
    r = d.cli("check")
    assert r.returncode != 0
    err = r.stderr.decode()
    assert re.search(r"onebox\.conf:\d+: quota\.lmtp_over_quota \"maybe\" is not one of "
                     r"\"permanent\" or \"temporary\"", err), err
    assert "quota.storage" in err and "quota.messages" in err, err
    assert "unknown key 'files' in group 'quota'" in err, err
    d.settings["quota"] = {"storage": "20G", "messages": 100000,
                           "lmtp_over_quota": "permanent"}
    d.write_config()
    r = d.cli("check")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------- full disk

SMALL_FS = "8m"


def run_in(prefix, *args, input=b"", timeout=120):
    r = subprocess.run(prefix + [ONEBOX_BIN, *args], input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=sanitizer_env(), timeout=timeout, cwd="/")
    found = sanitizer_findings(r.stderr.decode("utf-8", "replace"))
    assert not found, "sanitizer report:\n" + found
    return r


def probe_unshare(mnt):
    """True if this user can mount a tmpfs in a new user+mount namespace."""
    if not shutil.which("unshare"):
        return False
    try:
        r = subprocess.run(["unshare", "-rm", "sh", "-c",
                            'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", str(mnt)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class SmallFs:
    """The data folder of daemon D moved onto a tmpfs of SMALL_FS, either in
    a user+mount namespace of the daemon's own (nothing to clean up: the
    mount dies with the daemon), or, failing that, mounted as root."""

    def __init__(self, d):
        self.d = d
        self.mnt = d.dir / "small"
        self.mnt.mkdir()
        self.mounted = False
        if probe_unshare(self.mnt):
            self.how = "unshare"
        elif os.geteuid() == 0 and shutil.which("mount"):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + SMALL_FS + ",mode=0755",
                                "tmpfs", str(self.mnt)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            if r.returncode != 0:
                pytest.skip("no small filesystem: unshare -rm cannot mount a tmpfs here, "
                            "and mount as root failed: %s" % r.stdout.decode(errors="replace"))
            self.how = "root"
            self.mounted = True
        else:
            pytest.skip("no small filesystem: unshare -rm cannot mount a tmpfs here "
                        "(user namespaces off?) and we are not root")

    def start(self):
        """Copy the store (users made by the factory) onto the small
        filesystem and start `onebox serve` over it."""
        d = self.d
        store = d.dir / "store"
        d.update_settings({"storage": {"path": "small"}})
        if self.how == "unshare":
            script = ('set -e; mount -t tmpfs -o size="$1",mode=0755 tmpfs "$2"; '
                      'cp -a "$3/." "$2/"; shift 3; exec "$@"')
            argv = ["unshare", "-rm", "sh", "-c", script, "sh", SMALL_FS, str(self.mnt),
                    str(store), ONEBOX_BIN, "serve", "-c", str(d.conf)]
        else:
            subprocess.run(["cp", "-a", str(store) + "/.", str(self.mnt) + "/"], check=True)
            argv = [ONEBOX_BIN, "serve", "-c", str(d.conf)]
        log = d.dir / ("serve.%d.log" % len(d.logs))
        d.logs.append(log)
        with open(log, "wb") as f:
            d.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                      stderr=subprocess.STDOUT, env=sanitizer_env(), cwd="/")
        why = d._wait_ready()
        if why is not None:
            raise DaemonError("onebox serve (on a small tmpfs) did not start: %s\n%s"
                              % (why, d.log_tail()))

    def path(self, name):
        """NAME inside the small filesystem, as this process reaches it."""
        if self.how == "unshare":
            return "/proc/%d/root%s/%s" % (self.d.pid(), self.mnt, name)
        return str(self.mnt / name)

    def cli_prefix(self):
        """Run a CLI command where it sees the small filesystem."""
        if self.how == "unshare":
            return ["nsenter", "-t", str(self.d.pid()), "-U", "-m", "--preserve-credentials"]
        return []

    def free(self):
        st = os.statvfs(self.path(""))
        return st.f_bavail * st.f_frsize

    def cleanup(self):
        if self.mounted:
            self.d.stop()
            subprocess.run(["umount", "-l", str(self.mnt)], timeout=30)
            self.mounted = False


@pytest.fixture
def small_fs_daemon(daemon_factory):
    d = daemon_factory(users={"alice": "pw-alice"}, pop3={"mark_seen": False}, start=False)
    fs = SmallFs(d)
    fs.start()
    yield d, fs
    fs.cleanup()


def fill(fs, leave):
    """Write a filler file so that about LEAVE octets stay free."""
    filler = fs.path("filler")
    want = fs.free() - leave
    with open(filler, "wb") as f:
        block = b"\0" * 65536
        for _ in range(100000):
            if want <= 0:
                break
            try:
                f.write(block[:min(want, len(block))])
                f.flush()
            except OSError:
                break
            want -= len(block)
    return filler


def test_full_disk(small_fs_daemon):
    d, fs = small_fs_daemon
    rcpt = "alice@example.com"
    stored = []
    c = d.lmtp()
    for i in range(3):
        m = msg("before %d" % i, 100_000, seed=i)
        _, _, after = lmtp_send(c, "s@example.org", [rcpt], m)
        assert after[rcpt][0] == 250, after
        stored.append(lmtp_stored(m))
    filler = fill(fs, 300_000)

    # Deliver until the disk is full: 452 4.3.1, and the session goes on.
    refused = None
    for i in range(40):
        m = msg("filling %d" % i, 100_000, seed=100 + i)
        _, _, after = lmtp_send(c, "s@example.org", [rcpt], m)
        if after[rcpt][0] == 250:
            stored.append(lmtp_stored(m))
            continue
        refused = after[rcpt]
        break
    assert refused is not None, "%d messages of 100 KB fit in %s" % (len(stored), SMALL_FS)
    assert refused[0] == 452 and refused[1].startswith(b"4.3.1 "), refused
    assert c.noop()[0] == 250
    c.quit()

    # IMAP APPEND: a temporary NO (RFC 5530 UNAVAILABLE), nothing stored.
    im = d.imap("alice", "pw-alice")
    typ, data = im.append("INBOX", None, None, msg("append", 100_000, seed=999))
    assert typ == "NO" and b"[UNAVAILABLE]" in data[0], data
    # `onebox deliver` (another process): 75 with the same 4.3.1.
    r = run_in(fs.cli_prefix(), "deliver", "alice", "-c", str(d.conf),
               input=msg("cli", 100_000, seed=998))
    assert r.returncode == 75, r
    assert r.stderr.startswith(b"4.3.1 "), r.stderr

    # A POP3 QUIT with a DELE: applied whole (small writes may still fit in
    # pages LMDB freed earlier), or refused with [SYS/TEMP] keeping it all.
    p = d.pop3("alice", "pw-alice")
    assert p.dele(1).startswith(b"+OK")
    try:
        p.quit()
        del stored[0]
    except poplib.error_proto as e:
        assert b"[SYS/TEMP]" in e.args[0], e
        p.close()
        print("POP3 QUIT on the full disk: %r" % e.args[0])
    else:
        print("POP3 QUIT on the full disk: applied")

    # Reads go on, over both protocols, and show exactly what was stored.
    assert d.messages("alice") == stored
    im.select("INBOX", readonly=True)
    typ, data = im.fetch("1:*", "(BODY.PEEK[])")
    assert typ == "OK", data
    assert [x[1] for x in data if isinstance(x, tuple)] == stored

    # Room again: delivery works with no restart.
    os.unlink(filler)
    m = msg("after", 100_000, seed=500)
    after = lmtp_one(d, [rcpt], m)
    assert after[rcpt][0] == 250, after
    stored.append(lmtp_stored(m))
    m = msg("appended after", 50_000, seed=501)
    typ, data = im.append("INBOX", None, None, m)
    assert typ == "OK", data
    stored.append(m)
    im.logout()
    assert d.messages("alice") == stored


# ---------------------------------------------- a data folder not ours

def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_random(d, store):
    (store / "data.mdb").write_bytes(random.Random(1).randbytes(64 * 1024))


def make_magic_garbage(d, store):
    """LMDB's meta magic and version in both meta pages, garbage around."""
    b = bytearray(random.Random(2).randbytes(4 * 4096))
    for off in (0, 4096):
        b[off + 16:off + 24] = struct.pack("<II", 0xBEEFC0DE, 1)
    (store / "data.mdb").write_bytes(bytes(b))


def make_foreign_lmdb(d, store):
    """A real LMDB environment, written by another program (mdb_load)."""
    if not shutil.which("mdb_load"):
        pytest.skip("mdb_load (lmdb-utils) is not installed")
    dump = (b"VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=1048576\nHEADER=END\n"
            b" 6b6579\n 76616c7565\nDATA=END\n")
    subprocess.run(["mdb_load", str(store)], input=dump, check=True, timeout=60)


def make_truncated(d, store):
    """Our own store, cut short (a copy that ran out of disk, say)."""
    for i in range(30):
        assert d.deliver("alice", msg("m%d" % i, 40_000, seed=i)) == 0
    data = store / "data.mdb"
    size = data.stat().st_size
    assert size > 4 * 4096
    with open(data, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("make", [make_random, make_magic_garbage, make_foreign_lmdb,
                                  make_truncated])
def test_refuses_a_data_folder_that_is_not_a_store(daemon_factory, make):
    d = daemon_factory(users={"alice": "pw"}, start=False)
    store = d.dir / "store"
    if make is not make_truncated:
        shutil.rmtree(store)
        store.mkdir()
    make(d, store)
    data = store / "data.mdb"
    before = sha256(data)
    where = str(data)

    r = subprocess.run([ONEBOX_BIN, "serve", "-c", str(d.conf)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sanitizer_env(),
                       timeout=60, cwd="/")
    out = r.stdout.decode(errors="replace")
    assert not sanitizer_findings(out), out
    assert r.returncode != 0, out
    assert where in out, out
    assert sha256(data) == before

    for args in (("check",), ("user", "list"), ("user", "add", "carol")):
        r = d.cli(*args, input=b"pw\n")
        assert r.returncode != 0, (args, r)
        assert where in r.stderr.decode(errors="replace"), (args, r.stderr)
        assert sha256(data) == before, args
    r = d.cli("deliver", "alice", input=msg("x"))
    assert r.returncode == 75, r
    assert where in r.stderr.decode(errors="replace"), r.stderr
    assert sha256(data) == before
