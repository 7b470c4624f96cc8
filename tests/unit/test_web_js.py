"""The page's own JS unit tests (tests/web/*.test.mjs), run by node's built-in test runner."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from devstack.media import ROOT


def test_page_functions_pass_their_node_tests() -> None:
    node = shutil.which("node")
    if node is None:  # `make test` installs node (scripts/install-browser.sh); say so rather than pass.
        pytest.fail("node is not installed: run `bash scripts/install-browser.sh`")
    result = subprocess.run(
        [node, "--test", "tests/web/"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
