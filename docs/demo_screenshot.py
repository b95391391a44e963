#!/usr/bin/env python
"""Make `docs/demo.png`: the `lightner demo` page showing an adapter's entities for one text.

Starts the demo server in this process (127.0.0.1, a free port), submits the text as the page's form does, and renders
the answered page in headless Chromium (Debian's `chromium`; `apt-get install chromium`).

    python docs/demo_screenshot.py --model runs/quickstart --text "cheap sushi near downtown open after midnight"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def answered_page(model: str, text: str) -> str:
    from lightner.demo import make_server
    from lightner.modeling_lightner import LightNerModel
    from lightner.pipeline_lightner import LightNerPipeline

    server = make_server(LightNerPipeline(model=LightNerModel.from_pretrained(model)), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        form = urllib.parse.urlencode({"text": text, "adapter": "default"}).encode()
        with urllib.request.urlopen(server.url, data=form) as answer:
            return answer.read().decode("utf-8")
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="adapter folder or Hub id")
    parser.add_argument("--text", required=True)
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "demo.png")
    parser.add_argument("--size", default="860,560", help="window width,height in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "demo.html"
        page.write_text(answered_page(args.model, args.text), encoding="utf-8")
        subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={folder}/profile",
                f"--window-size={args.size}",
                f"--screenshot={args.output.resolve()}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
