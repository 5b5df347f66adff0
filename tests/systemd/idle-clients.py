#!/usr/bin/env python3
"""idle-clients.py SOCKET N: N HTTP clients at random moments; every one must get 200 ok."""
import random
import socket
import sys
import time

random.seed(1)
for i in range(int(sys.argv[2])):
    time.sleep(random.random() * 0.25)  # pacing: about half the gaps outlast exit_idle_time
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sys.argv[1])
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    s.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n"), (i, data)
