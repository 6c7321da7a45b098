"""
The command line: `onebox user add|del|passwd|list`, `onebox check`, and
`onebox serve` refusing a bad config.  Errors in a config must be reported
as FILE:LINE: message with the line of the offending setting.
"""

import os
import poplib
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import time

import pytest

from conftest import (ONEBOX_BIN, REPO, free_ports, lmtp_send, run_onebox, sanitizer_env,
                      sanitizer_findings)


# ------------------------------------------------------------------ users

def names(r):
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert all(l and l == l.strip() for l in lines), lines
    assert len(lines) == len(set(lines)), lines
    return set(lines)


def can_login(d, user, pw):
    p = d.pop3()
    try:
        p.user(user)
        p.pass_(pw)
    except poplib.error_proto as e:
        assert e.args[0].startswith(b"-ERR [AUTH]"), e.args[0]
        p.close()
        return False
    p.quit()
    return True


def test_user_lifecycle_while_daemon_runs(daemon_factory):
    d = daemon_factory(users={})
    assert names(d.cli("user", "list")) == set()

    r = d.cli("user", "add", "alice", input=b"first secret\nnot the password\n")
    assert r.returncode == 0, r.stderr
    r = d.cli("user", "add", "alice", input=b"again\n")
    assert r.returncode == 1, "adding an existing user must fail"
    assert r.stderr.strip(), "a failure says why on stderr"
    assert d.cli("user", "add", "bob@example.com", input=b"b\n").returncode == 0
    assert names(d.cli("user", "list")) == {"alice", "bob@example.com"}

    # Password = the first line of stdin, spaces included.
    assert can_login(d, "alice", "first secret")
    assert not can_login(d, "alice", "not the password")

    r = d.cli("user", "passwd", "alice", input=b"second\n")
    assert r.returncode == 0, r.stderr
    assert can_login(d, "alice", "second")
    assert not can_login(d, "alice", "first secret")
    assert d.cli("user", "passwd", "nobody", input=b"x\n").returncode != 0

    # A user added while the daemon runs receives mail over LMTP at once.
    c = d.lmtp()
    m = b"Subject: hi bob\r\n\r\nbody\r\n"
    _, rr, data = lmtp_send(c, "s@example.org", ["bob@example.com"], m)
    assert data["bob@example.com"][0] == 250
    c.quit()
    d.users["bob@example.com"] = "b"
    assert d.messages("bob@example.com") == [m]

    # Deleting removes the user, its login, its mail.
    r = d.cli("user", "del", "bob@example.com")
    assert r.returncode == 0, r.stderr
    assert names(d.cli("user", "list")) == {"alice"}
    assert not can_login(d, "bob@example.com", "b")
    c = d.lmtp()
    c.ehlo()
    assert c.mail("s@example.org")[0] == 250
    code, text = c.rcpt("bob@example.com")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    c.quit()
    assert d.cli("user", "del", "bob@example.com").returncode != 0
    assert d.cli("user", "add", "bob@example.com", input=b"new\n").returncode == 0
    d.users["bob@example.com"] = "new"
    assert d.messages("bob@example.com") == []   # nothing left from before


def test_users_survive_restart(daemon_factory):
    d = daemon_factory(users={"u1": "p1", "u2": "p2"})
    d.restart()
    assert names(d.cli("user", "list")) == {"u1", "u2"}
    assert can_login(d, "u2", "p2")


# ----------------------------------------------------------------- config

GOOD_LINES = [
    '# a test configuration',                                          # 1
    'storage = { path = "store"; };',                                  # 2
    'tls = { certificate = "cert.pem"; key = "key.pem"; };',           # 3
    'listen = (',                                                      # 4
    '  { protocol = "pop3"; address = "127.0.0.1"; port = @P1@; },',   # 5
    '  { protocol = "pop3s"; address = "127.0.0.1"; port = @P2@; },',  # 6
    '  { protocol = "lmtp"; address = "127.0.0.1"; port = @P3@; },',   # 7
    '  { protocol = "lmtp"; path = "lmtp.sock"; }',                    # 8
    ');',                                                              # 9
    'auth = { allow_plaintext = false; };',                            # 10
    'pop3 = { delete_mode = "flag"; lock_session = true; uidl_format = "cyrus"; mark_seen = true; };',  # 11
    'lmtp = { max_message_size = "50M"; max_recipients = 100; };',     # 12
    'limits = { max_connections = 10000; max_per_address = 100; max_line = 65536;',  # 13
    '           max_output = "1M"; preauth_timeout = "1m"; imap_idle_timeout = "30m";',  # 14
    '           pop3_idle_timeout = 600; lmtp_timeout = 300; };',      # 15
    'log_level = "info";',                                             # 16
]


@pytest.fixture
def confdir(workdir, certs):
    shutil.copy(certs["cert"], workdir / "cert.pem")
    shutil.copy(certs["key"], workdir / "key.pem")
    return workdir


def write_conf(confdir, lines, name="onebox.conf"):
    p1, p2, p3 = free_ports(3)
    text = "\n".join(lines) + "\n"
    text = text.replace("@P1@", str(p1)).replace("@P2@", str(p2)).replace("@P3@", str(p3))
    path = confdir / name
    path.write_text(text)
    return str(path)


def test_check_accepts_a_good_config(onebox_bin, confdir):
    conf = write_conf(confdir, GOOD_LINES)
    r = run_onebox("check", "-c", conf)
    assert r.returncode == 0, r.stderr.decode(errors="replace")


def test_check_accepts_the_minimal_config(onebox_bin, confdir):
    conf = write_conf(confdir, ['storage = { path = "store"; };',
                                'listen = ( { protocol = "lmtp"; address = "127.0.0.1"; port = @P1@; } );'])
    r = run_onebox("check", "-c", conf)
    assert r.returncode == 0, r.stderr.decode(errors="replace")


# (name, line number, replacement for that line): one fault each.
BAD = [
    ("unknown_top_level_key", 16, 'log_levle = "info";'),
    ("unknown_key_in_group", 11, 'pop3 = { delete_mode = "flag"; colour = "blue"; };'),
    ("unknown_key_in_listen", 7, '  { protocol = "lmtp"; address = "127.0.0.1"; port = @P3@; colour = 1; },'),
    ("wrong_type_bool", 10, 'auth = { allow_plaintext = "yes"; };'),
    ("wrong_type_int", 12, 'lmtp = { max_message_size = "50M"; max_recipients = "many"; };'),
    ("wrong_type_group", 2, 'storage = "store";'),
    ("port_70000", 6, '  { protocol = "pop3s"; address = "127.0.0.1"; port = 70000; },'),
    ("port_0", 5, '  { protocol = "pop3"; address = "127.0.0.1"; port = 0; },'),
    ("unknown_protocol", 5, '  { protocol = "smtp"; address = "127.0.0.1"; port = @P1@; },'),
    ("bad_address", 5, '  { protocol = "pop3"; address = "not-an-address"; port = @P1@; },'),
    ("bad_delete_mode", 11, 'pop3 = { delete_mode = "shred"; };'),
    ("bad_uidl_format", 11, 'pop3 = { uidl_format = "gmail"; };'),
    ("bad_size_string", 12, 'lmtp = { max_message_size = "50Q"; };'),
    ("bad_duration_string", 14, '           max_output = "1M"; preauth_timeout = "soon"; imap_idle_timeout = "30m";'),
    ("bad_log_level", 16, 'log_level = "loud";'),
    ("missing_certificate_file", 3, 'tls = { certificate = "missing.pem"; key = "key.pem"; };'),
    ("missing_key_file", 3, 'tls = { certificate = "cert.pem"; key = "missing-key.pem"; };'),
    ("duplicate_listener", 6, '  { protocol = "pop3s"; address = "127.0.0.1"; port = @P1@; },'),
    ("lmtp_socket_on_pop3", 8, '  { protocol = "pop3"; path = "lmtp.sock"; }'),
    ("syntax_error", 10, 'auth = { allow_plaintext = ; };'),
    ("syntax_error_missing_brace", 11, 'pop3 = { delete_mode = "flag"; ;'),
]


@pytest.mark.parametrize("name,line,text", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_with_file_and_line(onebox_bin, confdir, name, line, text):
    lines = list(GOOD_LINES)
    lines[line - 1] = text
    conf = write_conf(confdir, lines)
    r = run_onebox("check", "-c", conf)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, "check exit %d, stderr: %s" % (r.returncode, err)
    assert re.search(r"(^|\n)%s:%d: \S" % (re.escape(conf), line), err), \
        "want '%s:%d: message' on stderr, got:\n%s" % (conf, line, err)

    # serve refuses the same file, with the same message, and never listens.
    try:
        s = subprocess.run([ONEBOX_BIN, "serve", "-c", conf], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=sanitizer_env(), timeout=30, cwd="/")
    except subprocess.TimeoutExpired:
        pytest.fail("onebox serve kept running on a bad config (%s)" % name)
    serr = s.stderr.decode(errors="replace")
    assert not sanitizer_findings(serr), serr
    assert s.returncode != 0, serr
    assert re.search(r"%s:%d: \S" % (re.escape(conf), line), serr), serr


@pytest.mark.skipif(os.geteuid() != 0, reason="the user is checked only when run as root")
def test_check_unknown_user_to_become(onebox_bin, confdir):
    lines = list(GOOD_LINES)
    lines[0] = 'user = "no-such-user-onebox";'
    conf = write_conf(confdir, lines)
    r = run_onebox("check", "-c", conf)
    assert r.returncode == 1
    assert re.search(r"%s:1: \S" % re.escape(conf), r.stderr.decode(errors="replace")), r.stderr


def test_check_missing_file(onebox_bin, confdir):
    r = run_onebox("check", "-c", str(confdir / "does-not-exist.conf"))
    assert r.returncode == 1
    assert b"does-not-exist.conf" in r.stderr


def test_relative_paths_resolve_against_the_config_file(onebox_bin, confdir):
    """run_onebox runs from /, so "cert.pem" only resolves next to the file."""
    sub = confdir / "sub"
    sub.mkdir()
    shutil.move(str(confdir / "cert.pem"), str(sub / "cert.pem"))
    shutil.move(str(confdir / "key.pem"), str(sub / "key.pem"))
    conf = write_conf(sub, GOOD_LINES)
    assert run_onebox("check", "-c", conf).returncode == 0
    # The same file one folder up, where there is no cert.pem: refused.
    conf2 = write_conf(confdir, GOOD_LINES, name="up.conf")
    r = run_onebox("check", "-c", conf2)
    assert r.returncode == 1
    assert re.search(r"%s:3: \S" % re.escape(conf2), r.stderr.decode(errors="replace"))


# ------------------------------------------------- the shipped configs

CONFIG_DIR = REPO / "config"


def test_production_example_config_is_valid(onebox_bin, confdir):
    """config/onebox.conf, with its system paths moved into a test folder
    (and the user it drops to replaced when it does not exist here)."""
    text = (CONFIG_DIR / "onebox.conf").read_text()
    for old, new in (("/var/lib/onebox", str(confdir / "store")),
                     ("/etc/onebox/", str(confdir) + "/"),
                     ("/run/onebox/", str(confdir) + "/")):
        text = text.replace(old, new)
    try:
        pwd.getpwnam("onebox")
    except KeyError:
        text = re.sub(r'(?m)^user = "onebox";', 'user = "nobody";', text)
    conf = confdir / "onebox.conf"
    conf.write_text(text)
    r = run_onebox("check", "-c", str(conf))
    assert r.returncode == 0, r.stderr.decode(errors="replace")


def test_demo_config_serves(onebox_bin, confdir):
    """config/demo.conf as demo.sh uses it (a demo-data/ folder beside
    config/ with the certificate), on free ports: check passes, and serve
    answers POP3S and LMTP."""
    (confdir / "config").mkdir()
    (confdir / "demo-data").mkdir()
    shutil.copy(confdir / "cert.pem", confdir / "demo-data" / "cert.pem")
    shutil.copy(confdir / "key.pem", confdir / "demo-data" / "key.pem")
    text = (CONFIG_DIR / "demo.conf").read_text()
    ports = {}
    for port in sorted(set(re.findall(r"port = (\d+);", text))):
        ports[port] = free_ports(1)[0]
        text = text.replace("port = %s;" % port, "port = %d;" % ports[port])
    conf = confdir / "config" / "demo.conf"
    conf.write_text(text)
    assert run_onebox("check", "-c", str(conf)).returncode == 0
    assert run_onebox("user", "add", "demo", "-c", str(conf), input=b"demo\n").returncode == 0
    log = open(confdir / "demo.log", "wb")
    proc = subprocess.Popen([ONEBOX_BIN, "serve", "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=sanitizer_env(), cwd="/")
    try:
        ctx = ssl.create_default_context(cafile=str(confdir / "cert.pem"))
        p = None
        for _ in range(200):      # bounded wait for the listeners
            try:
                p = poplib.POP3_SSL("127.0.0.1", ports["1995"], context=ctx, timeout=30)
                break
            except OSError:
                assert proc.poll() is None, (confdir / "demo.log").read_text()
                time.sleep(0.05)
        assert p is not None, (confdir / "demo.log").read_text()
        p.user("demo")
        p.pass_("demo")
        assert p.stat() == (0, 0)
        p.quit()
        c = smtplib.LMTP("127.0.0.1", ports["2424"], timeout=30)
        _, _, data = lmtp_send(c, "s@example.org", ["demo@localhost"], b"Subject: demo\r\n\r\nhi\r\n")
        assert data["demo@localhost"][0] == 250
        c.quit()
    finally:
        proc.terminate()
        rc = proc.wait(60)
        log.close()
    text = (confdir / "demo.log").read_text(errors="replace")
    assert rc == 0, text
    assert not sanitizer_findings(text), text
