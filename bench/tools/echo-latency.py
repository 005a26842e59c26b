#!/usr/bin/env python3
"""Keystroke echo latency through a real local terminal, for hand measurements.

Usage: echo-latency.py N COMMAND...

Runs COMMAND on a new pseudo-terminal (as a user's terminal would), waits for it to
print "ready", then writes N one-byte keystrokes, one every 2 ms, and times each until
its echo comes back; prints p50, p90 and p99 in microseconds. COMMAND must echo every
byte once, e.g.

    echo-latency.py 500 qexec run -it -- sh -c 'stty raw -echo; echo ready; exec cat'
    echo-latency.py 500 ssh -tt host 'stty raw -echo; echo ready; exec cat'

The harness's section 7 measures through the client library instead; this is the
path a person at a terminal takes (bench/README.md, "One thread per connection").
"""
import os
import pty
import select
import sys
import time
import tty

WARM_UP = 20


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[1])
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[2], sys.argv[2:])
    tty.setraw(fd)
    seen = b""
    while b"ready" not in seen:
        if not select.select([fd], [], [], 20)[0]:
            sys.exit(f"COMMAND did not print ready: {seen!r}")
        seen += os.read(fd, 4096)
    time.sleep(0.2)
    while select.select([fd], [], [], 0.1)[0]:
        os.read(fd, 4096)
    lat = []
    for i in range(n + WARM_UP):
        key = bytes([97 + i % 26])
        t = time.perf_counter_ns()
        os.write(fd, key)
        if not select.select([fd], [], [], 20)[0]:
            sys.exit(f"echo {i} did not come back within 20 s")
        got = os.read(fd, 1)
        dt = (time.perf_counter_ns() - t) / 1000
        if got != key:
            sys.exit(f"echo {i}: expected {key!r}, got {got!r}")
        if i >= WARM_UP:
            lat.append(dt)
        time.sleep(0.002)
    os.kill(pid, 9)
    lat.sort()

    def p(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    print(f"n={len(lat)} p50={p(.5):.0f} p90={p(.9):.0f} p99={p(.99):.0f} us")


if __name__ == "__main__":
    main()
