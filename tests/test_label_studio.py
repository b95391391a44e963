"""The annotation loop without Label Studio: its JSON export read as training data (and its errors), tasks with
predictions written and read back, `lightner select`'s strategies, `--init-from`, and the ML backend's endpoints over
real HTTP with a tiny model. The test against a real Label Studio server is `test_label_studio_server.py`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import serving
from lightner.data import DataFormatError, Sentence, Span
from lightner.formats import detect_format, load_sentences, write_sentences
from lightner.formats.label_studio import labelling_config, read_label_studio, task_with_prediction
from lightner.label_studio_backend import make_backend, parse_labelling_config
from lightner.modeling_lightner import LightNerModel
from lightner.pipeline_lightner import LightNerPipeline
from lightner.select import (
    DIVERSE,
    STRATEGIES,
    choose,
    needs_model,
    random_scores,
    spread_out,
    strategy_scores,
    top_k,
    uncertainties,
)

TEXT = "cheap sushi near downtown boston"


def region(start, end, label, text=TEXT, **extra):
    value = {"start": start, "end": end, "text": text[start:end], "labels": [label]}
    return {"id": f"r{start}", "from_name": "ner", "to_name": "body", "type": "labels", "value": value, **extra}


def export(tmp_path: Path, tasks) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def task(results, task_id=7, text=TEXT, **extra):
    return {"id": task_id, "data": {"body": text}, "annotations": [{"id": 1, "result": results}], **extra}


# --- reading an export -----------------------------------------------------------------------------------------------


def test_an_export_reads_as_word_spans_with_any_from_and_to_name(tmp_path):
    path = export(tmp_path, [task([region(6, 11, "Cuisine"), region(17, 32, "Location")])])
    assert detect_format(path) == "label-studio"
    (sentence,) = load_sentences(path)
    assert sentence.words == ["cheap", "sushi", "near", "downtown", "boston"]
    assert sentence.entities == [Span(1, 2, "Cuisine"), Span(3, 5, "Location")]
    assert "task 7" in sentence.source


def test_unlabelled_and_cancelled_tasks_are_left_out_and_the_last_annotation_counts(tmp_path, caplog):
    later = task([region(0, 5, "Price")])
    later["annotations"].insert(0, {"id": 0, "result": [region(6, 11, "Cuisine")]})
    cancelled = task([region(0, 5, "Price")], task_id=8)
    cancelled["annotations"][0]["was_cancelled"] = True
    tasks = [later, cancelled, {"id": 9, "data": {"body": TEXT}, "annotations": []}]
    (sentence,) = read_label_studio(export(tmp_path, tasks))
    assert sentence.entities == [Span(0, 1, "Price")]
    assert "left out 2 tasks" in caplog.text and "task 8" in caplog.text


def test_whitespace_at_a_region_edge_is_trimmed(tmp_path):
    (sentence,) = read_label_studio(export(tmp_path, [task([region(5, 12, "Cuisine")])]))  # " sushi "
    assert sentence.entities == [Span(1, 2, "Cuisine")]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([region(7, 11, "Cuisine")], "task 7.*'ushi' does not start and end on word boundaries"),
        ([region(6, 11, "Cuisine"), region(6, 16, "Dish")], "task 7.*overlap"),
        (
            [{**region(6, 11, "Cuisine"), "value": {**region(6, 11, "Cuisine")["value"], "text": "sake"}}],
            "quotes 'sake'",
        ),
        ([{**region(6, 11, "X"), "value": {"start": 6, "end": 99, "labels": ["X"]}}], "not 0 <= start < end <= 32"),
        ([{**region(6, 11, "X"), "value": {"start": 6, "end": 11, "labels": []}}], "non-empty list of label names"),
    ],
)
def test_malformed_regions_are_errors_naming_the_file_and_task(tmp_path, results, message):
    path = export(tmp_path, [task(results)])
    with pytest.raises(DataFormatError, match=message) as caught:
        read_label_studio(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "invalid JSON"),
        ("[]", "no annotated tasks"),
        ('[{"id": 3, "data": {"a": "x", "b": "y"}, "annotations": [{"result": []}]}]', "task 3.*which data field"),
        ('[{"id": 4, "annotations": []}]', 'task 4.*"data" object'),
    ],
)
def test_malformed_exports_are_errors(tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        read_label_studio(path)


def test_written_exports_read_back_as_the_same_sentences(tmp_path):
    sentences = [Sentence(["cheap", "sushi", "near", "me"], [Span(0, 1, "Price"), Span(1, 2, "Cuisine")])]
    write_sentences(sentences, tmp_path / "out.json", "label-studio")
    assert load_sentences(tmp_path / "out.json") == sentences


def test_a_json_lines_file_named_json_is_still_json_lines(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"tokens": ["a"], "entities": []}\n', encoding="utf-8")
    assert detect_format(path) == "jsonl"


def test_a_task_with_a_prediction_has_a_region_per_fragment_and_a_task_score():
    entities = [
        {
            "entity_group": "ADR",
            "start": 0,
            "end": 11,
            "score": 0.5,
            "fragments": [{"start": 0, "end": 5}, {"start": 6, "end": 11}],
        },
        {"entity_group": "Cuisine", "start": 6, "end": 11, "score": 0.9},
    ]
    made = task_with_prediction(TEXT, entities)
    (prediction,) = made["predictions"]
    assert made["data"] == {"text": TEXT}
    assert prediction["score"] == 0.5
    assert [(r["value"]["start"], r["value"]["end"], r["value"]["text"]) for r in prediction["result"]] == [
        (0, 5, "cheap"), (6, 11, "sushi"), (6, 11, "sushi")
    ]  # fmt: skip
    assert prediction["result"][0]["meta"] == {"fragment": "1 of 2"}


def test_labelling_config_is_what_the_backend_reads():
    config = parse_labelling_config(labelling_config(["Cuisine", "Price"]))
    assert (config.from_name, config.to_name, config.field, config.labels) == (
        "label",
        "text",
        "text",
        ("Cuisine", "Price"),
    )
    with pytest.raises(ValueError, match="no <Labels"):
        parse_labelling_config('<View><Text name="t" value="$t"/></View>')


# --- selection -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_backbone):
    torch.manual_seed(0)
    return LightNerModel.from_backbone(tiny_backbone, ["Cuisine", "Location"], prompt_hidden_size=16).eval()


def test_uncertainties_are_finite_per_sentence_and_empty_sentences_rank_last(tiny_model):
    sentences = [["cheap", "sushi"], [], ["near", "downtown", "boston"]]
    values = uncertainties(tiny_model, sentences, batch_size=2)
    assert values[1].sequence == float("-inf")
    for value in (values[0], values[2]):
        assert value.sequence > 0 and 0 <= value.margin <= 1
    for strategy in STRATEGIES:
        scores = strategy_scores(strategy, sentences, tiny_model, seed=3)
        assert 1 not in top_k(scores, 3) and len(top_k(scores, 3)) == 2


def test_batching_does_not_change_the_uncertainties(tiny_model):
    sentences = [["cheap", "sushi"], ["near", "downtown", "boston", "please"], ["sushi"]]
    one = uncertainties(tiny_model, sentences, batch_size=1)
    together = uncertainties(tiny_model, sentences, batch_size=3)
    for a, b in zip(one, together):
        assert a.sequence == pytest.approx(b.sequence, abs=1e-4) and a.margin == pytest.approx(b.margin, abs=1e-4)


def test_diverse_picks_the_most_uncertain_sentence_of_each_kind_once(tiny_model):
    """A pool that repeats one sentence eight times: `diverse` takes one copy and the two other kinds, whatever their
    uncertainty, and its encoder states are the same whatever the batching."""
    kinds = [["cheap", "sushi", "near", "boston"], ["open", "late"], ["five", "star", "italian", "place"]]
    sentences = [kinds[0]] * 8 + kinds[1:] + [[]]
    measured = uncertainties(tiny_model, sentences, batch_size=4, embed=True)
    apart = uncertainties(tiny_model, sentences, batch_size=1, embed=True)
    for a, b in zip(measured[:-1], apart[:-1]):
        torch.testing.assert_close(a.embedding, b.embedding, atol=1e-5, rtol=1e-5)
    assert measured[-1].embedding is None
    for seed in range(3):
        chosen, scores = choose(DIVERSE, sentences, 3, tiny_model, batch_size=4, seed=seed)
        assert len(set(chosen)) == 3 and {8, 9} <= set(chosen)
        assert scores == [u.sequence for u in measured] and scores[chosen[0]] >= scores[chosen[-1]]
    with pytest.raises(ValueError, match="needs a model"):
        choose(DIVERSE, sentences, 3)


def test_spread_out_covers_every_cluster_and_prefers_the_uncertain_one():
    """Three tight clusters, k = 3: one pick each; k = 4: the fourth goes where the weight is (the uncertain one)."""
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([0.05 * torch.randn(30, 8, generator=generator) + torch.eye(8)[c] for c in range(3)])
    weights = torch.cat([torch.full((30,), 5.0), torch.ones(60)])
    for seed in range(5):
        assert sorted(i // 30 for i in spread_out(points, weights, 3, seed)) == [0, 1, 2]
        assert sorted(i // 30 for i in spread_out(points, weights, 4, seed)) == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="cannot spread 91 picks over 90 points"):
        spread_out(points, weights, 91)


def test_select_docstring_example_runs():
    import doctest

    from lightner import select

    tests = doctest.DocTestFinder().find(select.choose, "choose", globs=vars(select))
    runner = doctest.DocTestRunner()
    assert tests and tests[0].examples
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_random_is_seeded_and_top_k_is_highest_first():
    assert random_scores(5, 1) == random_scores(5, 1) != random_scores(5, 2)
    assert top_k([0.1, 0.9, 0.5], 2) == [1, 2]
    assert not needs_model("random", Path("next.txt")) and needs_model("random", Path("next.JSON"))
    assert needs_model("sequence", Path("next.txt"))
    with pytest.raises(ValueError, match="unknown selection strategy"):
        strategy_scores("entropy", [["a"]])


def test_lightner_select_writes_label_studio_tasks_jsonl_or_text(tiny_backbone, tiny_model, tmp_path):
    from lightner.cli import main

    tiny_model.save_pretrained(tmp_path / "adapter")
    pool = tmp_path / "pool.txt"
    pool.write_text("cheap sushi\nnear downtown boston\n\nsushi please\n", encoding="utf-8")
    select = ["select", "--model", str(tmp_path / "adapter"), "--input", str(pool)]
    assert main([*select, "--k", "2", "--output", str(tmp_path / "next.json")]) == 0
    tasks = json.loads((tmp_path / "next.json").read_text())
    assert len(tasks) == 2 and all("predictions" in t and t["data"]["text"] for t in tasks)
    assert main([*select, "--k", "3", "--strategy", "random", "--output", str(tmp_path / "next.txt")]) == 0
    assert len((tmp_path / "next.txt").read_text().splitlines()) == 3
    assert main([*select, "--k", "2", "--strategy", "diverse", "--output", str(tmp_path / "next.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "next.jsonl").read_text().splitlines()]
    assert len({line["text"] for line in lines}) == 2 and lines[0]["uncertainty"] >= lines[1]["uncertainty"] > 0


# --- training from an export, and from a previous adapter ------------------------------------------------------------


def test_train_reads_an_export_and_goes_on_from_the_adapter_with_init_from(tiny_backbone, tmp_path):
    from lightner.train import LightNerTrainingArguments, train

    first = export(tmp_path, [task([region(6, 11, "Cuisine")])])
    common = dict(backbone=str(tiny_backbone), epochs=1, batch_size=2, prompt_hidden_size=16, checkpoint_steps=10**9)
    train(LightNerTrainingArguments(train_file=str(first), output_dir=str(tmp_path / "r0"), **common))
    second = tmp_path / "second" / "export.json"
    second.parent.mkdir()
    second.write_text(json.dumps([task([region(17, 32, "Location")], task_id=2)]), encoding="utf-8")
    results = train(
        LightNerTrainingArguments(
            train_file=str(second), output_dir=str(tmp_path / "r1"), init_from=str(tmp_path / "r0"), **common
        )
    )
    assert results["entity_types"] == ["Cuisine", "Location"]  # the adapter's types first, the new one added
    start = LightNerModel.from_pretrained(tmp_path / "r0").adapters["default"].pointer_head.label_word_weights
    with pytest.raises(ValueError, match="not both"):
        LightNerTrainingArguments(
            train_file=str(second), output_dir="x", init_from="a", init_prompts_from="b", backbone=str(tiny_backbone)
        )
    assert start.shape[0] == 1


# --- the backend over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tiny_model, tmp_path_factory):
    with serving(
        make_backend(LightNerPipeline(model=tiny_model), port=0, work_dir=tmp_path_factory.mktemp("ls-work"))
    ) as server:
        yield server


def call(server, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_setup_and_predict_answer_label_studio_with_character_offsets(backend):
    status, health = call(backend, "/health")
    assert status == 200 and health["status"] == "UP"
    config = labelling_config(["Cuisine", "Location"]).replace('name="label"', 'name="ner"')
    assert call(backend, "/setup", {"project": "3.1700000000", "schema": config})[0] == 200
    tasks = [{"id": 1, "data": {"text": TEXT}}, {"id": 2, "data": {"text": ""}}]
    status, answer = call(backend, "/predict", {"tasks": tasks, "project": "3.1700000000"})
    assert status == 200 and len(answer["results"]) == 2
    expected = backend.pipeline(TEXT)
    regions = answer["results"][0]["result"]
    assert [(r["value"]["start"], r["value"]["end"]) for r in regions] == [(e["start"], e["end"]) for e in expected]
    for r in regions:
        assert (
            r["from_name"] == "ner"
            and r["to_name"] == "text"
            and TEXT[r["value"]["start"] : r["value"]["end"]] == r["value"]["text"]
        )
        assert 0 < r["score"] <= 1
    assert answer["results"][1]["result"] == [] and answer["results"][1]["score"] == 1.0


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/predict", {"nothing": 1}, 400, "tasks"),
        ("/predict", {"tasks": [{"id": 5}]}, 400, "task 5"),
        ("/predict", b"[1", 400, "JSON"),
        ("/setup", {"schema": "<View/>"}, 400, "no <Labels"),
        ("/nowhere", {}, 404, "/predict"),
    ],
)
def test_bad_requests_get_an_error_saying_why(backend, path, body, status, message):
    code, answer = call(backend, path, body)
    assert code == status and message in answer["error"]


def test_webhook_keeps_submitted_annotations_as_an_export_lightner_train_reads(backend):
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 4},
        "task": {"id": 11, "data": {"text": TEXT}},
        "annotation": {"id": 1, "result": [region(6, 11, "Cuisine") | {"to_name": "text"}]},
    }
    status, answer = call(backend, "/webhook", event)
    assert status == 200 and answer["status"] == "kept"
    (sentence,) = load_sentences(backend.work_dir / "4" / "annotations.json")
    assert sentence.entities == [Span(1, 2, "Cuisine")]
    assert call(backend, "/webhook", {"action": "PROJECT_UPDATED"})[1]["status"] == "ignored"


def test_enough_submitted_annotations_train_a_new_adapter_from_the_current_one(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "adapter")
    model = LightNerModel.from_pretrained(tmp_path / "adapter")
    server = make_backend(
        LightNerPipeline(model=model), port=0, work_dir=tmp_path / "work", train_every=1, train_epochs=1,
        model_dir=str(tmp_path / "adapter"),
    )  # fmt: skip
    with serving(server):
        event = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 5},
            "task": {"id": 1, "data": {"text": TEXT}},
            "annotation": {"id": 1, "result": [region(17, 32, "Location") | {"to_name": "text"}]},
        }
        assert call(server, "/webhook", event)[1]["status"] == "training"
        server.training.join(timeout=300)
        assert server.version == 1 and call(server, "/health")[1]["model_version"] == "lightner-1"
        assert (tmp_path / "work" / "5" / "adapter-1" / "model.safetensors").is_file()
        assert call(server, "/predict", {"tasks": [{"id": 1, "data": {"text": TEXT}}]})[0] == 200


def test_predict_writes_importable_tasks_and_reads_tasks_back_as_input(tiny_model, tmp_path):
    from lightner.cli import main

    tiny_model.save_pretrained(tmp_path / "adapter")
    source = tmp_path / "in.txt"
    source.write_text(f"{TEXT}\n\nsushi please\n", encoding="utf-8")
    predict = ["predict", "--model", str(tmp_path / "adapter")]
    to_tasks = ["--output", str(tmp_path / "tasks.json"), "--output-format", "label-studio"]
    assert main([*predict, "--input", str(source), *to_tasks]) == 0
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))  # one JSON list, as Label Studio imports
    assert [task["data"]["text"] for task in tasks] == [TEXT, "", "sushi please"]
    expected = LightNerPipeline(model=tiny_model)(TEXT)
    regions = tasks[0]["predictions"][0]["result"]
    assert [(r["value"]["start"], r["value"]["end"]) for r in regions] == [(e["start"], e["end"]) for e in expected]
    assert not (tmp_path / "tasks.json.progress").exists()
    assert main([*predict, "--input", str(tmp_path / "tasks.json"), "--output", str(tmp_path / "again.jsonl")]) == 0
    lines = (tmp_path / "again.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == [TEXT, "", "sushi please"]
    assert main([*predict, "--input", str(source), "--output", "-", "--output-format", "label-studio"]) == 1
