# SPDX-License-Identifier: MIT
"""HTTP load through a front (HAProxy, nginx) that counts every error by class.

Two kinds of client threads run side by side: keep-alive clients, which send
request after request on one connection (and open a new one only after an
error or when the server says close), and one-shot clients, which open a new
connection for every request ("Connection: close").  A request counts as good
only with status 200 and exactly the expected body.

Usable on its own:  python3 load.py HOST PORT [SECONDS]
"""
import collections
import http.client
import socket
import sys
import threading
import time

# The classes a client can tell apart.  "5xx NNN" and "status NNN" carry the code.
REFUSED, RESET, TIMEOUT, WRONG_BODY = "connect refused", "reset", "timeout", "wrong body"


def classify(exc):
    """Name the class of a failed request from the exception http.client raised."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    # RemoteDisconnected: the peer closed without answering; IncompleteRead: mid-body.
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                        http.client.IncompleteRead, ConnectionAbortedError)):
        return RESET
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TIMEOUT
    return "other " + type(exc).__name__


class Load:
    def __init__(self, host, port, path="/hello", expected=None, keepalive=4, oneshot=4, timeout=10):
        self.host, self.port, self.path = host, port, path
        self.expected = expected
        self.timeout = timeout
        self.kinds = {"keep-alive": keepalive, "one-shot": oneshot}
        self.lock = threading.Condition()
        self.ok = collections.Counter()       # kind -> good responses
        self.errors = collections.Counter()   # (kind, class) -> count
        self.stopping = threading.Event()
        self.threads = []

    @property
    def done(self):
        with self.lock:
            return sum(self.ok.values()) + sum(self.errors.values())

    def _count(self, kind, error=None):
        with self.lock:
            if error:
                self.errors[kind, error] += 1
            else:
                self.ok[kind] += 1
            self.lock.notify_all()

    def _check(self, resp, body):
        if resp.status >= 500:
            return "5xx %d" % resp.status
        if resp.status != 200:
            return "status %d" % resp.status
        if self.expected is not None and body != self.expected:
            return WRONG_BODY
        return None

    def _client(self, kind):
        conn = None
        headers = {} if kind == "keep-alive" else {"Connection": "close"}
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request("GET", self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                error = self._check(resp, body)
                if resp.will_close or error:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                error = classify(e)
                conn.close()
                conn = None
            self._count(kind, error)
        if conn:
            conn.close()

    def start(self):
        for kind, n in self.kinds.items():
            for _ in range(n):
                t = threading.Thread(target=self._client, args=(kind,), daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def wait_done(self, n, timeout=120):
        """Block until at least n requests have finished (good or not)."""
        end = time.monotonic() + timeout
        with self.lock:
            while sum(self.ok.values()) + sum(self.errors.values()) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("load: %d requests not done within %ds" % (n, timeout))
                self.lock.wait(left)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        return self

    def summary(self):
        """{kind: {"requests": n, "ok": n, "errors": {class: n}}}"""
        out = {}
        with self.lock:
            for kind in self.kinds:
                errs = {c: n for (k, c), n in sorted(self.errors.items()) if k == kind}
                out[kind] = {"requests": self.ok[kind] + sum(errs.values()), "ok": self.ok[kind],
                             "errors": errs}
        return out


if __name__ == "__main__":
    load = Load(sys.argv[1], int(sys.argv[2])).start()
    time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 5)
    print(load.stop().summary())
