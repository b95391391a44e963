"""The Inference Endpoints handler a saved adapter carries, run as an endpoint runs it: alone, from the folder."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_without_project
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."

_ENDPOINT = """
import importlib.util, json

spec = importlib.util.spec_from_file_location("handler", sys.argv[1] + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(sys.argv[1])
requests = json.loads(sys.argv[2])
answers = [handler(request) for request in requests[:-1]] + [handler(requests[-1].encode())]
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
        "this is not JSON",  # sent as raw bytes, as a body that failed to parse would arrive
    ]
    answers = run_without_project(_ENDPOINT, [str(folder), json.dumps(requests)], tmp_path)
    expected = ner(TEXT)
    assert expected, "the tiny model predicted nothing; the comparison would prove nothing"
    assert [(e["start"], e["end"], e["entity_group"], e["word"]) for e in answers[0]] == [
        (e["start"], e["end"], e["entity_group"], e["word"]) for e in expected
    ]
    assert [e["score"] for e in answers[0]] == pytest.approx([e["score"] for e in expected], rel=1e-5)
    assert len(answers[1]) == 2 and [e["word"] for e in answers[1][0]] == [e["word"] for e in expected]
    for answer, (_, message) in zip(answers[2:-1], BAD_REQUESTS):
        assert set(answer) == {"error"} and message in answer["error"], answer
    assert "the request body is not JSON" in answers[-1]["error"]
