#!/usr/bin/env python3
"""client-loop.py STOPFILE [--long N] [--every SECONDS] [--count N] SOCKET...

HTTP clients in a loop, one short connection (GET /healthz, Connection: close) after
another over the sockets in turn, until STOPFILE exists (or N were made, with --count),
--every SECONDS apart if given; with --long, also N keep-alive
connections opened once that each send a request every 50 ms and must never be cut.
Prints one line of counts: ok, then every error by class (refused, enoent, reset, eof,
wrong, timeout, other), and for --long how many connections were kept.
"""
import errno
import os
import socket
import sys
import threading
import time

REQ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def classify(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    return {errno.ECONNREFUSED: "refused", errno.ENOENT: "enoent", errno.ECONNRESET: "reset",
            errno.EPIPE: "reset", errno.EAGAIN: "refused"}.get(e.errno, "other")


def read_reply(s, f):
    line = f.readline()
    if not line:
        return "eof"
    n = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            n = int(h.split(b":")[1])
    body = f.read(n)
    return None if line.startswith(b"HTTP/1.1 200") and body == b"ok\n" else "wrong"


def one(path, counts):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    try:
        s.connect(path)
        s.sendall(REQ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        bad = read_reply(s, s.makefile("rb"))
    except OSError as e:
        bad = classify(e)
    finally:
        s.close()
    counts[bad or "ok"] += 1


def main():
    args = sys.argv[1:]
    stop, args = args[0], args[1:]
    n_long, every, count = 0, 0.0, 0
    while args and args[0].startswith("--"):
        if args[0] == "--long":
            n_long, args = int(args[1]), args[2:]
        elif args[0] == "--every":
            every, args = float(args[1]), args[2:]
        elif args[0] == "--count":
            count, args = int(args[1]), args[2:]
    counts = dict.fromkeys(("ok", "refused", "enoent", "reset", "eof", "wrong", "timeout",
                            "other"), 0)
    longs = []
    for i in range(n_long):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(args[i % len(args)])
        longs.append([s, s.makefile("rb"), True])
    done = threading.Event()

    def long_loop():
        while not done.is_set():
            for c in longs:
                if not c[2]:
                    continue
                try:
                    c[0].sendall(REQ)
                    bad = read_reply(c[0], c[1])
                except OSError as e:
                    bad = classify(e)
                counts[bad or "ok"] += 1
                c[2] = bad is None
            done.wait(0.05)

    t = threading.Thread(target=long_loop)
    t.start()
    i = 0
    while not os.path.exists(stop) and (not count or i < count):
        one(args[i % len(args)], counts)
        i += 1
        if every:
            time.sleep(every)  # pacing the load, not synchronisation
    done.set()
    t.join()
    line = " ".join("%s %d" % kv for kv in counts.items())
    if n_long:
        line += " long_kept %d of %d" % (sum(1 for c in longs if c[2]), n_long)
    print(line, flush=True)


main()
