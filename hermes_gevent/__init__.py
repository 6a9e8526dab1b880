"""hermes_gevent: a resilient WebSocket client made of gevent greenlets."""

from .backoff import Backoff
from .base import BaseClient
from .client import WebSocketClient
from .errors import (
    AnswerTooLarge,
    ConfigError,
    ConnectionClosed,
    ConnectionFailed,
    ConnectTimeout,
    ExtensionMismatch,
    HandshakeRejected,
    HermesError,
    PingTimeout,
    ProtocolError,
    ProxyError,
    ProxyRejected,
    QueueFull,
    SocksError,
    SubprotocolMismatch,
)
from .lifecycle import State
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AnswerTooLarge",
    "Backoff",
    "BaseClient",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectTimeout",
    "ExtensionMismatch",
    "HandshakeRejected",
    "HermesError",
    "PingTimeout",
    "ProtocolError",
    "ProxyError",
    "ProxyRejected",
    "QueueFull",
    "Settings",
    "SocksError",
    "State",
    "SubprotocolMismatch",
    "WebSocketClient",
]
