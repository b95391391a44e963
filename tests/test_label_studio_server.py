"""The annotation loop against a real Label Studio: a project with an NER labelling config, tasks imported, our
backend (`lightner label-studio`'s server, in a thread) connected, its pre-annotations checked offset by offset, an
annotation submitted and the project's export read back by `lightner train`'s reader.

Label Studio pins many packages that conflict with ours, so it lives in its own virtual environment: set
`LIGHTNER_LABEL_STUDIO` to its `label-studio` executable (`.ci/run` builds one). Without it the test skips, except
under `LIGHTNER_REQUIRE_SHARED` (CI), where it fails. The server runs on 127.0.0.1 with a temporary SQLite data folder,
a user and API token made from the environment, and is stopped when the test ends.

Most of a first start is Label Studio migrating a new SQLite database (minutes). The migrated, still empty database is
therefore made once per Label Studio installation, beside its executable (`migrated_database`; `.ci/run` makes it
when it builds the environment), and each run starts from a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import REQUIRE_SHARED, serving
from lightner.formats import load_sentences
from lightner.formats.label_studio import labelling_config
from lightner.label_studio_backend import make_backend
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline

EXECUTABLE = os.environ.get("LIGHTNER_LABEL_STUDIO", "")
TOKEN = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["cheap sushi near downtown boston", "any good thai food open late", "a pizza place in cambridge"]
START_SECONDS = 600  # minutes on a busy machine when it has to migrate a new database
DATABASE_NAME = "label_studio.sqlite3"  # Label Studio's SQLite file in LABEL_STUDIO_BASE_DATA_DIR


def label_studio_environment(data: Path) -> dict[str, str]:
    """Label Studio's settings for a run on `data`: SQLite there, a user with a token, our backend on 127.0.0.1."""
    return {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "lightner@example.com",
        "LABEL_STUDIO_PASSWORD": "lightner-test-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "DJANGO_DB": "sqlite",
        # Our backend (and the webhook Label Studio makes for it) is on 127.0.0.1, refused by default
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }


def migrated_database(executable: Path) -> Path:
    """An empty Label Studio database with every migration applied, made once per installation: in the folder
    `lightner-migrated-db` of the environment that holds `executable` (`label-studio version` migrates, then exits)."""
    folder = executable.parent.parent / "lightner-migrated-db"
    database = folder / DATABASE_NAME
    if not database.exists():
        making = folder.with_name(f"{folder.name}.{os.getpid()}")
        making.mkdir(parents=True, exist_ok=True)
        command = [str(executable), "version"]
        done = subprocess.run(
            command, env=label_studio_environment(making), cwd=making, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} (migrating a database in {making}) failed: {done.stderr[-3000:]}")
        if folder.exists():  # another run made it meanwhile
            shutil.rmtree(making)
        else:
            making.replace(folder)
    return database


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not EXECUTABLE or not Path(EXECUTABLE).is_file():
        reason = f"LIGHTNER_LABEL_STUDIO={EXECUTABLE!r} is not a label-studio executable (.ci/run builds one)"
        if REQUIRE_SHARED:
            pytest.fail(f"LIGHTNER_REQUIRE_SHARED is set and {reason}")
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("label-studio")
    shutil.copy(migrated_database(Path(EXECUTABLE)), data / DATABASE_NAME)
    port = free_port()
    env = label_studio_environment(data)
    # --internal-host is the address it listens on (--host only names it in URLs; it would listen on 0.0.0.0).
    command = [EXECUTABLE, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    log = (data / "server.log").open("w")
    server = subprocess.Popen(command, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"label-studio exited with {server.returncode}: {(data / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"label-studio did not answer in {START_SECONDS} s: {(data / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def api(url: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            content = answer.read()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read()[:2000]!r}") from None
    return json.loads(content) if content else None


@pytest.fixture(scope="module")
def backend(tiny_backbone):
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, ["Cuisine", "Location"], prompt_hidden_size=16).eval()
    with serving(make_backend(LightNerPipeline(model=model), port=0)) as server:
        yield server


def test_label_studio_shows_the_backends_pre_annotations_and_exports_what_lightner_trains_on(
    label_studio, backend, tmp_path
):
    project = api(
        label_studio,
        "POST",
        "/api/projects",
        {"title": "LightNER test", "label_config": labelling_config(["Cuisine", "Location"])},
    )
    api(label_studio, "POST", f"/api/projects/{project['id']}/import", [{"text": text} for text in TEXTS])
    api(label_studio, "POST", "/api/ml", {"url": backend.url, "project": project["id"], "title": "LightNER"})
    tasks = api(label_studio, "GET", f"/api/tasks?project={project['id']}&page_size=100")
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert sorted(task["data"]["text"] for task in tasks) == sorted(TEXTS)
    api(
        label_studio,
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
        {"selectedItems": {"all": True, "excluded": []}, "project": project["id"]},
    )
    for task in tasks:
        text = task["data"]["text"]
        predictions = api(label_studio, "GET", f"/api/predictions?task={task['id']}")
        assert len(predictions) == 1, f"no prediction stored for task {task['id']}"
        expected = backend.pipeline(text)
        regions = predictions[0]["result"]
        assert [(r["value"]["start"], r["value"]["end"]) for r in regions] == [
            (e["start"], e["end"]) for e in expected
        ]
        for region, entity in zip(regions, expected):
            assert region["value"]["text"] == text[entity["start"] : entity["end"]]
            assert region["value"]["labels"] == [entity["entity_group"]]
    first = next(task for task in tasks if task["data"]["text"] == TEXTS[0])
    annotation = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "labels",
            "value": {"start": 6, "end": 11, "text": "sushi", "labels": ["Cuisine"]},
        }
    ]
    api(label_studio, "POST", f"/api/tasks/{first['id']}/annotations", {"result": annotation})
    exported = api(label_studio, "GET", f"/api/projects/{project['id']}/export?exportType=JSON")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported), encoding="utf-8")
    (sentence,) = load_sentences(path)
    assert sentence.words == TEXTS[0].split() and [(e.start, e.end, e.type) for e in sentence.entities] == [
        (1, 2, "Cuisine")
    ]
