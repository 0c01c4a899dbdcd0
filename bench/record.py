"""Where every bench script's result goes: one JSON file, announced on stdout."""

from __future__ import annotations

import json
from pathlib import Path


def write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
