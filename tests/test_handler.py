"""The Inference Endpoints handler a saved adapter carries, run as an endpoint runs it: alone, from the folder."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import REPO_ROOT, run_without_project
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."

_ENDPOINT = """
import importlib.util, json

spec = importlib.util.spec_from_file_location("handler", sys.argv[1] + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as file:
    requests = json.load(file)
# A string stands for a raw body, sent as bytes as a body that failed to parse would arrive.
answers = [handler(request.encode() if isinstance(request, str) else request) for request in requests]
print(json.dumps(answers))
"""

BAD_REQUESTS = [
    ({"parameters": {}}, 'has no "inputs"'),
    ({"inputs": 5}, '"inputs" must be a text or a list of texts, not int'),
    ({"inputs": TEXT, "parameters": [1]}, '"parameters" must be an object'),
    ({"inputs": TEXT, "parameters": {"beams": 2}}, "unknown parameter 'beams'"),
    ({"inputs": TEXT, "parameters": {"threshold": "high"}}, "parameter 'threshold' must be int or float"),
    ({"inputs": TEXT, "parameters": {"num_beams": True}}, "parameter 'num_beams' must be int, not bool"),
    ({"inputs": TEXT, "parameters": {"aggregation_strategy": "none"}}, "whole entity spans"),
    ({"inputs": [TEXT, 3]}, "input 1 is int"),
    (["not", "an", "object"], "must be a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "the request body nests too deeply to read as JSON"),
    ("this is not JSON", "the request body is not JSON"),
    ({"inputs": "Paris " * 20_000}, '"inputs" holds 120,000 characters; this endpoint reads at most 100,000'),
    ({"inputs": ["Paris"] * 257}, '"inputs" holds 257 texts; this endpoint reads at most 256 a request'),
]


@pytest.fixture(scope="module")
def saved(tiny_backbone, tmp_path_factory):
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(tiny_backbone, ["PER", "LOC"], prompt_hidden_size=48).eval()
    folder = tmp_path_factory.mktemp("endpoint") / "adapter"
    model.save_pretrained(folder)
    return folder, LightNerPipeline(model=model)


def test_saved_adapter_answers_endpoint_requests_without_the_project(saved, tmp_path):
    folder, ner = saved
    assert (folder / "handler.py").exists()
    requests = [
        {"inputs": TEXT},
        {"inputs": [TEXT, "Paris"], "parameters": {"threshold": 0.0, "batch_size": 1}},
        *(request for request, _ in BAD_REQUESTS),
    ]
    (tmp_path / "requests.json").write_text(json.dumps(requests), encoding="utf-8")
    answers = run_without_project(_ENDPOINT, [str(folder), str(tmp_path / "requests.json")], tmp_path)
    expected = ner(TEXT)
    assert expected, "the tiny model predicted nothing; the comparison would prove nothing"
    assert [(e["start"], e["end"], e["entity_group"], e["word"]) for e in answers[0]] == [
        (e["start"], e["end"], e["entity_group"], e["word"]) for e in expected
    ]
    assert [e["score"] for e in answers[0]] == pytest.approx([e["score"] for e in expected], rel=1e-5)
    assert len(answers[1]) == 2 and [e["word"] for e in answers[1][0]] == [e["word"] for e in expected]
    for answer, (_, message) in zip(answers[2:], BAD_REQUESTS, strict=True):
        assert set(answer) == {"error"} and message in answer["error"], answer


def load_handler_module():
    """`handler.py` as an endpoint imports it: alone, by its path."""
    spec = importlib.util.spec_from_file_location("endpoint_handler", REPO_ROOT / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_size_limits_come_from_the_arguments_or_the_environment_and_refuse_before_the_model(saved, monkeypatch):
    folder, _ = saved
    module = load_handler_module()
    monkeypatch.setenv("LIGHTNER_MAX_CHARACTERS", "20")
    monkeypatch.setenv("LIGHTNER_MAX_TEXTS", "3")
    handler = module.EndpointHandler(str(folder))
    assert (handler.max_characters, handler.max_texts) == (20, 3)
    assert isinstance(handler({"inputs": ["Angela Merkel", "Paris"]}), list)
    assert isinstance(
        handler({"inputs": ["Angela", "Merkel", "met"], "parameters": {"is_split_into_words": True}}), list
    )
    handler.pipeline = lambda *args, **kwargs: pytest.fail("the model read a request over the limits")
    for inputs, parameters, message in [
        ("x" * 21, {}, "holds 21 characters; this endpoint reads at most 20 a request (LIGHTNER_MAX_CHARACTERS)"),
        (["Paris"] * 4, {}, "holds 4 texts; this endpoint reads at most 3 a request (LIGHTNER_MAX_TEXTS)"),
        (["Angela", "Merkel", "met", "Macron"], {"is_split_into_words": True}, "holds 24 characters"),
        ("x " * 5_000_000, {}, "holds 10,000,000 characters"),
    ]:
        answer = handler({"inputs": inputs, "parameters": parameters})
        assert set(answer) == {"error"} and message in answer["error"], answer
    assert module.EndpointHandler(str(folder), max_characters=50, max_texts=1).max_characters == 50
    for variable, value in (("LIGHTNER_MAX_CHARACTERS", "ten"), ("LIGHTNER_MAX_TEXTS", "0")):
        with (
            monkeypatch.context() as patch,
            pytest.raises(ValueError, match=f"the environment variable {variable} must be a positive whole number"),
        ):
            patch.setenv(variable, value)
            module.EndpointHandler(str(folder))
    with pytest.raises(ValueError, match="max_texts must be a positive whole number, got -1"):
        module.EndpointHandler(str(folder), max_characters=5, max_texts=-1)


def test_the_model_card_states_the_endpoint_limits(saved):
    folder, _ = saved
    module = load_handler_module()
    card = (folder / "README.md").read_text()
    assert "## Inference Endpoints" in card and module.describe_limits() in card
    assert "100,000 characters and 256 texts" in card and "`LIGHTNER_MAX_CHARACTERS`" in card
