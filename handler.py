"""A Hugging Face Inference Endpoints handler for a LightNER adapter repository.

Inference Endpoints load `handler.py` from the repository's root and call `EndpointHandler(path)(request)` with the
parsed JSON body: `{"inputs": text or list of texts, "parameters": {...}}`. The answer is the `ner` pipeline's:
per text a list of `{"entity_group", "score", "word", "start", "end"}` (and per input a list of those lists for a
list of texts). A request the handler cannot serve gets `{"error": message}` rather than a traceback: one that is not
JSON or nests too deeply to read, one over the endpoint's size limits (`DEFAULT_MAX_CHARACTERS` characters and
`DEFAULT_MAX_TEXTS` texts a request unless the endpoint's environment sets `LIGHTNER_MAX_CHARACTERS` and
`LIGHTNER_MAX_TEXTS`), and one the pipeline refuses.

```python
handler = EndpointHandler("path/to/adapter")
handler({"inputs": "Angela Merkel visited Paris.", "parameters": {"threshold": 0.5}})
```

This file is loaded on its own by the endpoint, so it imports nothing of the project but through `transformers`
(the adapter's remote code).
"""

from __future__ import annotations

import json
import os
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


# How much one request may ask of the model, and the environment variables that set other limits. Why: the pipeline
# reads any text whole (a long one in windows), so without a cap a single 10 MB request holds the endpoint for more
# than ten minutes. A request's characters are its texts' (a word list's: its words joined by spaces).
DEFAULT_MAX_CHARACTERS = 100_000
DEFAULT_MAX_TEXTS = 256
MAX_CHARACTERS_VARIABLE = "LIGHTNER_MAX_CHARACTERS"
MAX_TEXTS_VARIABLE = "LIGHTNER_MAX_TEXTS"


class RequestError(ValueError):
    """A request that cannot be served as sent; its message is what the caller gets back."""


class EndpointHandler:
    """Builds the adapter's `ner` pipeline once and answers requests with it, refusing those over its limits:
    `max_characters` and `max_texts` a request (default: the environment's `LIGHTNER_MAX_CHARACTERS` and
    `LIGHTNER_MAX_TEXTS`, else `DEFAULT_MAX_CHARACTERS` and `DEFAULT_MAX_TEXTS`)."""

    def __init__(
        self, path: str = "", max_characters: int | None = None, max_texts: int | None = None, **pipeline_kwargs: Any
    ):
        self.max_characters = _limit("max_characters", max_characters, MAX_CHARACTERS_VARIABLE, DEFAULT_MAX_CHARACTERS)
        self.max_texts = _limit("max_texts", max_texts, MAX_TEXTS_VARIABLE, DEFAULT_MAX_TEXTS)
        self.pipeline = pipeline("ner", model=path or ".", trust_remote_code=True, **pipeline_kwargs)

    def __call__(self, data: Any) -> list | dict[str, str]:
        try:
            inputs, parameters = parse_request(data)
            check_request_size(
                inputs, parameters.get("is_split_into_words", False), self.max_characters, self.max_texts
            )
            return self.pipeline(inputs, **parameters)
        except (RequestError, TypeError, ValueError) as error:
            return {"error": str(error)}


def _limit(name: str, value: int | None, variable: str, default: int) -> int:
    """A size limit: `value` if given, else the environment variable's, else `default`; a limit that is not a
    positive integer is refused at start-up, naming where it came from."""
    source = name
    if value is None and os.environ.get(variable, "").strip():
        source, value = f"the environment variable {variable}", os.environ[variable].strip()
        value = int(value) if value.isdecimal() else value
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source} must be a positive whole number, got {value!r}")
    return value


def request_characters(text: Any) -> int:
    """The characters of one text, or of one word list joined by single spaces (as the pipeline joins it); what is
    neither counts nothing here, the pipeline refuses it by name."""
    if isinstance(text, str):
        return len(text)
    if isinstance(text, list | tuple):
        words = [word for word in text if isinstance(word, str)]
        return sum(map(len, words)) + max(len(words) - 1, 0)
    return 0


def check_request_size(inputs: str | list, is_split_into_words: bool, max_characters: int, max_texts: int) -> None:
    """Refuse, before the model reads any of it, a request of more than `max_texts` texts or `max_characters`
    characters in all."""
    one_sentence = is_split_into_words and bool(inputs) and all(isinstance(word, str) for word in inputs)
    texts = [inputs] if isinstance(inputs, str) or one_sentence else inputs
    if len(texts) > max_texts:
        raise RequestError(
            f'"inputs" holds {len(texts):,} texts; this endpoint reads at most {max_texts:,} a request '
            f"({MAX_TEXTS_VARIABLE}): send them in several requests"
        )
    characters = sum(request_characters(text) for text in texts)
    if characters > max_characters:
        raise RequestError(
            f'"inputs" holds {characters:,} characters; this endpoint reads at most {max_characters:,} a request '
            f"({MAX_CHARACTERS_VARIABLE}): send the text in several requests"
        )


def describe_limits() -> str:
    """What a model card says of the handler's limits (`hub_lightner.write_model_card` reads it from this file)."""
    return (
        f"A request may hold at most {DEFAULT_MAX_CHARACTERS:,} characters and {DEFAULT_MAX_TEXTS:,} texts; a larger "
        'one is answered `{"error": ...}` before the model reads it. An endpoint sets other limits with the '
        f"environment variables `{MAX_CHARACTERS_VARIABLE}` and `{MAX_TEXTS_VARIABLE}`."
    )


def parse_request(data: Any) -> tuple[str | list, dict[str, Any]]:
    """The inputs and pipeline parameters of a request, or a `RequestError` that says what is wrong with it."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(f"the request body is not JSON: {error}") from None
        except RecursionError:
            raise RequestError("the request body nests too deeply to read as JSON") from None
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
