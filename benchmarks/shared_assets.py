"""What the benchmark scripts share: where the shared assets are, and a timestamped progress log on stderr.

The assets (the paper's data splits and the bart-large tokenizer) are read from `$LIGHTNER_SHARED_DIR`, else from
`../shared` next to the repository; nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_FILE = ("data", "lightner", "conll2003", "test.txt")
TRAIN_FILE = ("data", "lightner", "conll2003", "indomain-train.txt")
TOKENIZER_DIR = ("assets", "bart-large-tokenizer")
ENTITY_TYPES = ["LOC", "PER", "ORG", "MISC"]


def shared_dir(*needed: tuple[str, ...]) -> Path:
    """The shared assets folder; exits with a message naming the first of `needed` or the tokenizer that is missing."""
    path = Path(os.environ.get("LIGHTNER_SHARED_DIR", REPO_ROOT.parent / "shared"))
    for parts in (*needed, TOKENIZER_DIR):
        if not path.joinpath(*parts).exists():
            sys.exit(
                f"error: {path.joinpath(*parts)} not found. The benchmarks read the shared data and the bart-large "
                f"tokenizer; set LIGHTNER_SHARED_DIR to the folder that holds them (looked in {path})."
            )
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
