# SPDX-License-Identifier: MIT
"""The command line: nginx's and php-fpm's habits (-t, -T, -q, -v), and what -t catches."""
import os
import pwd
import subprocess

from conftest import ECHO_CONF, UDSD

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "..", "etc", "udsd.conf")
VERSION = subprocess.run([UDSD, "--version"], capture_output=True, text=True).stdout.strip()


def run(*args, **kw):
    r = subprocess.run([UDSD] + list(args), capture_output=True, text=True, timeout=30, **kw)
    for bad in ("Sanitizer", "runtime error:"):
        assert bad not in r.stderr, r.stderr
    return r


def test_version_is_v_and_V():
    """-v and --version print the version (nginx, php-fpm); -V adds how udsd was built."""
    assert VERSION.startswith("udsd ")
    for flag in ("-v", "--version"):
        r = run(flag)
        assert (r.returncode, r.stdout, r.stderr) == (0, VERSION + "\n", "")
    r = run("-V")
    assert r.returncode == 0 and r.stdout.startswith(VERSION + "\n")
    assert "configuration file: " in r.stdout and "service API: 1" in r.stdout


def test_verbose_is_a_long_option(udsd_factory):
    d = udsd_factory(ECHO_CONF)
    r = run("--verbose", "-t", "-c", d.conf_path)
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_usage_errors_go_to_stderr_with_the_reason():
    for args, reason in ((["-x"], "invalid option -- 'x'"),
                         (["--bogus"], "unrecognized option '--bogus'"),
                         (["-c"], "option requires an argument -- 'c'"),
                         (["-t", "extra"], "unexpected argument 'extra'")):
        r = run(*args)
        assert r.returncode == 2, (args, r)
        assert r.stdout == "", (args, r.stdout)
        assert reason in r.stderr and "udsd --help" in r.stderr, (args, r.stderr)
    r = run("--help")
    assert r.returncode == 0 and "--dump-config" in r.stdout and r.stderr == ""


def test_quiet_test_prints_only_errors(udsd_factory):
    d = udsd_factory(ECHO_CONF)
    r = run("-t", "-q", "-c", d.conf_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    d.write_config("[daemon]\nthreads = many\n[listener main]\npath = {sock}\n")
    r = run("-t", "-q", "-c", d.conf_path)
    assert r.returncode == 1 and r.stdout == ""
    assert "%s:2: threads: 'many' is not 1..64" % d.conf_path in r.stderr


def test_dump_config_parses_back_to_itself(udsd_factory, tmp_path):
    """udsd -T prints every key's effective value; that output is a config giving the same."""
    d = udsd_factory(ECHO_CONF + "idle_timeout = 90s\nmax_header_size = 16k\nallow_uids = root\n")
    first = run("-T", "-c", d.conf_path)
    assert first.returncode == 0, first.stderr
    assert "\nworkers = 2\n" in first.stdout and "\nidle_timeout = 90s\n" in first.stdout
    assert "\nmax_header_size = 16k\n" in first.stdout and "\nallow_uids = root\n" in first.stdout
    assert "\nbusy_poll = off\n" in first.stdout  # defaults too, from the schema
    assert not os.path.exists(d.sock)  # nothing bound
    again = tmp_path / "dumped.conf"
    again.write_text(first.stdout)
    second = run("-T", "-c", str(again))
    assert second.returncode == 0, second.stderr
    assert second.stdout.split("\n", 1)[1] == first.stdout.split("\n", 1)[1]  # but the file name


def test_shipped_config_checks_and_dumps(tmp_path):
    with open(SHIPPED) as f:
        text = f.read()
    # Workers run as the system user that meson install creates (systemd/udsd.sysusers).
    assert "\nuser = udsd\n" in text
    conf = SHIPPED
    try:
        pwd.getpwnam("udsd")
    except KeyError:
        # Not installed here: -t says so at the line, and the rest is checked with a user
        # this host has (the real-systemd test checks the file as shipped, user and all).
        r = run("-t", "-c", SHIPPED)
        line = text[:text.index("\nuser = udsd\n")].count("\n") + 2
        assert r.returncode == 1 and "udsd.conf:%d: user: unknown user 'udsd'" % line in r.stderr
        conf = str(tmp_path / "udsd.conf")
        with open(conf, "w") as f:
            f.write(text.replace("\nuser = udsd\n", "\nuser = nobody\n"))
    r = run("-t", "-c", conf)
    assert r.returncode == 0, r.stderr
    r = run("-T", "-c", conf)
    assert r.returncode == 0 and "\n[listener main]\n" in r.stdout, r.stderr


def test_check_rejects_what_start_would(udsd_factory):
    """-t says what start would say: a host name in tcp: is refused at check time (issue 16)."""
    d = udsd_factory("[listener main]\npath = tcp:localhost:18089\n")
    r = run("-t", "-c", d.conf_path)
    assert r.returncode == 1
    assert ("%s:2: path: 'tcp:localhost:18089': 'localhost' is not a numeric address"
            % d.conf_path) in r.stderr


def test_unclosed_section_is_blamed_on_its_line(udsd_factory):
    d = udsd_factory("[daemon\nworkers = 2\n[listener main]\npath = {sock}\n")
    r = run("-t", "-c", d.conf_path)
    assert r.returncode == 1
    assert "%s:1: section header '[daemon' has no closing ']'" % d.conf_path in r.stderr
