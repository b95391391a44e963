"""`lightner demo` over real HTTP on 127.0.0.1: the page, the form, the JSON API, and bad requests."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
import torch

from lightner.demo import MAX_TEXT_CHARACTERS, make_server
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."


@pytest.fixture(scope="module")
def served(tiny_backbone):
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=48).eval()
    model.add_adapter("bio", ["GENE", "DRUG"], prompt_hidden_size=48)
    ner = LightNerPipeline(model=model)
    server = make_server(ner, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, ner
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def request(url: str, data: bytes | None = None, content_type: str = "application/json") -> tuple[int, str]:
    headers = {"Content-Type": content_type} if data is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def test_server_listens_on_loopback_only_by_default(served):
    server, _ = served
    assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")


def test_page_has_a_text_box_and_the_adapter_choice(served):
    server, _ = served
    status, page = request(server.url)
    assert status == 200 and page.startswith("<!DOCTYPE html>")
    assert '<textarea name="text"' in page
    assert '<option value="default"' in page and '<option value="bio"' in page


def test_form_shows_the_pipelines_entities_in_the_text_and_a_table(served):
    server, ner = served
    expected = ner(TEXT)
    assert expected, "the tiny model predicted nothing on the demo text; the checks below would prove nothing"
    status, page = request(server.url, urlencode({"text": TEXT}).encode(), "application/x-www-form-urlencoded")
    assert status == 200
    assert page.count("<tr><td>") == len(expected)
    for entity in expected:
        assert f"<td>{entity['word']}</td><td>{entity['start']}</td><td>{entity['end']}</td>" in page
    assert page.count('<mark class="entity"') >= len(expected)


def test_json_api_answers_the_pipelines_entities_for_the_chosen_adapter(served):
    server, ner = served
    for adapter in (None, "bio"):
        status, body = request(server.url + "api/entities", json.dumps({"text": TEXT, "adapter": adapter}).encode())
        assert status == 200
        entities = json.loads(body)["entities"]
        expected = ner(TEXT, adapter=adapter)
        assert expected and [(e["start"], e["end"], e["entity_group"]) for e in entities] == [
            (e["start"], e["end"], e["entity_group"]) for e in expected
        ]
    assert {e["entity_group"] for e in entities} <= {"GENE", "DRUG"}


@pytest.mark.parametrize(
    "body,message",
    [
        (b"not json", "Expecting value"),
        (b"[1, 2]", "send a JSON object"),
        (json.dumps({"text": 5}).encode(), '"text" must be a string'),
        (json.dumps({"text": TEXT, "adapter": "movies"}).encode(), "no adapter named 'movies'"),
        (json.dumps({"text": "x" * (MAX_TEXT_CHARACTERS + 1)}).encode(), "at most 100,000"),
        (b"\xff\xfe", "can't decode"),
    ],
)
def test_bad_api_requests_get_a_400_with_the_reason(served, body, message):
    server, _ = served
    status, answer = request(server.url + "api/entities", body)
    assert status == 400
    assert message in json.loads(answer)["error"]


def test_bad_form_and_unknown_paths(served):
    server, _ = served
    form = urlencode({"text": TEXT, "adapter": "movies"}).encode()
    status, page = request(server.url, form, "application/x-www-form-urlencoded")
    assert status == 400 and "no adapter named" in page and '<textarea name="text"' in page
    assert request(server.url + "nothing")[0] == 404


def test_lightner_demo_command_serves_the_model_and_its_extra_adapters(tiny_backbone, tmp_path):
    """`lightner demo` in its own process: it prints its URL, answers over HTTP with both adapters, and stops."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    torch.manual_seed(0)
    LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=16).save_pretrained(
        tmp_path / "news"
    )
    LightNerModel.from_backbone(tiny_backbone, ["GENE"], prompt_hidden_size=16).save_pretrained(tmp_path / "bio")
    argv = ["demo", "--model", str(tmp_path / "news"), "--adapter", f"bio={tmp_path / 'bio'}", "--port", "0"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "lightner", *argv],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("LightNER demo on http://127.0.0.1:") and "default, bio" in line, line
        url = line.split()[3]
        reference = LightNerPipeline(model=LightNerModel.from_pretrained(tmp_path / "news"))
        status, body = request(url + "api/entities", json.dumps({"text": TEXT}).encode())
        assert status == 200 and json.loads(body)["entities"] == json.loads(json.dumps(reference(TEXT)))
        status, body = request(url + "api/entities", json.dumps({"text": TEXT, "adapter": "bio"}).encode())
        assert status == 200 and {e["entity_group"] for e in json.loads(body)["entities"]} <= {"GENE"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_demo_adapter_option_needs_a_name_and_a_folder(capsys):
    from lightner.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--model", "x", "--adapter", "just-a-folder"])
    assert "expected NAME=DIR" in capsys.readouterr().err
