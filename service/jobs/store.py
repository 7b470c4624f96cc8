"""Job state behind one interface (``JobTable``), kept in SQLite by default (the standard library's sqlite3:
one file, one connection, every call in a thread) or in Redis (``service/jobs/redis_store.py``).

Each state change is one guarded UPDATE (``WHERE state IN (the states it may come from)``), so a race (a
cancel while the worker finishes) has exactly one winner, and the loser learns it from the row count.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from service.jobs.states import INTERRUPTED, Job, State, sources_of

T = TypeVar("T")

_COLUMNS = tuple(f.name for f in fields(Job))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    container TEXT NOT NULL, upload_bytes INTEGER NOT NULL, query TEXT NOT NULL,
    started_at REAL, finished_at REAL, expires_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    frames_done INTEGER NOT NULL DEFAULT 0, frames_expected INTEGER NOT NULL DEFAULT 0,
    run_seconds REAL NOT NULL DEFAULT 0, error_code TEXT, error_message TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at);
"""


class JobTable(Protocol):
    """What the runner and the routes need of the job state; both stores make each move one guarded,
    atomic step (``sources_of``), so a race has one winner and the loser learns it from the answer."""

    # True when several gateway processes share the table (Redis): a running job is then taken over by
    # another process once its lease lapses; False (SQLite) when only a restart of this process resumes it.
    shared: bool

    def close(self) -> None: ...
    def add(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def owned(self, owner: str, limit: int) -> list[Job]: ...
    def queued_count(self) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def oldest_queued(self) -> float | None: ...
    def claim(self, now: float) -> Job | None: ...
    def renew(self, job_id: str, attempt: int) -> bool: ...

    def progress(
        self, job_id: str, done: int, expected: int, run_seconds: float, attempt: int | None = None
    ) -> None: ...
    def finish(
        self,
        job_id: str,
        state: State,
        now: float,
        retention_s: float,
        error: tuple[str, str] | None = None,
        attempt: int | None = None,
    ) -> bool: ...
    def requeue_running(self, max_attempts: int, now: float, retention_s: float) -> tuple[int, int]: ...
    def release(self, job_id: str) -> None: ...
    def expired(self, now: float) -> list[Job]: ...
    def delete(self, job_id: str) -> None: ...


def _placeholders(states: tuple[State, ...]) -> str:
    return ",".join("?" for _ in states)


class JobStore:
    """The job table in SQLite. Synchronous; ``AsyncJobStore`` runs it off the event loop."""

    shared = False  # one process owns the file: its running jobs are resumed when it starts again

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the threads, serialised by a lock; WAL lets a reader never block.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs {sql}", args).fetchall()
        return [Job(*row) for row in rows]

    def add(self, job: Job) -> None:
        values = tuple(getattr(job, name) for name in _COLUMNS)
        self._run(f"INSERT INTO jobs ({','.join(_COLUMNS)}) VALUES ({_placeholders(values)})", values)

    def get(self, job_id: str) -> Job | None:
        found = self._rows("WHERE id = ?", (job_id,))
        return found[0] if found else None

    def owned(self, owner: str, limit: int) -> list[Job]:
        return self._rows("WHERE owner = ? ORDER BY created_at DESC LIMIT ?", (owner, limit))

    def queued_count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return dict(self._run("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def oldest_queued(self) -> float | None:
        value = self._run("SELECT MIN(created_at) FROM jobs WHERE state = 'queued'").fetchone()[0]
        return float(value) if value is not None else None

    def claim(self, now: float) -> Job | None:
        """The oldest queued job, now running (one attempt more); None when nothing waits."""
        sources = sources_of("running")
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1, run_seconds = 0 "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1) "
                f"AND state IN ({_placeholders(sources)}) RETURNING id",
                (now, *sources),
            ).fetchone()
        return self.get(row[0]) if row else None

    def renew(self, job_id: str, attempt: int) -> bool:
        """Whether this attempt still runs the job (False once it was cancelled: the worker stops)."""
        found = self._run(
            "SELECT 1 FROM jobs WHERE id = ? AND state = 'running' AND attempts = ?", (job_id, attempt)
        )
        return found.fetchone() is not None

    def progress(
        self, job_id: str, done: int, expected: int, run_seconds: float, attempt: int | None = None
    ) -> None:
        self._run(
            "UPDATE jobs SET frames_done = ?, frames_expected = ?, run_seconds = ? "
            "WHERE id = ? AND state = 'running' AND (? IS NULL OR attempts = ?)",
            (done, expected, run_seconds, job_id, attempt, attempt),
        )

    def finish(
        self,
        job_id: str,
        state: State,
        now: float,
        retention_s: float,
        error: tuple[str, str] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Move to a finished state if the job may (False: it already is, e.g. cancelled meanwhile, or, with
        ``attempt``, another attempt runs it now)."""
        sources = sources_of(state)
        code, message = error or (None, None)
        cursor = self._run(
            "UPDATE jobs SET state = ?, finished_at = ?, expires_at = ?, error_code = ?, error_message = ?, "
            f"run_seconds = CASE WHEN started_at IS NULL THEN 0 ELSE ? - started_at END "
            f"WHERE id = ? AND state IN ({_placeholders(sources)}) AND (? IS NULL OR attempts = ?)",
            (state, now, now + retention_s, code, message, now, job_id, *sources, attempt, attempt),
        )
        return cursor.rowcount == 1

    def requeue_running(self, max_attempts: int, now: float, retention_s: float) -> tuple[int, int]:
        """After a crash: running jobs go back to the queue, or fail once out of attempts. Returns
        (requeued, failed)."""
        code, message = INTERRUPTED
        with self._lock:
            failed = self._db.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, expires_at = ?, error_code = ?, "
                "error_message = ? WHERE state = 'running' AND attempts >= ?",
                (now, now + retention_s, code, message, max_attempts),
            ).rowcount
            requeued = self._db.execute(
                "UPDATE jobs SET state = 'queued', frames_done = 0 WHERE state = 'running'"
            ).rowcount
        return requeued, failed

    def release(self, job_id: str) -> None:
        """A running job back to the queue because its gateway stops cleanly: the attempt is not counted."""
        self._run(
            "UPDATE jobs SET state = 'queued', frames_done = 0, attempts = MAX(attempts - 1, 0) "
            "WHERE id = ? AND state = 'running'",
            (job_id,),
        )

    def expired(self, now: float) -> list[Job]:
        return self._rows("WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

    def delete(self, job_id: str) -> None:
        self._run("DELETE FROM jobs WHERE id = ?", (job_id,))


class AsyncJobStore:
    """The store's calls on a thread of their own, so SQLite's disk waits never stall the event loop."""

    def __init__(self, store: JobTable) -> None:
        self.sync = store

    async def call(self, method: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(method, *args)
