"""``simharmon --version`` (it used to fail: issue 12 item 11): the installed metadata's version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import simharmon
from simharmon import cli

REPO = Path(__file__).resolve().parents[1]


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"simharmon {cli.package_version()}"


def test_the_version_has_one_source():
    """pyproject.toml takes the version from simharmon.__version__; an install's metadata carries it."""
    assert 'version = { attr = "simharmon.__version__" }' in (REPO / "pyproject.toml").read_text()
    try:
        installed = importlib.metadata.version("simharmon")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("simharmon is not installed here (the wheel test checks an installed copy)")
    assert installed == simharmon.__version__ == cli.package_version()


def test_without_metadata_the_source_version_is_used(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli.package_version() == simharmon.__version__


def test_version_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "simharmon", "--version"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"simharmon {simharmon.__version__}"
