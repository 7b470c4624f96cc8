"""A small typed client for the FER service: sync and async, retries on 429/503 honouring Retry-After.

from fer_client import FerClient
with FerClient("http://127.0.0.1:8080") as fer:
    result = fer.predict(Path("photo.jpg"))
"""

from fer_client.client import AsyncFerClient, FerClient
from fer_client.config import ClientSettings
from fer_client.errors import FerError, FerTimeout, FerUnreachable

__all__ = ["AsyncFerClient", "ClientSettings", "FerClient", "FerError", "FerTimeout", "FerUnreachable"]
