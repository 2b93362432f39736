"""Write the README's screenshots of the TUI (SVG, 160x48) to docs/screenshots/.

    PYTHONPATH=. .venv/bin/python docs/screenshots.py [NAME ...]

Each screenshot is one of the snapshot tests of ``tests/tui/test_snapshots.py``, run on the same
scripted scene (``tests/tui/scene.py``: four agents of four kinds on a live hub) with the same
steps, but with a ``snap_compare`` that saves the SVG instead of comparing it. Clock and ids are
pinned as in those tests, so a run on unchanged code gives the same files. Needs the dev install
(pytest and the test package are imported).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
SIZE = (160, 48)
TITLE = "onsembl-tui"

#: File name -> the snapshot test whose steps open that screen.
SHOTS = {
    "control-center": "test_control_center",
    "grid": "test_control_center_grid",
    "queue": "test_queue",
    "trace": "test_trace",
}


@contextmanager
def pinned() -> Iterator[None]:
    """Clock, dates and ids as the snapshot tests pin them (their autouse fixtures)."""
    import pytest

    from tests.tui.test_snapshots import pin_formats
    from tui import format as fmt

    patch = pytest.MonkeyPatch()
    try:
        pin_formats(patch)
        patch.setattr(fmt, "full_id", lambda value: "c0ffee00-0000-0000-0000-000000000000")
        yield
    finally:
        patch.undo()
        time.tzset()


def saver(path: Path) -> Callable[..., bool]:
    """A stand-in for pytest-textual-snapshot's ``snap_compare`` that writes the SVG to ``path``."""

    def snap_compare(
        app: Any, terminal_size: tuple[int, int], run_before: Callable[[Any], Awaitable[None]]
    ) -> bool:
        async def auto_pilot(pilot: Any) -> None:
            await run_before(pilot)
            await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()
            pilot.app.exit(pilot.app.export_screenshot(title=TITLE, simplify=True))

        svg = app.run(headless=True, auto_pilot=auto_pilot, size=terminal_size)
        if not svg:
            raise RuntimeError(f"no screenshot for {path.name}")
        path.write_text(svg)
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
        return True

    return snap_compare


def main(names: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.harness import HubProcess
    from tests.tui import test_snapshots
    from tests.tui.scene import Scene

    unknown = [n for n in names if n not in SHOTS]
    if unknown:
        print(f"unknown screenshot {unknown}; one of {sorted(SHOTS)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    with tempfile.TemporaryDirectory(prefix="onsembl-shots-") as tmp:
        hub = HubProcess(Path(tmp) / "hub").start()
        scene = Scene(hub).start()
        try:
            with pinned():
                for name in names or list(SHOTS):
                    test = getattr(test_snapshots, SHOTS[name])
                    test(snap_compare=saver(OUT / f"{name}.svg"), hub=hub, scene=scene, size=SIZE)
        finally:
            scene.close()
            hub.stop()
            hub.shutdown_redis()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
