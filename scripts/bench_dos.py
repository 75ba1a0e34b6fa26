"""A daemon under a crowd of half-open sockets and three 400 MB unauthenticated bodies: does /health still
answer quickly, and how much does the daemon's memory grow?

Starts `mediasearch serve` (demo model) on a small rendered library with ``ulimit -n 1024`` (soft and
hard, as a small server has), waits until it is idle, then at once: opens 1,100 TCP connections that
send nothing (half of them half a header), and sends three ``text/plain`` POSTs of 400 MB without a
token; meanwhile it asks /health every 0.2 s. Loopback only; bounded in count and in time (about a
minute). Prints /health's latency (median and worst) and the daemon's resident memory before and at
its peak (goals from issue #27: under 1 s, under 100 MB of growth).

    python scripts/bench_dos.py [--sockets 1100] [--bodies 3] [--body-mb 400]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def health_s(url: str) -> float:
    """Seconds /health takes (10 s when it does not answer in time)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            response.read()
    except OSError:
        return 10.0
    return time.perf_counter() - started


def start_daemon(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    from mediasearch.lab.shapes import make_library

    lib, home = base / "lib", base / "home"
    make_library(lib, 24, seed=1)

    def small_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASEARCH_")}
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", "demo", "--device", "cpu",
               "serve", str(lib), "--rescan-every", "off"]
    log = (base / "serve.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, preexec_fn=small_limits)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited: {(base / 'serve.log').read_text()[-2000:]}")
        try:
            info = json.loads((home / "daemon.json").read_text())
            status = _status(info)
            if status["daemon"]["last_scan"] and not status["daemon"]["busy"]:
                return proc, str(info["url"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise SystemExit("the daemon did not get ready in 3 minutes")


def _status(info: dict[str, str]) -> dict[str, dict[str, object]]:
    request = urllib.request.Request(f"{info['url']}/status", headers={"X-Mediasearch-Token": info["token"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def half_open(address: tuple[str, int], count: int) -> list[socket.socket]:
    out = []
    for n in range(count):
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError:
            continue
        if n % 2:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.")
        out.append(sock)
    return out


def big_body(address: tuple[str, int], total: int, sent: list[int]) -> None:
    """A POST of ``total`` bytes without a token; stops when the daemon closes the connection."""
    head = (f"POST /query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {total}\r\n\r\n").encode()
    chunk = b"x" * (1 << 20)
    done = 0
    try:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(head)
            while done < total:
                sock.sendall(chunk)
                done += len(chunk)
    except OSError:
        pass
    sent.append(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1100)
    parser.add_argument("--bodies", type=int, default=3)
    parser.add_argument("--body-mb", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the attack lasts")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.sockets + 256)), hard))

    with tempfile.TemporaryDirectory(prefix="bench-dos-") as tmp:
        proc, url = start_daemon(Path(tmp))
        host, port = url.removeprefix("http://").rsplit(":", 1)
        address = (host, int(port))
        assert host in ("127.0.0.1", "localhost"), "loopback only"
        try:
            quiet = [health_s(url) for _ in range(10)]
            before = rss_mb(proc.pid)
            sent: list[int] = []
            bodies = [threading.Thread(target=big_body, args=(address, args.body_mb << 20, sent))
                      for _ in range(args.bodies)]
            for thread in bodies:
                thread.start()
            crowd = half_open(address, args.sockets)
            latencies, peak = [], before
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                latencies.append(health_s(url))
                peak = max(peak, rss_mb(proc.pid))
                time.sleep(0.2)
            for thread in bodies:
                thread.join(timeout=30)
            closed = sum(1 for s in crowd if _closed(s))
            for s in crowd:
                s.close()
            log = Path(tmp) / "home" / "logs" / "daemon.log"
            log_kb = sum(p.stat().st_size for p in log.parent.glob("daemon.log*")) / 1024
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"load: {Path('/proc/loadavg').read_text().strip()}")
    print(f"{'measure':44} {'value':>12}")
    print(f"{'/health quiet, median (s)':44} {statistics.median(quiet):12.3f}")
    print(f"{'/health under attack, median (s)':44} {statistics.median(latencies):12.3f}")
    print(f"{'/health under attack, worst (s)':44} {max(latencies):12.3f}")
    print(f"{'/health answers under attack':44} {sum(t < 10 for t in latencies):>8} / {len(latencies)}")
    print(f"{'half-open sockets opened':44} {len(crowd):12d}")
    print(f"{'... closed by the daemon by the end':44} {closed:12d}")
    print(f"{'bytes of each big body sent before refusal (MB)':44} {' '.join(f'{b >> 20}' for b in sent):>12}")
    print(f"{'daemon RSS before (MB)':44} {before:12.1f}")
    print(f"{'daemon RSS peak during (MB)':44} {peak:12.1f}")
    print(f"{'growth (MB)':44} {peak - before:12.1f}")
    print(f"{'daemon log size at the end (KB)':44} {log_kb:12.1f}")


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


if __name__ == "__main__":
    main()
