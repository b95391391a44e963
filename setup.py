"""LightNER for the Hugging Face Hub: prompt-tuned BART for low-resource named-entity recognition."""

import ast
from pathlib import Path

from setuptools import find_packages, setup


def transformers_requirement() -> str:
    """The transformers range `configuration_lightner.TRANSFORMERS_REQUIREMENT` states, which remote code checks at
    import; read from the file rather than imported, since building the package must not need transformers."""
    source = Path(__file__).with_name("configuration_lightner.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "TRANSFORMERS_REQUIREMENT"
        ]:
            return ast.literal_eval(node.value)
    raise RuntimeError("configuration_lightner.py does not state TRANSFORMERS_REQUIREMENT")


setup(
    name="lightner",
    version="0.1.0",
    description="LightNER: low-resource NER with a frozen BART, prompt-guided attention and a pointer decoder",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The Hub needs the model's files at the repository's top level; `lightner/` holds links to them (and to
    # `convert/`), so that they install as `lightner.modeling_lightner`, `lightner.convert`, ... and no generic
    # top-level name lands in site-packages.
    packages=find_packages(include=["lightner", "lightner.*"]),
    # assets/bart-mini: the small BART pretrained in this repository, the quickstart's offline backbone (39 MB).
    package_data={"lightner": ["span_f1/*.py", "span_f1/*.md", "assets/bart-mini/*.*"]},
    # Lower bounds are versions the suite was run with (constraints.txt pins the newest it passed with); upper bounds
    # stop at the next major release, and transformers after the newest minor release the suite passed with (5.24 and
    # 5.25 both pass), because the model hooks into transformers internals (AttentionInterface, masking_utils,
    # sdpa_attention, cache layers) that move between minor versions; that range is stated once, in
    # configuration_lightner.py, whose import checks it.
    install_requires=[
        "torch>=2.13,<3",
        transformers_requirement(),
        "huggingface_hub>=2.4,<3",
        "safetensors>=0.8,<1",
        "tokenizers>=0.23,<1",
        "accelerate>=1.16,<2",
        "evaluate>=0.4.6,<0.5",
        "datasets>=5.2,<6",
        "tqdm>=4.70,<5",
        "matplotlib>=3.11,<4",
        "regex>=2026.5.9",
        "PyYAML>=6.0.3,<7",
    ],
    extras_require={
        "test": ["pytest>=9.0.3,<10", "seqeval>=1.2.2,<2", "ruff>=0.17.6,<0.18", "spacy>=3.8.18,<4"],
    },
    entry_points={"console_scripts": ["lightner=lightner.cli:main"]},
)
