"""Raw HTTP/1.1 over asyncio streams, for requests no polite client sends: trickled, oversized, from chosen addresses."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    """A response's status line, headers and body (as far as it was read)."""

    status: int
    headers: dict[str, str]
    body: bytes


def host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def connect(
    base_url: str, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the server, from `source` (any 127.x.y.z address works on Linux loopback)."""
    host, port = host_port(base_url)
    return await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)


def request_head(
    method: str, path: str, headers: dict[str, str] | None = None, *, content_length: int | None = None
) -> bytes:
    """The request line and headers; `content_length=None` with no Content-Length header means chunked."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    given = {k.lower(): v for k, v in (headers or {}).items()}
    for name, value in given.items():
        lines.append(f"{name}: {value}")
    if content_length is not None:
        lines.append(f"content-length: {content_length}")
    elif "content-length" not in given:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one response (status, headers, Content-Length body)."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return RawResponse(status, headers, body)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


async def upload_until_answered(
    base_url: str, path: str, total: int, *, chunk: int = 64 * 1024, headers: dict[str, str] | None = None
) -> tuple[RawResponse | None, int]:
    """Stream a chunked body of up to `total` bytes while watching for the answer; stop at the answer.

    Returns the response (None if the server hung up without one) and how many body bytes were sent.
    """
    reader, writer = await connect(base_url)
    sent = 0
    writer.write(request_head("POST", path, headers))
    answer = asyncio.create_task(read_response(reader))
    data = b"x" * chunk
    try:
        while sent < total and not answer.done():
            writer.write(f"{chunk:x}\r\n".encode() + data + b"\r\n")
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drain, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():  # answered while the server no longer reads: stop sending
                drain.cancel()
                break
            if drain.exception() is not None:  # the server hung up
                break
            sent += chunk
        try:
            return await asyncio.wait_for(answer, 10.0), sent
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None, sent
    finally:
        answer.cancel()
        await close(writer)
