"""Which job store a gateway uses: SQLite in FER_JOBS_DIR by default, Redis when FER_JOBS_REDIS_URL is set."""

from __future__ import annotations

from service.config import Settings
from service.jobs.redis_store import RedisJobStore
from service.jobs.store import JobStore, JobTable


def open_store(settings: Settings) -> JobTable:
    if settings.jobs_redis_url:
        return RedisJobStore(settings.jobs_redis_url, settings.jobs_lease_s, settings.jobs_redis_prefix)
    return JobStore(settings.jobs_dir / "jobs.sqlite3")
