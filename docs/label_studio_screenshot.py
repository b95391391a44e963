#!/usr/bin/env python
"""Make `docs/label_studio.png`: Label Studio's labelling page showing an adapter's pre-annotations.

Needs a running Label Studio (see the README's annotation-loop section) with a user and API token, and Playwright in
any virtual environment with Debian's Chromium (`apt-get install chromium`; `pip install playwright`, no browser
download: `executable_path` points at /usr/bin/chromium). This script runs in the project's environment: it serves
the adapter with `lightner label-studio`'s server in this process, creates a project through Label Studio's API,
imports the texts, connects the backend, retrieves the predictions, then runs `--playwright-python` on a small
script that logs in and captures the first task's labelling page.

    python docs/label_studio_screenshot.py --model runs/quickstart --url http://127.0.0.1:8080 --token TOKEN \\
        --email me@example.com --password ... --playwright-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TEXTS = [
    "any cheap sushi places near downtown open after midnight",
    "is there a five star italian restaurant in cambridge with outdoor seating",
    "where can i get a burger and fries for under 10 dollars",
]

CAPTURE = """
import sys
from playwright.sync_api import sync_playwright

url, email, password, page_url, output = sys.argv[1:6]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(url + "/user/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    page.goto(page_url)
    page.wait_for_timeout(8000)
    page.screenshot(path=output)
    browser.close()
"""


def api(url: str, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url + path, data, headers, method=method), timeout=300) as r:
        content = r.read()
    return json.loads(content) if content else None


def main() -> None:
    from lightner.formats.label_studio import labelling_config
    from lightner.label_studio_backend import make_backend
    from lightner.modeling_lightner import LightNerModel
    from lightner.pipeline_lightner import LightNerPipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--url", required=True, help="Label Studio's address")
    parser.add_argument("--token", required=True, help="an API token of the user below")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--playwright-python", required=True, help="a Python that can import playwright")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "label_studio.png")
    args = parser.parse_args()

    model = LightNerModel.from_pretrained(args.model)
    backend = make_backend(LightNerPipeline(model=model), port=0)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        config = labelling_config(model.config.entity_types)
        project = api(args.url, args.token, "POST", "/api/projects", {"title": "LightNER", "label_config": config})
        api(args.url, args.token, "POST", f"/api/projects/{project['id']}/import", [{"text": t} for t in TEXTS])
        api(
            args.url,
            args.token,
            "POST",
            "/api/ml",
            {"url": backend.url, "project": project["id"], "title": "LightNER"},
        )
        api(
            args.url,
            args.token,
            "POST",
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
            {"selectedItems": {"all": True, "excluded": []}, "project": project["id"]},
        )
        tasks = api(args.url, args.token, "GET", f"/api/tasks?project={project['id']}")
        tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
        page = f"{args.url}/projects/{project['id']}/data?tab=0&task={tasks[0]['id']}"
        subprocess.run(
            [args.playwright_python, "-c", CAPTURE, args.url, args.email, args.password, page, str(args.output)],
            check=True,
        )
        print(f"written to {args.output}")
    finally:
        backend.shutdown()
        backend.server_close()


if __name__ == "__main__":
    main()
