"""Where activities leave traces the tests read: files under $SAMPLE_STATE_DIR (one line per run)."""

import os
import tempfile
from pathlib import Path


def state_dir() -> Path:
    path = Path(os.environ.get("SAMPLE_STATE_DIR") or Path(tempfile.gettempdir()) / "sample-durable-app")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(kind: str, key: str) -> int:
    """Append one line for (kind, key); returns how many runs there have been, this one included."""
    path = state_dir() / f"{kind}.log"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return count(kind, key)


def count(kind: str, key: str) -> int:
    path = state_dir() / f"{kind}.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line == key)


def flag_exists(name: str) -> bool:
    return (state_dir() / name).exists()
