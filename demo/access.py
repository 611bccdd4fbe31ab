"""Who may talk to the annotation server: one check per request, before anything else is read.

    guard = AccessGuard(port=8765, bound_host="0.0.0.0", allow_remote=True)   # makes a token
    guard.url("127.0.0.1")          # http://127.0.0.1:8765/?token=...  (what demo.py prints)
    set_cookie = guard.check(peer_ip, headers, query)   # AccessDenied(status, message) if refused

- The Host header must name this server with its port: ``127.0.0.1``, ``localhost`` or ``[::1]``,
  and with ``allow_remote`` also the address it listens on, this computer's name, or any IP address of
  this computer. A page of another site that re-points its DNS name at us (DNS rebinding) sends its own
  name and is refused.
- Without ``allow_remote`` only loopback peers are answered. With it, every request must carry the
  access token (as Jupyter does): ``?token=`` in the URL, ``Authorization: token <token>``, or the
  cookie that a request with the right ``?token=`` sets (HttpOnly, SameSite=Strict), which the page's
  later requests (scripts, API calls, the image) then carry by themselves.
"""
from __future__ import annotations

import ipaddress
import secrets
import socket
from http.cookies import CookieError, SimpleCookie

__all__ = ["AccessDenied", "AccessGuard", "LOOPBACK_NAMES", "is_loopback"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters


class AccessDenied(Exception):
    """A request refused before it is read (401 no or wrong token, 403 not for this server)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_address_of_this_computer(literal: str) -> bool:
    """True for an IP literal (``10.0.0.5``, ``[fe80::1]``) that a socket here can bind to."""
    text = literal[1:-1] if literal.startswith("[") and literal.endswith("]") else literal
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.is_unspecified or address.is_multicast:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def _url_host(bound: str) -> str:
    """The address as it appears in a URL; a wildcard address becomes loopback (a browser cannot open it)."""
    if bound in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bound == "::":
        return "[::1]"
    return f"[{bound}]" if ":" in bound else bound


class AccessGuard:
    def __init__(self, port: int, bound_host: str, allow_remote: bool, token: str | None = None):
        self.port, self.allow_remote = int(port), bool(allow_remote)
        self.url_host = _url_host(bound_host)
        self.token = (token or secrets.token_urlsafe(TOKEN_BYTES)) if allow_remote else None
        self.cookie_name = f"spine-demo-token-{self.port}"  # cookies ignore ports: one name per server
        names = {*LOOPBACK_NAMES, self.url_host}
        if allow_remote:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self._names = {name for name in names if name}

    def url(self, host: str | None = None) -> str:
        """The page's address (with the token when one is needed)."""
        base = f"http://{host or self.url_host}:{self.port}/"
        return f"{base}?token={self.token}" if self.token else base

    def remote_urls(self) -> list[str]:
        """Addresses other computers may use: this computer's name (when it is not loopback)."""
        name = socket.gethostname()
        return [self.url(name)] if name and name.lower() not in LOOPBACK_NAMES else []

    # ---------------------------------------------------------------------------------------------
    def host_allowed(self, host: str) -> bool:
        host = host.strip().lower()
        name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not sep:
            name, port = host, "80"  # a browser leaves out the default port
        if port != str(self.port) or not name:
            return False
        if name in self._names:
            return True
        return self.allow_remote and _is_address_of_this_computer(name)

    def check(self, peer: str, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        """Refuse with AccessDenied, or return a Set-Cookie value to send back (token given in the URL)."""
        if not self.allow_remote and not is_loopback(peer):
            raise AccessDenied(403, "this server only answers the computer it runs on (start it with "
                                    "--allow-remote to change that)")
        host = headers.get("host", "")
        if not self.host_allowed(host):
            raise AccessDenied(403, f"Host {host[:100]!r} refused: open the page by this computer's address, "
                                    f"e.g. {self.url().split('?')[0]}")
        if self.token is None:
            return None
        given = query.get("token", [])
        if given:
            if len(given) == 1 and secrets.compare_digest(given[0].encode(), self.token.encode()):
                return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            raise AccessDenied(401, "wrong access token: open the URL that demo.py printed at start "
                                    "(http://...:port/?token=...)")
        if self._header_token(headers) or self._cookie_token(headers):
            return None
        raise AccessDenied(401, "this server needs its access token: open the URL that demo.py printed at "
                                "start (http://...:port/?token=...)")

    def _header_token(self, headers: dict[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("token", "bearer") and secrets.compare_digest(value.strip().encode(),
                                                                                self.token.encode())

    def _cookie_token(self, headers: dict[str, str]) -> bool:
        try:
            cookies = SimpleCookie(headers.get("cookie", ""))
        except CookieError:
            return False
        morsel = cookies.get(self.cookie_name)
        return morsel is not None and secrets.compare_digest(morsel.value.encode(), self.token.encode())
