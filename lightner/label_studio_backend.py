"""`lightner label-studio`: a Label Studio ML backend, so that Label Studio shows an adapter's entities as
pre-annotations and the adapter learns from what annotators submit.

Label Studio's ML backend protocol (what its "Model" settings page connects to), answered with the standard library's
HTTP server and the bounded request reading of `serving.BoundedRequestHandler`:

- `GET /health` (and `GET /`): `{"status": "UP", "model_class": "LightNER", ...}`;
- `POST /setup` (`{"project", "schema": the labelling config, ...}`): reads the config's `<Labels>` and `<Text>`
  names and answers `{"model_version"}`; a config without them is a 400 naming what is missing;
- `POST /predict` (`{"tasks": [...], "label_config"?, "project"?}`): `{"results": [prediction per task]}`, each a
  `labels` region per entity with character offsets and its score, and a task score (the lowest entity score; see
  `label_studio.prediction`). Entity types the config has no label for are left out, since Label Studio cannot show
  them; the adapter used is the loaded one sharing the most labels with the config;
- `POST /webhook` (Label Studio's `ANNOTATION_CREATED`/`ANNOTATION_UPDATED` events) and `POST /train`: the submitted
  annotations are kept in `WORK_DIR/<project>/annotations.json` (a Label Studio export, which `lightner train`
  reads); every `--train-every` new ones, a background thread trains a new adapter from the current one
  (`--init-from`, a few epochs) and swaps it in when done. Without `--work-dir` annotations are not kept.

Discontinuous entities cannot be one Label Studio region: each fragment is sent as its own region (see
`label_studio`).
"""

from __future__ import annotations

import json
import logging
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .formats.label_studio import DEFAULT_FROM_NAME, DEFAULT_TO_NAME, prediction, task_text
from .serving import BoundedRequestHandler, RequestRefused, parse_json

logger = logging.getLogger(__name__)

MAX_TEXT_CHARACTERS = 100_000
MAX_BODY_BYTES = 64 << 20  # Label Studio sends a page of tasks at once
TRAINING_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "START_TRAINING")


@dataclass(frozen=True)
class LabellingConfig:
    """What a prediction needs from a project's labelling config: the `<Labels>` name (`from_name`), the `<Text>` it
    labels (`to_name`), the task field holding the text, and the label values."""

    from_name: str = DEFAULT_FROM_NAME
    to_name: str = DEFAULT_TO_NAME
    field: str = DEFAULT_TO_NAME
    labels: tuple[str, ...] = ()


def parse_labelling_config(config: str) -> LabellingConfig:
    """The first `<Labels>` of a labelling config and the `<Text>` it names; `ValueError` saying what is missing."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as error:
        raise ValueError(f"the labelling config is not XML: {error}") from None
    labels = next((tag for tag in root.iter() if tag.tag.lower() == "labels"), None)
    if labels is None or not labels.get("name") or not labels.get("toName"):
        raise ValueError("the labelling config has no <Labels name=... toName=...> (an NER project needs one)")
    to_name = labels.get("toName").split(",")[0]
    text = next((t for t in root.iter() if t.get("name") == to_name and t.tag.lower() in ("text", "hypertext")), None)
    if text is None:
        raise ValueError(f"the labelling config's <Labels> label {to_name!r}, which is not a <Text> of the config")
    field = (text.get("value") or f"${to_name}").lstrip("$")
    values = tuple(label.get("value") for label in labels if label.get("value"))
    return LabellingConfig(labels.get("name"), to_name, field, values)


class LabelStudioBackend(ThreadingHTTPServer):
    """Serves one pipeline's adapters to Label Studio; see the module docstring."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        pipeline,
        work_dir: Path | None = None,
        train_every: int = 10,
        train_epochs: int = 10,
        model_dir: str | None = None,
    ):
        super().__init__(address, BackendRequestHandler)
        self.pipeline = pipeline
        self.lock = threading.Lock()  # one prediction at a time: the model is not made for concurrent calls
        self.configs: dict[str, LabellingConfig] = {}
        self.work_dir, self.train_every, self.train_epochs = work_dir, train_every, train_epochs
        self.model_dir = model_dir
        self.pending: dict[str, int] = {}
        self.training: threading.Thread | None = None
        self.version = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def model_version(self) -> str:
        return f"lightner-{self.version}"

    # --- the protocol's answers --------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "LightNER",
            "model_version": self.model_version,
            "adapters": self.pipeline.model.list_adapters(),
        }

    def setup(self, request: Mapping[str, Any]) -> dict[str, Any]:
        schema = request.get("schema") or request.get("label_config")
        if not isinstance(schema, str):
            raise ValueError('send the project\'s labelling config as "schema"')
        self.configs[str(request.get("project", ""))] = parse_labelling_config(schema)
        return {"model_version": self.model_version}

    def config_for(self, request: Mapping[str, Any]) -> LabellingConfig:
        """The config sent with the request, else the one `/setup` gave for its project, else Label Studio's
        default names with no label filter."""
        if isinstance(request.get("label_config"), str):
            return parse_labelling_config(request["label_config"])
        project = str(request.get("project", ""))
        return self.configs.get(project) or self.configs.get(project.split(".")[0]) or LabellingConfig()

    def adapter_for(self, config: LabellingConfig) -> str:
        """The loaded adapter whose types share the most labels with the config (the active one on a tie)."""
        model = self.pipeline.model
        names = model.list_adapters()
        shared = {name: len(set(model.adapters[name].config.entity_types) & set(config.labels)) for name in names}
        return max(names, key=lambda name: (shared[name], name == model.active_adapter))

    def predict(self, request: Mapping[str, Any]) -> dict[str, Any]:
        tasks = request.get("tasks")
        if not isinstance(tasks, list):
            raise ValueError('send {"tasks": [...]}, the tasks to pre-annotate')
        config = self.config_for(request)
        adapter = self.adapter_for(config)
        results = []
        for number, task in enumerate(tasks, start=1):
            where = f"task {task.get('id')}" if isinstance(task, dict) and "id" in task else f"task #{number}"
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                raise ValueError(f'{where}: expected a task object with a "data" object')
            text = task_text(data, config.field, where)
            if len(text) > MAX_TEXT_CHARACTERS:
                raise ValueError(
                    f"{where}: {len(text):,} characters; this backend reads at most {MAX_TEXT_CHARACTERS:,}"
                )
            with self.lock:
                entities = self.pipeline(text, adapter=adapter) if text.strip() else []
            if config.labels:
                entities = [entity for entity in entities if entity["entity_group"] in config.labels]
            results.append(prediction(entities, text, self.model_version, config.from_name, config.to_name))
        return {"results": results, "model_version": self.model_version}

    def webhook(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Keep a submitted annotation (`ANNOTATION_CREATED`/`UPDATED`); train when enough are new."""
        action = request.get("action")
        if action not in TRAINING_EVENTS:
            return {"status": "ignored", "action": action}
        if self.work_dir is None:
            return {"status": "ignored", "reason": "annotations are not kept without --work-dir"}
        project = request.get("project")
        project_id = str(project.get("id") if isinstance(project, dict) else project or "default")
        if action != "START_TRAINING":
            task, annotation = request.get("task"), request.get("annotation")
            if not isinstance(task, dict) or not isinstance(annotation, dict):
                raise ValueError(f'{action}: expected "task" and "annotation" objects')
            self._keep(project_id, task, annotation)
            self.pending[project_id] = self.pending.get(project_id, 0) + 1
            if self.pending[project_id] < self.train_every:
                return {"status": "kept", "new_annotations": self.pending[project_id]}
        return {"status": self._start_training(project_id)}

    def _annotations_path(self, project_id: str) -> Path:
        return self.work_dir / project_id / "annotations.json"

    def _keep(self, project_id: str, task: dict, annotation: dict) -> None:
        path = self._annotations_path(project_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tasks = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        tasks = [t for t in tasks if t.get("id") != task.get("id")]
        tasks.append({"id": task.get("id"), "data": task.get("data"), "annotations": [annotation]})
        path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")

    def _start_training(self, project_id: str) -> str:
        if self.model_dir is None or not Path(self.model_dir).is_dir():
            return "not training: --model is not a local adapter folder to go on from"
        if self.training is not None and self.training.is_alive():
            return "training already"
        if not self._annotations_path(project_id).exists():
            return "not training: no annotations kept yet"
        self.pending[project_id] = 0
        self.training = threading.Thread(target=self._train, args=(project_id,), daemon=True)
        self.training.start()
        return "training"

    def _train(self, project_id: str) -> None:
        """A new adapter from the current one on the project's annotations, swapped in when done."""
        from .arguments import LightNerTrainingArguments
        from .modeling_lightner import LightNerModel
        from .pipeline_lightner import LightNerPipeline
        from .train import train

        output = self.work_dir / project_id / f"adapter-{self.version + 1}"
        try:
            model = self.pipeline.model
            args = LightNerTrainingArguments(
                train_file=str(self._annotations_path(project_id)),
                output_dir=str(output),
                backbone=model.config.backbone,
                init_from=self.model_dir,
                epochs=self.train_epochs,
                overwrite=True,
            )
            train(args)
            trained = LightNerModel.from_pretrained(str(output)).to(next(model.parameters()).device)
            with self.lock:
                self.pipeline = LightNerPipeline(model=trained)
                self.model_dir, self.version = str(output), self.version + 1
            logger.info(f"trained {output} on project {project_id}'s annotations; now serving {self.model_version}")
        except Exception as error:  # a background thread: the log is where it can be told
            logger.error(f"training on project {project_id}'s annotations failed: {error}")


class BackendRequestHandler(BoundedRequestHandler):
    server: LabelStudioBackend
    max_body_bytes = MAX_BODY_BYTES

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
        if self.path.split("?")[0] in ("/", "/health"):
            self._send(HTTPStatus.OK, self.server.health())
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no GET {self.path}; try /health"})

    def do_POST(self) -> None:  # noqa: N802
        answer = {
            "/setup": self.server.setup,
            "/predict": self.server.predict,
            "/webhook": self.server.webhook,
            "/train": self.server.webhook,
        }.get(self.path.split("?")[0])
        if answer is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no POST {self.path}; this backend answers {_ENDPOINTS}"})
            return
        try:
            request = _json_request(self.read_body())
            if not isinstance(request, dict):
                raise ValueError(f"expected a JSON object, got {type(request).__name__}")
            if self.path.startswith("/train") and "action" not in request:
                request = {**request, "action": "START_TRAINING"}
            self._send(HTTPStatus.OK, answer(request))
        except RequestRefused as refused:
            self._send(refused.status, {"error": str(refused)})
        except ValueError as error:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(error)})

    def _send(self, status: int, answer: Mapping[str, Any]) -> None:
        self.send_content(status, "application/json", json.dumps(answer, ensure_ascii=False))

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        logger.debug(format, *args)


def _json_request(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as error:
        raise ValueError(f"the request body is not JSON: {error}") from None


_ENDPOINTS = "GET /health, POST /setup, /predict, /webhook, /train"


def make_backend(pipeline, host: str = "127.0.0.1", port: int = 9090, **options) -> LabelStudioBackend:
    """A backend for `pipeline` (a `LightNerPipeline`); port 0 picks a free one (see `backend.url`)."""
    return LabelStudioBackend((host, port), pipeline, **options)


def predicted_types(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The labels of a `/predict` answer's regions, in order (for tests and checks)."""
    return [region["value"]["labels"][0] for result in results for region in result["result"]]


__all__ = ["LabelStudioBackend", "LabellingConfig", "make_backend", "parse_labelling_config"]
