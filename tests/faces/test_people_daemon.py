"""People through a running daemon (`mediasearch serve`): faces found in the background after the CLIP
pass, `mediasearch people ...` answered by the daemon, a person's face served as a JPEG."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Daemon, _cli, wait_for

pytestmark = pytest.mark.timeout(600)


def test_people_commands_go_through_the_daemon(tmp_path: Path, faces_dir: Path, truth: dict[str, Any]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(n for n, item in truth.items() if item["people"] in (["person_01"], ["person_04"]))[:6]
    for name in names:
        shutil.copy(faces_dir / name, folder / name)
    home = tmp_path / "home"
    daemon = Daemon(home, str(folder), "--rescan-every", "off").wait_ready(timeout=180)
    try:
        seen: list[int] = []

        def enriched() -> bool:  # the faces pass may run in the background: wait until nothing changes
            seen.append(sum(p["faces"] for p in daemon.call("GET", "/people")))
            time.sleep(0.5)
            return seen[-1] >= len(names) - 1 and seen[-2:] == [seen[-1]] * 2 and daemon.idle()

        wait_for(enriched, 300, "the faces of the photos are found")
        listed = _cli(home, "people", "--json")
        assert listed.returncode == 0, listed.stderr
        people = json.loads(listed.stdout)
        assert people == daemon.call("GET", "/people")
        assert sum(p["faces"] for p in people) >= len(names) - 1 and len(people) >= 2
        first, second = people[0], people[1]

        named = _cli(home, "people", "name", first["id"], "Alice", "--json")
        assert named.returncode == 0 and json.loads(named.stdout)["name"] == "Alice"
        assert daemon.call("GET", "/people")[0]["name"] == "Alice"

        info = daemon.client.info  # type: ignore[union-attr]
        url = f"{info.url}/people/{first['id']}/face?size=64&token={info.token}"
        with urllib.request.urlopen(url, timeout=60) as response:
            picture = response.read()
            assert response.headers["Content-Type"] == "image/jpeg" and picture[:2] == b"\xff\xd8"

        merged = _cli(home, "people", "merge", first["id"], second["id"], "--json")
        assert merged.returncode == 0, merged.stderr
        assert json.loads(merged.stdout)["faces"] == first["faces"] + second["faces"]
        read = urllib.request.Request(
            f"{info.url}/people/{first['id']}/hide",
            data=b'{"hidden": true}',
            method="POST",
            headers={"Content-Type": "application/json", "X-Mediasearch-Token": info.read_token},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:  # the read token lists, never changes
            urllib.request.urlopen(read, timeout=60)
        assert refused.value.code == 403
        unknown = _cli(home, "people", "hide", "99999")
        assert unknown.returncode == 1 and "there is no person 99999" in unknown.stderr
    finally:
        assert daemon.stop() == 0
