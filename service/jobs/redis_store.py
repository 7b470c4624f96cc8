"""Job state in Redis, shared by every gateway replica (FER_JOBS_REDIS_URL): the same ``JobTable`` as the
SQLite store, each guarded move one Lua script (atomic on the server), so a claim has one winner across
replicas and a cancel racing a finish has one winner too.

Layout under the prefix P: ``P:job:<id>`` a hash of the job's fields (a None is an absent field);
``P:state:<state>`` a sorted set per state (queued by creation time, finished by expiry, running by the
lease's deadline on the Redis server's clock); ``P:owner:<sha>`` the owner's jobs by creation time.
A running job's lease is renewed by its worker's heartbeat (``renew``); ``requeue_running`` takes back the
jobs whose lease lapsed (their worker died), from any replica. The scripts name their keys from the prefix:
one Redis server (or a primary with replicas), not a Redis Cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final, ParamSpec, TypeVar, get_args

import redis

from service.exceptions import JobStoreUnavailable
from service.jobs.states import FINISHED, INTERRUPTED, Job, State, sources_of

P = ParamSpec("P")
T = TypeVar("T")

# Retry-After of a 503 while Redis does not answer: redis-py reconnects on the next command, so a client may
# come back as soon as a restarted server or a failed-over primary takes connections (seconds, typically).
STORE_RETRY_AFTER_S: Final = 5
_STATES: Final[tuple[State, ...]] = get_args(State)
_TYPES: Final = {f.name: f.type for f in fields(Job)}
_NUMBERS: Final = {"int": int, "int | None": int, "float": float, "float | None": float}

# Oldest queued job → running, one attempt more, leased until the server's now + lease_s.
_CLAIM = """
local ids = redis.call('ZRANGE', KEYS[1], 0, 0)
if #ids == 0 then return false end
local id = ids[1]
local key = ARGV[1] .. id
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[3]), id)
redis.call('HSET', key, 'state', 'running', 'started_at', ARGV[2], 'run_seconds', '0')
redis.call('HINCRBY', key, 'attempts', 1)
return id
"""

# The lease of a job still run by this attempt, extended; 0 once it is not (cancelled, or taken over).
_RENEW = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[3]), ARGV[1])
return 1
"""

_PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'frames_done', ARGV[1], 'frames_expected', ARGV[2], 'run_seconds', ARGV[3])
return 1
"""

# ARGV: id, target, now, expires_at, error code, message, attempt ('' = any), state key prefix, sources...
_FINISH = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return 0 end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[7] then return 0 end
local allowed = false
for i = 9, #ARGV do if ARGV[i] == current then allowed = true end end
if not allowed then return 0 end
redis.call('ZREM', ARGV[8] .. current, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local started = redis.call('HGET', KEYS[1], 'started_at')
local run = 0
if started then run = tonumber(ARGV[3]) - tonumber(started) end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[3], 'expires_at', ARGV[4],
    'run_seconds', string.format('%.6f', run))
if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'error_code', ARGV[5], 'error_message', ARGV[6])
else
    redis.call('HDEL', KEYS[1], 'error_code', 'error_message')
end
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'created_at'), ARGV[1])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
redis.call('HSET', KEYS[1], 'state', 'queued', 'frames_done', '0', 'attempts', math.max(attempts - 1, 0))
return 1
"""

# Running jobs whose lease lapsed: back to the queue, or failed once out of attempts. KEYS: running,
# queued, failed. ARGV: job key prefix, max attempts, now, expires_at, error code, message.
_REQUEUE = """
local t = redis.call('TIME')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1e6)
local requeued, failed = 0, 0
for _, id in ipairs(ids) do
    local key = ARGV[1] .. id
    redis.call('ZREM', KEYS[1], id)
    if tonumber(redis.call('HGET', key, 'attempts') or '0') >= tonumber(ARGV[2]) then
        redis.call('ZADD', KEYS[3], ARGV[4], id)
        redis.call('HSET', key, 'state', 'failed', 'finished_at', ARGV[3], 'expires_at', ARGV[4],
            'error_code', ARGV[5], 'error_message', ARGV[6])
        failed = failed + 1
    else
        redis.call('ZADD', KEYS[2], redis.call('HGET', key, 'created_at'), id)
        redis.call('HSET', key, 'state', 'queued', 'frames_done', '0')
        requeued = requeued + 1
    end
end
return {requeued, failed}
"""

_DELETE = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
redis.call('ZREM', ARGV[1] .. 'state:' .. state, ARGV[2])
redis.call('ZREM', ARGV[1] .. 'owner:' .. redis.call('HGET', key, 'owner'), ARGV[2])
redis.call('DEL', key)
return 1
"""


def available(method: Callable[P, T]) -> Callable[P, T]:
    """Redis unreachable → the typed 503 (jobs_unavailable), never a bare 500."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise JobStoreUnavailable(
                "the job store (Redis) does not answer; retry later", retry_after_s=STORE_RETRY_AFTER_S
            ) from exc

    return guarded


def encode(job: Job) -> dict[str, str]:
    return {name: str(value) for name, value in vars(job).items() if value is not None}


def decode(row: dict[str, str]) -> Job:
    values: dict[str, Any] = {}
    for name, kind in _TYPES.items():
        raw = row.get(name)
        convert = _NUMBERS.get(str(kind))
        values[name] = convert(raw) if convert is not None and raw is not None else raw
    return Job(**values)


class RedisJobStore:
    """The job table in Redis; synchronous (redis-py), run off the event loop by ``AsyncJobStore``."""

    shared = True  # replicas share it: a job whose worker stopped renewing its lease is taken over

    def __init__(self, url: str, lease_s: float, prefix: str = "fer:jobs") -> None:
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=10.0, socket_connect_timeout=5.0
        )
        self._lease_s, self._prefix = lease_s, f"{prefix}:"
        script = self._redis.register_script
        self._claim, self._renew, self._progress = script(_CLAIM), script(_RENEW), script(_PROGRESS)
        self._finish, self._release, self._requeue = script(_FINISH), script(_RELEASE), script(_REQUEUE)
        self._delete = script(_DELETE)
        available(self._redis.ping)()  # fail at start, not at the first job

    def _job(self, job_id: str) -> str:
        return f"{self._prefix}job:{job_id}"

    def _state(self, state: State) -> str:
        return f"{self._prefix}state:{state}"

    def close(self) -> None:
        self._redis.close()

    @available
    def add(self, job: Job) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._job(job.id), mapping=encode(job))  # type: ignore[arg-type]
            pipe.zadd(self._state(job.state), {job.id: job.created_at})
            pipe.zadd(f"{self._prefix}owner:{job.owner}", {job.id: job.created_at})
            pipe.execute()

    @available
    def get(self, job_id: str) -> Job | None:
        row: dict[str, str] = self._redis.hgetall(self._job(job_id))  # type: ignore[assignment]
        return decode(row) if row else None

    def _many(self, ids: list[str]) -> list[Job]:
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self._job(job_id))
            rows: list[dict[str, str]] = pipe.execute()
        return [decode(row) for row in rows if row]  # one deleted meanwhile is left out

    @available
    def owned(self, owner: str, limit: int) -> list[Job]:
        ids: list[str] = self._redis.zrevrange(f"{self._prefix}owner:{owner}", 0, limit - 1)  # type: ignore[assignment]
        return self._many(ids)

    @available
    def queued_count(self) -> int:
        return int(self._redis.zcard(self._state("queued")))

    @available
    def counts(self) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for state in _STATES:
                pipe.zcard(self._state(state))
            sizes: list[int] = pipe.execute()
        return {state: size for state, size in zip(_STATES, sizes, strict=True) if size}

    @available
    def oldest_queued(self) -> float | None:
        first: list[tuple[str, float]] = self._redis.zrange(self._state("queued"), 0, 0, withscores=True)  # type: ignore[assignment]
        return float(first[0][1]) if first else None

    @available
    def claim(self, now: float) -> Job | None:
        assert sources_of("running") == ("queued",)  # the script takes from the queue only
        keys = [self._state("queued"), self._state("running")]
        job_id = self._claim(keys=keys, args=[f"{self._prefix}job:", repr(now), repr(self._lease_s)])
        return self.get(str(job_id)) if job_id else None

    @available
    def renew(self, job_id: str, attempt: int) -> bool:
        keys = [self._job(job_id), self._state("running")]
        return bool(self._renew(keys=keys, args=[job_id, str(attempt), repr(self._lease_s)]))

    @available
    def progress(
        self, job_id: str, done: int, expected: int, run_seconds: float, attempt: int | None = None
    ) -> None:
        guard = "" if attempt is None else str(attempt)
        self._progress(keys=[self._job(job_id)], args=[done, expected, repr(run_seconds), guard])

    @available
    def finish(
        self,
        job_id: str,
        state: State,
        now: float,
        retention_s: float,
        error: tuple[str, str] | None = None,
        attempt: int | None = None,
    ) -> bool:
        code, message = error or ("", "")
        guard = "" if attempt is None else str(attempt)
        head = [job_id, state, repr(now), repr(now + retention_s), code, message, guard]
        args = [*head, f"{self._prefix}state:", *sources_of(state)]
        return bool(self._finish(keys=[self._job(job_id), self._state(state)], args=args))

    @available
    def requeue_running(self, max_attempts: int, now: float, retention_s: float) -> tuple[int, int]:
        """Running jobs whose lease lapsed (their worker died) back to the queue, or failed once out of
        attempts. Returns (requeued, failed)."""
        keys = [self._state("running"), self._state("queued"), self._state("failed")]
        code, message = INTERRUPTED
        args = [f"{self._prefix}job:", str(max_attempts), repr(now), repr(now + retention_s), code, message]
        requeued, failed = self._requeue(keys=keys, args=args)
        return int(requeued), int(failed)

    @available
    def release(self, job_id: str) -> None:
        keys = [self._job(job_id), self._state("running"), self._state("queued")]
        self._release(keys=keys, args=[job_id])

    @available
    def expired(self, now: float) -> list[Job]:
        ids: list[str] = []
        for state in sorted(FINISHED):
            ids += self._redis.zrangebyscore(self._state(state), "-inf", now)  # type: ignore[arg-type]
        return self._many(ids)

    @available
    def delete(self, job_id: str) -> None:
        self._delete(keys=[], args=[self._prefix, job_id])
