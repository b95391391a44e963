"""`lightner demo` over real HTTP on 127.0.0.1: the page, the form, the JSON API, and bad requests."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from html import escape
from urllib.parse import urlencode

import pytest
import torch

from conftest import serving
from lightner.demo import MAX_TEXT_CHARACTERS, DemoRequestHandler, make_server
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."


@pytest.fixture(scope="module")
def served(tiny_backbone):
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=48).eval()
    model.add_adapter("bio", ["GENE", "DRUG"], prompt_hidden_size=48)
    ner = LightNerPipeline(model=model)
    with serving(make_server(ner, port=0)) as server:
        yield server, ner


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


def raw_post(server, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
    """A POST with exactly these headers (no Content-Length unless given), as a client that lies about it sends."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("length", "status", "message"),
    [
        ("abc", 400, "Content-Length 'abc' is not a number of bytes"),
        ("-1", 400, "Content-Length '-1' is not a number of bytes"),
        ("1000000000000", 413, "the body has 1,000,000,000,000 bytes; this server reads at most 1,204,096"),
        (None, 411, "send the body with a Content-Length header"),
    ],
)
@pytest.mark.parametrize("path", ["/api/entities", "/"])
def test_a_bad_content_length_is_answered_before_any_body_is_read(served, path, length, status, message):
    """Each would hang a thread (-1: read to the end of the stream), drop the connection ("abc"), or allocate a
    terabyte; the client here sends no body at all and keeps the connection open, so a read would block."""
    server, _ = served
    headers = {"Content-Type": "application/json"} | ({} if length is None else {"Content-Length": length})
    answer_status, answer = raw_post(server, path, headers)
    assert answer_status == status
    assert (message in json.loads(answer)["error"]) if path == "/api/entities" else (escape(message) in answer)
    assert request(server.url)[0] == 200  # the server still answers


def test_deeply_nested_json_gets_a_400(served):
    server, _ = served
    nested = b"[" * 100_000 + b"]" * 100_000
    status, answer = request(server.url + "api/entities", nested)
    assert status == 400 and json.loads(answer)["error"] == "the JSON body is nested too deeply to read"


def test_a_body_shorter_than_announced_gets_a_400_when_it_ends_or_stalls(served, monkeypatch):
    """A client that announces 10 bytes and sends 4 is answered when it stops sending (it would hold the thread until
    it closed the connection) or when it has been silent for the handler's timeout."""
    server, _ = served
    monkeypatch.setattr(DemoRequestHandler, "timeout", 1)
    head = b"POST /api/entities HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n" + b'{"te'
    for stop_sending in (True, False):
        with socket.create_connection(server.server_address[:2], timeout=30) as client:
            client.sendall(head)
            if stop_sending:
                client.shutdown(socket.SHUT_WR)
            answer = client.makefile("rb").read().decode("utf-8")
        assert answer.startswith("HTTP/1.0 400") and "before the 10 bytes its Content-Length announced" in answer


def test_the_longest_text_fits_the_body_cap_however_it_is_encoded(served):
    """The worst encodings of a text of MAX_TEXT_CHARACTERS characters are read whole (then refused for the
    adapter, which names no loaded one, so that nothing is predicted)."""
    server, _ = served
    text = "\U0001f600" * MAX_TEXT_CHARACTERS  # 12 bytes a character both as JSON and as a form
    as_json = json.dumps({"text": text, "adapter": "x" * 1000}).encode()
    as_form = urlencode({"text": text, "adapter": "x" * 1000}).encode()
    assert len(as_json) > 1_200_000 and len(as_form) > 1_200_000
    status, answer = request(server.url + "api/entities", as_json)
    assert status == 400 and "no adapter named 'xxx" in json.loads(answer)["error"]
    status, page = request(server.url, as_form, "application/x-www-form-urlencoded")
    assert status == 400 and "no adapter named" in page


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
