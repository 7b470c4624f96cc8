"""A job's life as data: its states, the moves allowed between them, and its progress. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: Final[frozenset[State]] = frozenset({"succeeded", "failed", "cancelled"})

# Where each state may go. running → queued: its gateway died and a restart took it back (a retry).
MOVES: Final[dict[State, frozenset[State]]] = {
    "queued": frozenset({"running", "cancelled"}),
    "running": frozenset({"queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

# The recorded error of a job whose gateway died more often than FER_JOBS_MAX_ATTEMPTS allows.
INTERRUPTED: Final = (
    "job_interrupted",
    "the job was interrupted too often (the gateway stopped while running it)",
)


class IllegalMove(Exception):
    """A state change the machine does not allow (a bug, or a race lost: the caller re-reads)."""


def check_move(current: State, target: State) -> None:
    if target not in MOVES[current]:
        raise IllegalMove(f"a {current} job cannot become {target}")


def sources_of(target: State) -> tuple[State, ...]:
    """The states a job may be in to move to ``target`` (for a guarded UPDATE)."""
    return tuple(state for state, targets in MOVES.items() if target in targets)


@dataclass(frozen=True)
class Job:
    """One row of the job table."""

    id: str
    owner: str  # SHA-256 of the API key that created it ("" when the gateway needs no key)
    state: State
    created_at: float
    container: str
    upload_bytes: int
    query: str  # the PredictQuery as JSON
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    attempts: int = 0
    frames_done: int = 0
    frames_expected: int = 0
    run_seconds: float = 0.0  # time spent running in the current attempt (progress and ETA)
    error_code: str | None = None
    error_message: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class Progress:
    frames_done: int
    frames_expected: int
    percent: float
    elapsed_s: float
    eta_s: float | None


def progress_of(job: Job, now: float) -> Progress:
    """Frames analysed over expected; the ETA extrapolates the rate so far (none before a frame is done)."""
    elapsed = (now - job.started_at) if job.state == "running" and job.started_at else job.run_seconds
    expected = max(job.frames_expected, job.frames_done)
    if job.state == "succeeded":
        expected = job.frames_done
    share = job.frames_done / expected if expected else (1.0 if job.state == "succeeded" else 0.0)
    eta = None
    if job.state == "running" and job.frames_done > 0:
        eta = max(0.0, elapsed / job.frames_done * (expected - job.frames_done))
    elif job.state == "succeeded":
        eta = 0.0
    return Progress(
        job.frames_done, expected, round(100.0 * share, 2), round(elapsed, 3), eta and round(eta, 3)
    )
