"""LightNER for the Hugging Face Hub: prompt-tuned BART for low-resource named-entity recognition."""

from pathlib import Path

from setuptools import find_packages, setup

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
    package_data={"lightner": ["span_f1/*.py", "span_f1/*.md"]},
    install_requires=[
        "torch>=2.6",
        "transformers>=5.24,<6",
        "huggingface_hub>=1.31",
        "safetensors>=0.8",
        "accelerate>=1.1",
        "evaluate>=0.4.3",
        "datasets>=4.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=8", "seqeval>=1.2.2", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["lightner=lightner.cli:main"]},
)
