"""The gateway's OpenMP wait policy: set before torch loads, and never over an operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.openmp import GATEWAY_OPENMP, OPERATOR_KNOBS, openmp_defaults


def test_the_gateway_spins_briefly_by_default() -> None:
    assert openmp_defaults({"PATH": "/bin"}) == GATEWAY_OPENMP == {"GOMP_SPINCOUNT": "10000"}


@pytest.mark.parametrize("knob", OPERATOR_KNOBS)
def test_an_operators_own_setting_wins(knob: str) -> None:
    assert openmp_defaults({knob: "PASSIVE" if knob == "OMP_WAIT_POLICY" else "0"}) == {}


def test_python_m_service_sets_it_before_torch_is_loaded() -> None:
    """libgomp reads the variables once, when torch loads it: the entry point must set them first. The
    probe records the variable at the moment anything first imports torch."""
    probe = (
        "import os, sys\n"
        "seen = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not seen:\n"
        "            seen.append(os.environ.get('GOMP_SPINCOUNT'))\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import service.__main__\n"
        "print(seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in OPERATOR_KNOBS}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['10000']"
