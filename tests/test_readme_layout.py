"""README's layout map matches the tree: every path it names exists, and every module of
streams/, sinks/ and schemas/ is named in its folder's entry."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_entries() -> dict[str, str]:
    """The map's entries: path -> its text (the lines up to the next path)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    entries: dict[str, str] = {}
    path = ""
    for line in block.splitlines():
        if line and not line.startswith(" "):
            head, _, text = line.partition("  ")
            for p in head.split(", "):
                entries[p.strip()] = text
            path = head.split(", ")[-1].strip()
        elif path:
            entries[path] += " " + line.strip()
    return entries


def modules(folder: Path) -> list[str]:
    return sorted(
        p.stem if p.suffix == ".py" else p.name
        for p in folder.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    )


def test_every_path_in_the_map_exists() -> None:
    entries = layout_entries()
    assert len(entries) >= 12
    for path in entries:
        assert (ROOT / path).exists(), f"README layout names {path}, which is not in the tree"


def test_every_module_is_in_the_map() -> None:
    entries = layout_entries()
    top = {Path(p).stem if p.endswith(".py") else Path(p).name for p in entries}
    for name in modules(ROOT / "streams"):
        assert name in top, f"streams/{name} is missing from README's layout map"
    folders = [
        f"streams/{n}/" for n in modules(ROOT / "streams") if (ROOT / "streams" / n).is_dir()
    ]
    for folder in [*folders, "sinks/", "schemas/"]:
        text = entries[folder]
        for name in modules(ROOT / folder):
            assert re.search(rf"\b{name}\b", text), f"{folder}{name} is not named in the map"
