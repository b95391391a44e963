"""A Hugging Face Inference Endpoints handler for a LightNER adapter repository.

Inference Endpoints load `handler.py` from the repository's root and call `EndpointHandler(path)(request)` with the
parsed JSON body: `{"inputs": text or list of texts, "parameters": {...}}`. The answer is the `ner` pipeline's:
per text a list of `{"entity_group", "score", "word", "start", "end"}` (and per input a list of those lists for a
list of texts). A request the handler cannot serve gets `{"error": message}` rather than a traceback.

```python
handler = EndpointHandler("path/to/adapter")
handler({"inputs": "Angela Merkel visited Paris.", "parameters": {"threshold": 0.5}})
```

This file is loaded on its own by the endpoint, so it imports nothing of the project but through `transformers`
(the adapter's remote code).
"""

from __future__ import annotations

import json
from typing import Any

from transformers import pipeline

# The pipeline's call parameters that a request may set, and the JSON types each accepts.
REQUEST_PARAMETERS = {
    "batch_size": (int,),
    "num_beams": (int,),
    "adapter": (str,),
    "threshold": (int, float),
    "ignore_labels": (list,),
    "aggregation_strategy": (str,),
    "is_split_into_words": (bool,),
}


class RequestError(ValueError):
    """A request that cannot be served as sent; its message is what the caller gets back."""


class EndpointHandler:
    """Builds the adapter's `ner` pipeline once and answers requests with it."""

    def __init__(self, path: str = "", **pipeline_kwargs: Any):
        self.pipeline = pipeline("ner", model=path or ".", trust_remote_code=True, **pipeline_kwargs)

    def __call__(self, data: Any) -> list | dict[str, str]:
        try:
            inputs, parameters = parse_request(data)
            return self.pipeline(inputs, **parameters)
        except (RequestError, TypeError, ValueError) as error:
            return {"error": str(error)}


def parse_request(data: Any) -> tuple[str | list, dict[str, Any]]:
    """The inputs and pipeline parameters of a request, or a `RequestError` that says what is wrong with it."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"the request body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise RequestError(f'the request must be a JSON object with "inputs", not {type(data).__name__}')
    if "inputs" not in data:
        raise RequestError('the request has no "inputs": send {"inputs": "some text"} or a list of texts')
    inputs, parameters = data["inputs"], data.get("parameters") or {}
    if not isinstance(inputs, str | list):
        raise RequestError(f'"inputs" must be a text or a list of texts, not {type(inputs).__name__}')
    if not isinstance(parameters, dict):
        raise RequestError(f'"parameters" must be an object, not {type(parameters).__name__}')
    for name, value in parameters.items():
        if name not in REQUEST_PARAMETERS:
            raise RequestError(f"unknown parameter {name!r}; accepted: {sorted(REQUEST_PARAMETERS)}")
        accepted = REQUEST_PARAMETERS[name]
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            expected = " or ".join(kind.__name__ for kind in accepted)
            raise RequestError(f"parameter {name!r} must be {expected}, not {type(value).__name__}")
    return inputs, parameters
