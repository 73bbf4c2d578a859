"""The config loader's top-level keys: carrier (from its CarrierFacts), webhook_url, tunnel, persist, server checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from patterd.config.load_base import LoaderBase, YamlPath, _type_name
from patterd.config.model import ProviderSection, ServerConfig, is_loopback
from patterd.config.persist import DatabaseURL, is_database_url, parse_database_url, resolve_persist
from patterd.errors import ConfigIssue, PluginError
from patterd.providers.spec import CarrierFacts

_HOST_PORT = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"(?::(\d{1,5}))?$"
)


class TopLevel(LoaderBase):
    """Validates the top-level keys that are not plain sections; issues go to the loader's list."""

    def carrier_facts(self, carrier_type: Any) -> CarrierFacts | None:
        """What the registry says about carrier `carrier_type` (None: unknown, reported elsewhere)."""
        if not isinstance(carrier_type, str):
            return None
        try:
            return self.registry.get("carrier", carrier_type).carrier
        except PluginError:
            return None

    def default_carrier(self) -> ProviderSection | None:
        """No `carrier:` means the carrier whose spec says `default` (the built-in browser phone)."""
        name = self.registry.default_carrier()
        if name is None:
            self.issue(("carrier",), "no carrier is configured and no installed carrier is a default one")
            return None
        try:
            spec = self.registry.get("carrier", name)
            options = spec.options.model_validate({}, context=self.context)
        except (PluginError, ValidationError) as exc:
            message = f"no carrier is configured and the default carrier {name!r} is unusable: {exc}"
            self.issue(("carrier",), message)
            return None
        return ProviderSection(kind="carrier", type=name, options=options, spec=spec, line=None)

    def check_dashboard_token(self, server: ServerConfig | None, raw: Any) -> None:
        """A dashboard beyond loopback needs a token; judged from the raw keys if the section is invalid."""
        if server is not None:
            host, dashboard, token = server.host, server.dashboard, server.dashboard_token is not None
        else:
            raw = raw if isinstance(raw, dict) else {}
            host = raw.get("host") or self.environ.get("PATTER_BIND_HOST", "").strip() or "127.0.0.1"
            dashboard = raw.get("dashboard", True) not in (False, "false", "off", "no", 0)
            token = bool(raw.get("dashboard_token"))
            if not isinstance(host, str) or any(issue.path == "server.host" for issue in self.issues):
                return  # an invalid host is reported on its own
        if dashboard and not token and not is_loopback(host):
            raw_host = raw.get("host") if isinstance(raw, dict) else None
            origin = " from $PATTER_BIND_HOST" if raw_host is None and host != "127.0.0.1" else ""
            message = (
                "server.dashboard_token is required when server.host is not loopback "
                f"(host is {host!r}{origin} and the dashboard is on)"
            )
            # no `server:` in the file (the host came from the environment): no line to point at
            self.issues.append(ConfigIssue("server", message, self.doc.lines.get(("server",))))

    def check_reachable(
        self, carrier_type: Any, facts: CarrierFacts | None, raw_url: Any, raw_tunnel: Any
    ) -> None:
        """Carriers that call back over the internet: without webhook_url or a tunnel every call fails."""
        if facts is None or not facts.public_callbacks or raw_tunnel not in (None, False):
            return
        if raw_url not in (None, ""):
            return  # given (an invalid one is reported by webhook_url)
        vendor = facts.display_name(carrier_type)
        line = self.doc.line(("webhook_url",) if raw_url == "" else ("carrier", "type"))
        self.issue(
            ("webhook_url",),
            f"required when carrier is {carrier_type}: the public host[:port] {vendor} reaches for its "
            "webhooks and media streams (e.g. gw.example.com), or set `tunnel: true` to have patterd "
            "open a cloudflared tunnel, or `tunnel: {type: static, hostname: ...}`",
            line,
        )

    def webhook_url(self, raw: Any) -> tuple[str | None, str]:
        path: YamlPath = ("webhook_url",)
        if raw is None or raw == "":
            return None, "https"
        if not isinstance(raw, str):
            self.issue(path, f"expected a host[:port] string, got {_type_name(raw)}")
            return None, "https"
        text = raw.strip()
        scheme = "https"
        match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
        if match:
            scheme = match.group(1).lower()
            if scheme not in ("http", "https"):
                self.issue(
                    path,
                    f"scheme {scheme!r} not supported; give host[:port] (https implied) or an http(s):// URL",
                )
                return None, "https"
            text = text[match.end() :]
        text = text.rstrip("/")
        host = _HOST_PORT.match(text)
        if not host or (host.group(1) and not 0 < int(host.group(1)) < 65536):
            self.issue(
                path, f"expected a public host[:port] without a path, like abc.example.com, got {raw!r}"
            )
            return None, "https"
        return text, scheme

    def tunnel(self, raw: Any) -> ProviderSection | None:
        if raw is None or raw is False:
            return None
        if raw is True:
            raw = {"type": "cloudflared"}
        elif isinstance(raw, str):
            raw = {"type": raw}
        return self.provider("tunnel", raw, ("tunnel",))

    def persist(self, raw: Any) -> Path | DatabaseURL | None:
        if raw is not None and not isinstance(raw, bool | str):
            self.issue(
                ("persist",),
                f"expected true, false, a directory path or a postgresql:// URL, got {_type_name(raw)}",
            )
            return None
        if isinstance(raw, str) and is_database_url(raw):
            try:
                return parse_database_url(raw)
            except ValueError as exc:
                self.issue(("persist",), str(exc))
                return None
        path = resolve_persist(raw, self.environ)
        if path is not None and not path.is_absolute() and self.base_dir is not None and raw is not None:
            path = self.base_dir / path  # a path written in the file is relative to the file
        if path is not None and path.exists() and not path.is_dir():
            # the store would give up on its first write and keep no records at all
            problem = f"{str(path)!r} exists and is not a directory; call records need a directory"
            env_dir = self.environ.get("PATTER_LOG_DIR", "").strip()
            if raw is not None:
                self.issue(("persist",), problem)
            else:  # not in the file: say where the path came from instead of a line
                origin = f"$PATTER_LOG_DIR={env_dir!r}" if env_dir else "the default record directory"
                self.issues.append(ConfigIssue("persist", f"{origin}: {problem}"))
        return path
