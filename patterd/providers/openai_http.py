"""What `tts.openai` and `stt.whisper` share on OpenAI's HTTP API: auth header, error mapping, the models probe."""

from __future__ import annotations

import aiohttp
from pydantic import SecretStr

from patterd.errors import ProviderConnectionError, ProviderError, error_for_status
from patterd.protocols.openai_audio import error_message

OPENAI_HOST = "api.openai.com"
OPENAI_URL = "https://api.openai.com/v1"
KEY_VARIABLE = "OPENAI_API_KEY"


def auth_headers(api_key: SecretStr | None) -> dict[str, str]:
    """Bearer auth when a key is set (compatible local servers may need none)."""
    return {} if api_key is None else {"Authorization": f"Bearer {api_key.get_secret_value()}"}


def status_error(status: int, body: bytes, url: str, provider: str) -> ProviderError:
    """The ProviderError for a non-200 answer with the API's own message; 401/403 name the key's variable."""
    return error_for_status(
        status,
        f"{url}: {error_message(body, status)}",
        provider=provider,
        auth_hint=f"check api_key / {KEY_VARIABLE}",
    )


def connection_error(url: str, exc: BaseException, provider: str) -> ProviderConnectionError:
    """A network failure or a cut answer as a retryable ProviderError."""
    return ProviderConnectionError(f"{url}: {type(exc).__name__}: {exc or 'timed out'}", provider=provider)


def client_timeout(secs: float) -> aiohttp.ClientTimeout:
    """Connect and between-reads limits; no total (a long synthesis streams for as long as it speaks)."""
    return aiohttp.ClientTimeout(total=None, connect=secs, sock_read=secs)


async def probe(http: aiohttp.ClientSession, base: str, api_key: SecretStr | None, provider: str) -> None:
    """`GET {base}/models` with the key: the cheap authenticated request `patterd check --probe` makes."""
    url = f"{base}/models"
    try:
        async with http.get(url, headers=auth_headers(api_key)) as response:
            if response.status != 200:
                raise status_error(response.status, await response.read(), url, provider)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise connection_error(url, exc, provider) from exc
