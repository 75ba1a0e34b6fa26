"""The system's mount table: which folders are mount points (stdlib only).

A disk mounted inside an indexed folder (``~/ext`` under ``~``) that is unmounted leaves an empty
folder, or none: its files must then be kept, not removed. The index remembers the mount points it
has seen under its roots (``index.mounts``); this module says which they are now.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["mount_points", "mount_points_under"]

_MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace (Linux: /proc/self/mountinfo; elsewhere, the
    folders `os.path.ismount` says so of are found by the walk instead, and this is empty)."""
    try:
        with open(_MOUNTINFO, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4].decode("utf-8", "surrogateescape"))
            points.append(os.fsdecode(raw.encode("utf-8", "surrogateescape")))
    return points


def mount_points_under(roots: Sequence[str]) -> list[str]:
    """The mount points at or inside ``roots`` (folders), sorted."""
    found = set()
    for point in mount_points():
        point = os.path.normpath(point)
        if any(point == r or point.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            found.add(point)
    return sorted(found)
