"""The config file: typed models, YAML loading with line numbers, interpolation, JSON Schema."""

from patterd.config.load import load_config, load_config_text
from patterd.config.model import (
    AgentConfig,
    Config,
    EndCallTool,
    LoggingConfig,
    ProviderSection,
    ServerConfig,
    ToolConfig,
    TransferCallTool,
    WebhookTool,
)
from patterd.config.persist import resolve_persist
from patterd.config.schema import json_schema

__all__ = [
    "AgentConfig",
    "Config",
    "EndCallTool",
    "LoggingConfig",
    "ProviderSection",
    "ServerConfig",
    "ToolConfig",
    "TransferCallTool",
    "WebhookTool",
    "json_schema",
    "load_config",
    "load_config_text",
    "resolve_persist",
]
