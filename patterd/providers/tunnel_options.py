"""Tunnel provider options: `tunnel: {type: cloudflared}` and `{type: static}`, validated as config is loaded."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from patterd.providers.spec import ProviderOptions, getenv

INSTALL_HELP = (
    "install cloudflared: on Debian/Ubuntu add Cloudflare's apt repository and run "
    "`apt-get install cloudflared`, or download the cloudflared-linux-<arch> binary from the "
    "GitHub releases of cloudflare/cloudflared; set `tunnel: {type: cloudflared, binary: /path/to/cloudflared}` "
    "if it is not on PATH, or use `tunnel: {type: static, hostname: your.public.host}` behind your own proxy"
)


def _bare_host(value: str) -> str:
    """host[:port] from a hostname that may carry an https:// prefix; refuses paths."""
    text = value.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"hostname {value!r} has scheme {parts.scheme!r}; expected host[:port]")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"hostname {value!r} has a path; expected host[:port]")
        text = parts.netloc
    text = text.rstrip("/")
    if not text or "/" in text or " " in text:
        raise ValueError(f"hostname {value!r} is not a host[:port]")
    return text


class CloudflaredOptions(ProviderOptions):
    """`tunnel: {type: cloudflared}`: a quick tunnel, or a named one with `token` and `hostname`."""

    binary: str = "cloudflared"  # name on PATH or a path
    token: SecretStr | None = None  # named tunnel token (write `token: ${TUNNEL_TOKEN}`)
    hostname: str | None = None  # the named tunnel's public hostname
    extra_args: tuple[str, ...] = ()  # appended to `cloudflared tunnel ...`
    restart_backoff_secs: float = Field(default=1.0, gt=0)  # first restart delay, doubling to 60 s
    start_timeout_secs: float = Field(default=30.0, gt=0)  # how long to wait for the tunnel at start

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else _bare_host(value)

    @model_validator(mode="after")
    def _named_needs_both(self) -> CloudflaredOptions:
        if self.token is not None and not self.hostname:
            raise ValueError("a named cloudflared tunnel (token set) needs `hostname`, its public hostname")
        if self.hostname and self.token is None:
            raise ValueError(
                "cloudflared `hostname` is only for a named tunnel and needs `token`; "
                "omit both for a quick tunnel, or use `type: static` for a host you route yourself"
            )
        return self

    @model_validator(mode="after")
    def _installed(self, info: ValidationInfo) -> CloudflaredOptions:
        # A config file being loaded (the loader passes a context) must name a binary this machine
        # has, so `patterd check` and start say so with the line, instead of start failing later;
        # options built in code (tests, tools) are not tied to this machine.
        if info.context is not None and shutil.which(self.binary, path=getenv("PATH")) is None:
            raise ValueError(
                f"cloudflared binary {self.binary!r} not found or not executable; {INSTALL_HELP}"
            )
        return self


class StaticOptions(ProviderOptions):
    """`tunnel: {type: static, hostname: ...}`: the public host is routed here by something else."""

    hostname: str

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return _bare_host(value)
