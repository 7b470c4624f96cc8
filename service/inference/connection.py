"""One tritonclient client shared by concurrent calls, and closed only once no call uses it any more."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

logger = logging.getLogger(__name__)


class SharedClient:
    """A client and the number of calls using it.

    When Triton goes away the first failing call retires the client; it is closed when its last call ends.
    Closing it at once would cancel every other call still on it (grpc.aio cancels a closed channel's
    calls), and those requests would end in a cancellation, i.e. a 500, instead of their own clean 503.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._users = 0
        self._retired = False
        self._closed = False

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Any]:
        self._users += 1
        try:
            yield self.client
        finally:
            self._users -= 1
            if self._retired and self._users == 0:
                await self._close()

    async def retire(self) -> None:
        self._retired = True
        if self._users == 0:
            await self._close()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.client.close()
        except Exception:  # closing a broken channel may itself fail; nothing to do about it
            logger.debug("closing the Triton client failed", exc_info=True)
