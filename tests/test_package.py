"""The installed package: its names, and what installing it puts in site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lightner
from conftest import REPO_ROOT

# Files the Hub needs at the repository's top level; they install inside the package through lightner/'s links.
HUB_FILES = (
    "modeling_lightner.py",
    "configuration_lightner.py",
    "config_fields_lightner.py",
    "generation_lightner.py",
    "hub_lightner.py",
    "quantization_lightner.py",
    "tokenization_utils.py",
    "pipeline_lightner.py",
    "text_utils.py",
    "handler.py",
)


def test_top_level_names_are_the_modules_classes():
    from lightner.configuration_lightner import LightNerConfig
    from lightner.modeling_lightner import LightNerModel
    from lightner.pipeline_lightner import LightNerPipeline

    assert (lightner.LightNerModel, lightner.LightNerConfig, lightner.LightNerPipeline) == (
        LightNerModel,
        LightNerConfig,
        LightNerPipeline,
    )
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lightner.Nope  # noqa: B018


def test_importing_the_package_does_not_load_torch():
    code = "import sys, lightner, lightner.data; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_lightner_links_every_hub_file_and_convert():
    for name in (*HUB_FILES, "convert"):
        link = REPO_ROOT / "lightner" / name
        assert link.is_symlink() and link.resolve() == (REPO_ROOT / name).resolve(), name


def test_the_wheel_installs_one_package_and_no_generic_top_level_name(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lightner-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {Path(name).parts[0] for name in names if not Path(name).parts[0].endswith(".dist-info")}
    assert top_level == {"lightner"}
    for name in (*HUB_FILES, "convert/deepke_to_lightner.py", "span_f1/span_f1.py"):
        assert f"lightner/{name}" in names, name


def test_the_command_line_and_the_format_table_import_no_torch():
    """`lightner --help` builds its choices from the format table: importing it must stay cheap (no torch)."""
    script = "import sys, lightner.cli, lightner.formats; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
