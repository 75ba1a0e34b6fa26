"""How the daemon runs (`serve` / `watch`'s options) and the rules for where it may listen."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mediasearch.errors import ConfigError
from mediasearch.library.requests import IndexOptions


@dataclass(frozen=True)
class DaemonOptions:
    """How `serve` / `watch` run (the command line's options)."""

    roots: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None  # the admin token (from a file or the environment, never argv); None: random
    read_token: str | None = None  # the read token (search and view); None: random
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback's and this machine's
    rescan_every: float = 86400.0  # seconds; 0: only at start
    debounce: float = 2.0
    poll: bool = False
    poll_interval: float = 10.0
    index: IndexOptions = field(default_factory=IndexOptions)
    echo: bool = False  # also log every file on stderr
    optimize_min_points: int | None = None  # None: the store's exact-search threshold


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_interval(text: str) -> float:
    """'90', '30s', '15m', '6h', '1d' → seconds; '0', 'off' or 'never' → 0 (only at start)."""
    if text.strip().lower() in ("off", "never"):
        return 0.0
    m = _INTERVAL.match(text.lower())
    if not m:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90, 30s, 15m, 6h, 1d, or off)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Anything but loopback is reachable by others: it needs a real token."""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"--host {host} is not loopback: it needs an admin token (--token-file FILE or MEDIASEARCH_TOKEN)"
        )
    if len(token) < 16:
        raise ConfigError("the token must be at least 16 characters long")
