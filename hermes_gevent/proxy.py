"""Proxies (the PROXY setting): which proxy a URL goes through, and the tunnel through it.

``PROXY`` is True (default: from the environment, as websockets reads it), None or False
(never), or a proxy URL: ``http://[user:pass@]host:port`` (HTTP CONNECT, Basic auth when
credentials are given), ``socks5://``, ``socks5h://`` (the proxy resolves names) or
``socks4://`` (SOCKS needs the ``hermes_gevent[socks]`` extra: python-socks).

From the environment: ``https_proxy`` for wss://, ``http_proxy`` for ws://, then
``all_proxy`` (the lower-case name wins over the upper-case one); ``no_proxy`` lists host
names, ``.domain`` suffixes, IP addresses, CIDR ranges, ``host:port`` and ``*``.

``open_tunnel`` connects to the proxy on a gevent socket (cooperative whether or not the
process is patched) and asks it for a tunnel to the server; the caller's timer bounds it
(CONNECT_TIMEOUT), and TLS to the server then runs inside the tunnel (transport.py).
Proxy credentials never appear in an exception message: a proxy is named by
``display`` (scheme://host:port).
"""

from __future__ import annotations

import base64
import importlib
import ipaddress
import os
import socket as _stdlib_socket
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union
from urllib.parse import quote, unquote, urlsplit

import gevent.socket

from .errors import ConfigError, ConnectionFailed, ProxyRejected, SocksError
from .fairness import new_turns, take_turn
from .upgrade import UpgradeAnswer, status_of

__all__ = ["CONNECT_CHUNK", "HTTP_SCHEMES", "ProxySetting", "ProxyURL", "SOCKS_EXTRA", "SOCKS_SCHEMES", "basic_credentials", "shown_proxy",
           "check_proxy_setting", "environment_proxy", "is_bypassed", "normalize_proxy_setting", "open_tunnel",
           "parse_proxy", "proxy_for"]

#: What the PROXY setting may be: True (the environment), None/False (never), a proxy URL.
ProxySetting = Union[bool, str, None]
HTTP_SCHEMES = ("http",)
SOCKS_SCHEMES = ("socks5", "socks5h", "socks4", "socks4a")
#: The extra that brings python-socks, named by the ConfigError when it is missing.
SOCKS_EXTRA = "hermes_gevent[socks]"
#: The proxy's CONNECT answer is read this much at a time.
CONNECT_CHUNK = 4096
_DEFAULT_PORTS = {"http": 80, "socks5": 1080, "socks5h": 1080, "socks4": 1080, "socks4a": 1080}


@dataclass(frozen=True)
class ProxyURL:
    """A parsed proxy URL. ``display`` names it without credentials (for logs, status(), errors)."""

    scheme: str
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = None

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The proxy URL again, credentials included (for the connector; never to be shown)."""
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            if self.password is not None:
                userinfo += ":" + quote(self.password, safe="")
            userinfo += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{userinfo}{host}:{self.port}"

    @property
    def socks(self) -> bool:
        return self.scheme in SOCKS_SCHEMES

    def __repr__(self) -> str:  # never the password, even in a traceback's locals
        return f"ProxyURL({self.display!r}, user={'yes' if self.username is not None else 'no'})"


def shown_proxy(url: str) -> str:
    """A proxy URL to show: everything before the last "@" after the scheme is credentials,
    whatever characters the password holds (urlsplit stops at an unencoded / # ?)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, sep, rest = "", "", url
    return scheme + sep + ("***@" + rest.rpartition("@")[2] if "@" in rest else rest)


def parse_proxy(url: str, name: str = "PROXY") -> ProxyURL:
    """The proxy a URL names; ConfigError (naming ``name``, without the password) otherwise.
    A URL without a scheme is an HTTP proxy, as curl reads it."""
    if "://" not in url:
        url = f"http://{url}"
    shown = shown_proxy(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} is not a valid proxy URL: {shown} (check its port, and percent-encode "
                          "/ # @ : in a password).") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"{name} must be an http://, socks5://, socks5h:// or socks4:// URL, got {shown}.")
    if not parts.hostname:
        raise ConfigError(f"{name} has no host name: {shown}.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be scheme://[user:password@]host:port, without a path: {shown}.")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None and not scheme.startswith("socks4"):
        password = ""  # "user@host": an empty password, as curl sends it
    if scheme.startswith("socks4") and password:
        raise ConfigError(f"{name}: SOCKS4 has a user id and no password: {shown}.")
    return ProxyURL(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], username, password)


def _python_socks() -> Any:
    """python-socks' connector factory, or ConfigError naming the extra."""
    try:
        return importlib.import_module("python_socks._connectors.factory_sync")
    except ImportError:
        raise ConfigError(f"a SOCKS proxy needs python-socks: pip install '{SOCKS_EXTRA}'.") from None


_WORDS: dict[str, ProxySetting] = {"true": True, "1": True, "yes": True, "on": True,
                                   "false": None, "0": None, "no": None, "off": None, "none": None, "": None}


def normalize_proxy_setting(value: Any) -> ProxySetting:
    """PROXY as True, None or a URL: False is None, and a config file's words count as
    themselves ("true", "false", "none", "off", "" ...: no host is called so)."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    if not isinstance(value, str):
        raise ConfigError(f"PROXY must be True (from the environment), None or False (never), or a proxy URL; "
                          f"got {type(value).__name__}.")
    word = value.strip().lower()
    return _WORDS[word] if word in _WORDS else value.strip()


def check_proxy_setting(value: Any) -> None:
    """ConfigError unless ``value`` is a valid PROXY (a SOCKS URL needs python-socks)."""
    setting = normalize_proxy_setting(value)
    if isinstance(setting, str) and parse_proxy(setting).socks:
        _python_socks()


def proxy_for(setting: ProxySetting, host: str, port: int, secure: bool,
              environ: Optional[Mapping[str, str]] = None) -> Optional[ProxyURL]:
    """The proxy a connection to ``host:port`` goes through under ``setting``, or None."""
    normal = normalize_proxy_setting(setting)
    if normal is None or normal is False:
        return None
    if normal is True:
        found = environment_proxy(host, port, secure, os.environ if environ is None else environ)
        if found is None:
            return None
        name, url = found
        proxy = parse_proxy(url, name)
    else:
        proxy = parse_proxy(normal)
    if proxy.socks:
        _python_socks()
    return proxy


def _variable(environ: Mapping[str, str], name: str) -> Optional[tuple[str, str]]:
    """(the variable's name, its value) - the lower-case one wins, an empty one counts as unset -
    or None. In a CGI request (REQUEST_METHOD set) HTTP_PROXY may come from the request's
    "Proxy:" header (httpoxy): it is ignored there, as urllib does."""
    for key in (name, name.upper()):
        if key == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
            continue
        value = environ.get(key, "").strip()
        if value:
            return key, value
    return None


def environment_proxy(host: str, port: int, secure: bool, environ: Mapping[str, str]) -> Optional[tuple[str, str]]:
    """(variable name, proxy URL) the environment gives a connection to ``host:port``, or None."""
    bypass = _variable(environ, "no_proxy")
    if bypass is not None and is_bypassed(host, port, bypass[1]):
        return None
    for name in ("https_proxy" if secure else "http_proxy", "all_proxy"):
        found = _variable(environ, name)
        if found is not None:
            return found
    return None


def is_bypassed(host: str, port: int, no_proxy: str) -> bool:
    """True when ``no_proxy`` (comma- or space-separated) covers ``host:port``: ``*``, a host
    name (its subdomains too), ``.domain``, an IP address, a CIDR range, any of them with ``:port``."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address: Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.replace(",", " ").split():
        entry = entry.lower()
        if entry == "*":
            return True
        entry_port: Optional[str] = None
        if entry.startswith("["):  # [v6] or [v6]:port
            inside, _, after = entry[1:].partition("]")
            entry, entry_port = inside, after[1:] if after.startswith(":") else None
        elif entry.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
            entry, entry_port = entry.split(":")
        if entry_port is not None and entry_port != str(port):
            continue
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        try:
            entry_address = ipaddress.ip_address(entry)
        except ValueError:
            entry_address = None
        if entry_address is not None:
            if address == entry_address:
                return True
            continue
        name = entry.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def open_tunnel(proxy: ProxyURL, host: str, port: int) -> gevent.socket.socket:
    """A gevent socket to the proxy, through which the stream now reaches ``host:port``.
    The caller bounds the time (its gevent.Timeout); the socket is closed on any failure."""
    sock = gevent.socket.create_connection((proxy.host, proxy.port))
    try:
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
        if proxy.socks:
            _socks_tunnel(sock, proxy, host, port)
        else:
            _http_tunnel(sock, proxy, host, port)
        return sock
    except BaseException:
        sock.close()
        raise


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def basic_credentials(proxy: ProxyURL) -> Optional[str]:
    """The Proxy-Authorization value for ``proxy``'s credentials (None without any)."""
    if proxy.username is None:
        return None
    pair = f"{proxy.username}:{proxy.password or ''}".encode("utf-8")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _http_tunnel(sock: gevent.socket.socket, proxy: ProxyURL, host: str, port: int) -> None:
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    credentials = basic_credentials(proxy)
    if credentials is not None:
        lines.append(f"Proxy-Authorization: {credentials}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    answer = UpgradeAnswer()
    turns = new_turns()
    while True:
        chunk = sock.recv(CONNECT_CHUNK)
        if not chunk:
            raise ConnectionFailed(f"proxy {proxy.display} closed the connection before answering CONNECT")
        done = answer.feed(chunk)
        if done is not None:
            break
        take_turn(turns)
    head, rest = done
    status, reason = status_of(head)
    if status is None:
        raise ProxyRejected(proxy.display, 0, "(not an HTTP answer: is it an HTTP proxy?)")
    if not 200 <= status < 300:
        raise ProxyRejected(proxy.display, status, reason)
    if rest:
        # Nothing may come through the tunnel before we speak: the bytes would be lost to the upgrade.
        raise ConnectionFailed(f"proxy {proxy.display} sent data after its CONNECT answer")


class _GeventResolver:
    """python-socks' resolver interface on gevent's resolver (cooperative when unpatched)."""

    def resolve(self, host: str, port: int = 0, family: int = _stdlib_socket.AF_UNSPEC) -> tuple[int, str]:
        infos = gevent.socket.getaddrinfo(host, port, family, _stdlib_socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        infos = sorted(infos, key=lambda info: info[0])  # IPv4 first, as python-socks does
        address = str(infos[0][4][0])
        return infos[0][0], address


class _Stream:
    """python-socks' sync stream interface on our gevent socket (both its spellings)."""

    def __init__(self, sock: gevent.socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read(self, max_bytes: int = 65536) -> bytes:
        data: bytes = self._sock.recv(max_bytes)
        return data

    def read_exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            packet = self._sock.recv(n - len(data))
            if not packet:
                raise _Incomplete()
            data += packet
        return bytes(data)

    # python-socks before 2.5 names them so
    write_all = write
    read_exact = read_exactly

    def close(self) -> None:
        self._sock.close()


class _Incomplete(Exception):
    pass


#: SOCKS5 reply codes (RFC 1928) and SOCKS4's: which kind of refusal each is.
_SOCKS_KINDS = {
    0x01: "unreachable",  # general SOCKS server failure
    0x02: "refused",  # connection not allowed by ruleset
    0x03: "unreachable",  # network unreachable
    0x04: "unreachable",  # host unreachable
    0x05: "unreachable",  # connection refused by the destination
    0x06: "unreachable",  # TTL expired
    0x07: "unsupported",  # command not supported
    0x08: "unsupported",  # address type not supported
    0x5B: "unreachable",  # SOCKS4: request rejected or failed
    0x5C: "auth",  # SOCKS4: identd unreachable
    0x5D: "auth",  # SOCKS4: identd user id mismatch
}


def _socks_tunnel(sock: gevent.socket.socket, proxy: ProxyURL, host: str, port: int) -> None:
    factory = _python_socks()
    types = importlib.import_module("python_socks._types")
    reply_error = importlib.import_module("python_socks._protocols.errors").ReplyError
    socks5 = proxy.scheme.startswith("socks5")
    connector = factory.create_connector(
        proxy_type=types.ProxyType.SOCKS5 if socks5 else types.ProxyType.SOCKS4,
        username=proxy.username,
        password=proxy.password,
        rdns=proxy.scheme in ("socks5h", "socks4a"),
        resolver=_GeventResolver(),
    )
    try:
        connector.connect(stream=_Stream(sock), host=host, port=port)
    except _Incomplete:
        raise ConnectionFailed(f"SOCKS proxy {proxy.display} closed the connection during its handshake") from None
    except reply_error as exc:
        code = getattr(exc, "error_code", None)
        text = str(exc)
        if code in _SOCKS_KINDS:
            kind = _SOCKS_KINDS[code]
        elif "authentication failure" in text.lower() or "no acceptable authentication" in text.lower():
            kind = "auth"  # the user and password refused, or credentials needed and none given
        else:
            kind = "protocol"
        raise SocksError(proxy.display, kind, text, code) from None
