"""Where the web view listens and who may open it: ``--ui [HOST:]PORT`` and the access token.

Safe by default: the host defaults to 127.0.0.1, and a host that is not loopback (``0.0.0.0``, a LAN address, a
name that resolves beyond this machine) needs a token (``--ui-token`` or the ``M2S2L_UI_TOKEN`` environment
variable, which keeps it out of the process list) or the watch refuses to start. With a token every page, stream,
picture and control asks for it. These checks need no web library, so the CLI runs them before anything loads.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass

TOKEN_ENV = "M2S2L_UI_TOKEN"
MIN_TOKEN_CHARS = 16
DEFAULT_HOST = "127.0.0.1"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_ADDRESS = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):)?(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class UIAddress:
    """A parsed ``[HOST:]PORT``: ``host`` without brackets, ``port`` (0: any free port)."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def url(self, port: int | None = None) -> str:
        """The URL a browser on this machine opens (a wildcard host is reached through loopback)."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port if port is None else port}/"


def parse_address(text: str) -> UIAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` → :class:`UIAddress`; ValueError naming the accepted forms."""
    m = _ADDRESS.match(str(text).strip())
    if m is None:
        raise ValueError(f"--ui {text!r}: expected PORT, HOST:PORT or [IPv6]:PORT (e.g. 8080, 0.0.0.0:8080)")
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError(f"--ui {text!r}: the port must be in 0..65535")
    host = (m.group("host") or DEFAULT_HOST).strip("[]")
    return UIAddress(host, port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches this machine only: every address it resolves to is loopback.
    A wildcard (0.0.0.0, ::) listens on every interface, so it is not."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False  # a name that does not resolve cannot be bound anyway; the bind reports it
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def resolve_token(address: UIAddress, token: str | None) -> str | None:
    """The token the web view will ask for: ``token`` (``--ui-token``), else ``$M2S2L_UI_TOKEN``, else None.

    ValueError when the address is not loopback and there is no token (the web view would be open to the network),
    or when a token is shorter than :data:`MIN_TOKEN_CHARS` characters.
    """
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None:
        token = token.strip()
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(f"the web view's token must be at least {MIN_TOKEN_CHARS} characters without spaces; "
                             "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if token is None and not address.loopback:
        raise ValueError(f"--ui {address.host}:{address.port} listens beyond this machine: give --ui-token TOKEN or "
                         f"set {TOKEN_ENV} (or listen on 127.0.0.1 and reach it through an SSH tunnel)")
    return token
