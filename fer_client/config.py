"""The client's settings: arguments win, then environment variables, then these defaults."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """Client settings (``FER_CLIENT_*``; the API key is ``FER_API_KEY``, shared with other tools)."""

    model_config = SettingsConfigDict(env_prefix="FER_CLIENT_", env_file=None, extra="ignore", frozen=True)

    url: str = Field("http://127.0.0.1:8080", description="Base URL of the FER gateway.")
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("FER_API_KEY", "api_key"),
        description="Sent as `Authorization: Bearer <key>` when set (FER_API_KEY).",
    )
    timeout_s: float = Field(
        120.0, gt=0, description="Deadline of one HTTP request (a clip's analysis can take seconds)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Deadline for opening the connection.")
    max_retries: int = Field(3, ge=0, description="Retries of a request answered 429 or 503.")
    max_retry_after_s: float = Field(
        30.0, ge=0, description="Longest wait honoured from a Retry-After header; longer waits give up."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="First wait when a 429/503 carries no Retry-After; doubled on each retry."
    )
