"""How the gateway's thread pools wait between parallel regions: set before torch loads libgomp and numpy
loads OpenBLAS (each reads the environment once, when it loads), so ``python -m service`` applies them
first thing.

The gateway runs torch's OpenMP pool (summed-area tables, pyramid levels, crops, alignment) and OpenVINO's
threads (the detector's nets) on the same cores, op after op. The two ends of libgomp's range both cost:

- spinning until the default 300,000 spins: idle OpenMP threads starve OpenVINO's on 2 cores;
- ``OMP_WAIT_POLICY=PASSIVE`` (no spin): every parallel op wakes its threads from sleep, which dominates
  the many small ops of a cascade and slows the whole detector.

A short spin (``GOMP_SPINCOUNT``) keeps the threads warm from one op to the next and lets them
sleep while OpenVINO runs.

numpy's OpenBLAS keeps a pool of its own, and its idle worker waits spinning in ``sched_yield`` for a while
after each parallel call. The gateway's linear algebra is all tiny (2x2 alignments, a few hundred
similarity scores), so one BLAS thread (``OPENBLAS_NUM_THREADS=1``) loses nothing. (Alignment also
inverts its 3x3 maps in closed form, service/vision/alignment.py, and never calls LAPACK.) The measurements
behind both choices are on docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

# Each default, with the variables an operator may set instead: an operator's own setting wins.
DEFAULTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("GOMP_SPINCOUNT", "10000", ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")),
    ("OPENBLAS_NUM_THREADS", "1", ("OPENBLAS_NUM_THREADS",)),
)
GATEWAY_OPENMP = {name: value for name, value, _ in DEFAULTS}
OPERATOR_KNOBS = tuple(knob for _, _, knobs in DEFAULTS for knob in knobs)


# glibc's M_ARENA_MAX (malloc.h): how many heaps malloc may keep; one per thread by default.
M_ARENA_MAX = -8
GATEWAY_ARENAS = 2


def limit_malloc_arenas(environ: Mapping[str, str]) -> bool:
    """Two malloc heaps instead of one per thread, as the gateway image sets with MALLOC_ARENA_MAX: the
    per-thread heaps of the detector and decode pools grow apart and are seldom returned
    (docs/robustness.md). glibc reads the variable once at start, so ``python -m service`` applies it
    with mallopt before its pools start their threads; an operator's own MALLOC_ARENA_MAX wins. Returns
    whether the limit was applied (False on a libc without mallopt, e.g. musl)."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, GATEWAY_ARENAS))
    except (OSError, AttributeError):
        return False


def openmp_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The gateway's thread-pool settings, less those an operator has set a variable of their own for."""
    return {name: value for name, value, knobs in DEFAULTS if not any(knob in environ for knob in knobs)}
