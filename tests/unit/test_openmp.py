"""The gateway's thread-pool settings: set before torch and numpy load, and never over an operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.launcher.openmp import DEFAULTS, GATEWAY_OPENMP, OPERATOR_KNOBS, openmp_defaults


def test_the_gateway_spins_briefly_and_runs_blas_on_one_thread_by_default() -> None:
    expected = {"GOMP_SPINCOUNT": "10000", "OPENBLAS_NUM_THREADS": "1"}
    assert openmp_defaults({"PATH": "/bin"}) == GATEWAY_OPENMP == expected


@pytest.mark.parametrize(("name", "knob"), [(name, knob) for name, _, knobs in DEFAULTS for knob in knobs])
def test_an_operators_own_setting_wins_over_the_default_it_overrides(name: str, knob: str) -> None:
    chosen = openmp_defaults({knob: "PASSIVE" if knob == "OMP_WAIT_POLICY" else "0"})
    assert name not in chosen
    assert chosen == {other: value for other, value in GATEWAY_OPENMP.items() if other != name}


def test_python_m_service_sets_them_before_torch_or_numpy_is_loaded() -> None:
    """libgomp and OpenBLAS read their variables once, when torch and numpy load them: the entry point
    must set them first. The probe records the variables at the moment anything first imports either."""
    probe = (
        "import os, sys\n"
        "seen = {}\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('torch', 'numpy') and name not in seen:\n"
        "            seen[name] = [os.environ.get(v) for v in ('GOMP_SPINCOUNT', 'OPENBLAS_NUM_THREADS')]\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import service.__main__\n"
        "print(sorted(seen.items()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in OPERATOR_KNOBS}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[('numpy', ['10000', '1']), ('torch', ['10000', '1'])]"


def test_the_gateway_limits_malloc_arenas_unless_the_operator_chose() -> None:
    from service.launcher.openmp import limit_malloc_arenas

    assert limit_malloc_arenas({}) is True  # glibc: mallopt(M_ARENA_MAX, 2) accepted
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False
