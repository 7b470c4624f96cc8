"""How the gateway's OpenMP threads wait between parallel regions: set before torch loads libgomp (it reads
the environment once, when the library loads), so ``python -m service`` applies it first thing.

The gateway runs torch's OpenMP pool (summed-area tables, pyramid levels, crops, alignment) and OpenVINO's
threads (the detector's nets) on the same cores, op after op. The two ends of libgomp's range both cost:

- spinning until the default 300,000 spins: idle OpenMP threads starve OpenVINO's on 2 cores (messi5
  cascade 58 ms spinning, 43 ms passive);
- ``OMP_WAIT_POLICY=PASSIVE`` (no spin): every parallel op wakes its threads from sleep, which dominates
  the many small ops of a cascade (a clip's 8-frame pyramid: the 21-row level 2.3 ms passive, 0.24 ms
  spinning) and slows the whole detector (2 cores, 2026-12-03: messi5 46 ms passive, 37 ms with 3,000 to
  30,000 spins; 8 Megamind frames 239 ms against 182–195 ms; a 1080p group photo 174 against 156–162).

A short spin (``GOMP_SPINCOUNT``) keeps the threads warm from one op to the next and lets them
sleep while OpenVINO runs.
"""

from __future__ import annotations

from collections.abc import Mapping

GATEWAY_OPENMP = {"GOMP_SPINCOUNT": "10000"}
OPERATOR_KNOBS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The gateway's wait policy, unless an operator has set one of their own (theirs wins)."""
    return {} if any(knob in environ for knob in OPERATOR_KNOBS) else dict(GATEWAY_OPENMP)
