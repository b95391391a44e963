"""Shared fixtures: tiny random BART backbones, a self-made tokenizer, and the path to ../shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from lightner.threads import make_products_reproducible

# As the `lightner` command does: float32 products whose bits do not depend on the thread count (it must come before
# torch's first product, so before any fixture runs).
make_products_reproducible()

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("LIGHTNER_SHARED_DIR", REPO_ROOT.parent / "shared"))
SHARED_SKIP_REASON = (
    f"needs the shared assets at {SHARED_DIR} (set LIGHTNER_SHARED_DIR to point elsewhere); CI always has them"
)
# CI sets this: there a test that needs ../shared and cannot find it is a failure, never a silent skip.
REQUIRE_SHARED = os.environ.get("LIGHTNER_REQUIRE_SHARED", "") not in ("", "0")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models are dominated by per-op overhead, which extra threads only add to (badly, on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Prepended to scripts that must prove remote code works alone: the project's modules cannot be imported from the
# checkout or from an (editable) install, only from the adapter folder's copies under `transformers_modules`.
REFUSE_PROJECT_IMPORTS = """
import sys

PROJECT = {"lightner", "modeling_lightner", "configuration_lightner", "tokenization_utils", "pipeline_lightner"}
PROJECT |= {"text_utils", "generation_lightner", "hub_lightner", "quantization_lightner", "config_fields_lightner"}


class RefuseProjectImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PROJECT:
            raise ImportError(f"{name} must come from the adapter folder, not from the project")


sys.meta_path.insert(0, RefuseProjectImports())
"""


def run_without_project(script: str, args: list[str], workdir: Path):
    """Run `script` in a fresh interpreter that cannot import the project, offline; return its last stdout line's JSON.

    The project is off `sys.path` and refused by an import hook, the Hub is offline and remote code goes to a fresh
    modules cache under `workdir`: whatever the script loads must come from a saved adapter folder alone.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", REFUSE_PROJECT_IMPORTS + script, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def shared_path(*parts: str) -> Path:
    """A path inside ../shared; a test without it skips (fails under LIGHTNER_REQUIRE_SHARED)."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        if REQUIRE_SHARED:
            pytest.fail(f"LIGHTNER_REQUIRE_SHARED is set and {path} does not exist: {SHARED_SKIP_REASON}")
        pytest.skip(SHARED_SKIP_REASON)
    return path


def byte_level_tokenizer():
    """A BART-compatible byte-level BPE tokenizer small enough to build in a test.

    Its vocabulary is the 256 byte symbols plus word-initial pieces for letters and digits (so that different words
    get different first pieces, as with the real vocabulary), with BART's special-token ids: <s>=0, <pad>=1, </s>=2.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import BartTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    merges = []
    for char in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        vocab["Ġ" + char] = len(vocab)
        merges.append(("Ġ", char))
    vocab["<mask>"] = len(vocab)
    return BartTokenizer(vocab=vocab, merges=merges)


def tiny_bart_config(vocab_size: int, **overrides):
    from transformers import BartConfig

    settings = dict(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    settings.update(overrides)
    return BartConfig(**settings)


def save_tiny_backbone(directory: Path, tokenizer=None, seed: int = 0, **overrides) -> Path:
    """A random tiny BART and its tokenizer saved as a backbone folder, as `from_backbone` expects."""
    import torch
    from transformers import BartModel

    tokenizer = tokenizer if tokenizer is not None else byte_level_tokenizer()
    torch.manual_seed(seed)
    BartModel(tiny_bart_config(overrides.pop("vocab_size", len(tokenizer)), **overrides)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def model_with_strong_prompts(backbone: Path, types: list[str]):
    """A fresh adapter on `backbone` with folded prompts drawn large (std 2), so that they change what the tiny
    backbone computes as trained prompts do, which zero-ish initial prompts would not."""
    import torch

    from lightner.modeling_lightner import LightNerModel

    torch.manual_seed(0)
    model = LightNerModel.from_backbone(backbone, types, prompt_hidden_size=16).eval()
    model.prompt_encoder.fold()
    with torch.no_grad():
        for tensor in model.prompt_encoder.prompts.values():
            tensor.normal_(0, 2.0)
    return model


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """Unequal encoder/decoder depths and head counts, so nothing may assume they match."""
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-bart"))


@pytest.fixture(scope="session")
def real_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_path("assets", "bart-large-tokenizer"))


@contextmanager
def serving(server):
    """`server` answering in a background thread while the block runs; shut down and its socket closed after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
