"""LightNER: prompt-tuned BART adapters for low-resource named-entity recognition.

`from lightner import LightNerModel, LightNerConfig, LightNerPipeline` imports the model on first use, so that
`lightner --help` and the data tools start without loading torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LightNerModel": "lightner.modeling_lightner",
    "LightNerConfig": "lightner.configuration_lightner",
    "LightNerPipeline": "lightner.pipeline_lightner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lightner' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
