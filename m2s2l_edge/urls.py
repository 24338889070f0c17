"""URLs as safe to show: one redaction for every URL the tool prints, logs, stores or sends.

Camera, Triton, MQTT and webhook URLs carry credentials two ways, and both are masked:

- user-info, ``scheme://user:password@host``: the password is replaced by ``***`` whatever characters it holds
  (``@``, ``:`` and ``/`` included: the host starts after the *last* ``@`` of the authority, as FFmpeg and browsers
  read it); a user-info without a password is often a token (``https://TOKEN@host``) and is masked whole;
- query parameters whose names say secret (``?user=admin&pwd=...``, common on IP cameras; ``access_token``,
  ``api_key``, ``X-Amz-Signature``): any name holding one of :data:`SECRET_WORDS`, case-insensitive.

:func:`redact` takes one URL; :func:`redact_text` masks every URL inside free text (an error message, a log line).
:func:`split_credentials` takes user-info out of a URL for clients that send it another way (HTTP Basic auth).
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
# A query parameter whose name holds one of these (case-insensitive) has its value masked.
SECRET_WORDS = ("pass", "pwd", "password", "token", "key", "auth", "secret", "signature", "credential", "session")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)")
# A URL inside free text: a scheme, then everything up to white space or a closing quote / bracket.
# A host (name, IPv4 or [IPv6]) and port, ending the authority.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(:\d*)?(?=$|[/?#])")
_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _secret_name(name: str) -> bool:
    lowered = urllib.parse.unquote_plus(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def _split_authority(rest: str, liberal: bool) -> tuple[str, str, str]:
    """``rest`` (the URL after ``scheme://``) → (user-info, host part, remainder); user-info "" when there is none.

    The authority ends at the first ``/``, ``?`` or ``#``; its user-info ends at its last ``@``. ``liberal`` (for
    showing, where masking too much is the safe mistake): a password holding ``/``, ``?`` or ``#`` ends that
    authority early (``user:pa/ss@host``), so when the authority reads ``user:something`` (not ``host:port``) and
    has no ``@``, the user-info runs to the first later ``@`` that a host name follows.
    """
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority = rest[:end]
    at = authority.rfind("@")
    if at != -1:
        return authority[:at], authority[at + 1:], rest[end:]
    _, colon, after = authority.partition(":")
    if liberal and colon and not after.isdigit():
        for m in re.finditer("@", rest):
            host = _HOST.match(rest, m.end())
            if host is not None:
                return rest[:m.start()], host.group(0), rest[host.end():]
    return "", authority, rest[end:]


def _mask_query(tail: str) -> str:
    """The path, query and fragment of a URL with every secret-named query value masked."""
    path, q, rest = tail.partition("?")
    if not q:
        return tail
    query, hashmark, fragment = rest.partition("#")
    parts = []
    for item in re.split(r"([&;])", query):
        if item in ("&", ";"):
            parts.append(item)
            continue
        name, eq, value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and value and _secret_name(name) else item)
    return f"{path}?{''.join(parts)}{hashmark}{fragment}"


def redact(url: str) -> str:
    """``url`` with its password and secret query values masked; text that is no ``scheme://`` URL is returned
    unchanged (a file path, a device, a GStreamer pipeline)."""
    url = str(url)
    m = _SCHEME.match(url)
    if m is None:
        return url
    scheme, rest = m.group(1), url[m.end():]
    userinfo, host, tail = _split_authority(rest, liberal=True)
    if not _HOST.fullmatch(host) and ":" in host:
        # No host:port at all (``scheme://user:password`` with the host forgotten, or a password that ends the
        # authority early): nothing in it can be told from a secret.
        return f"{scheme}{MASK}{_mask_query(tail)}"
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{MASK}@" if colon else f"{MASK}@"
    return f"{scheme}{userinfo}{host}{_mask_query(tail)}"


def redact_text(text: str) -> str:
    """Every ``scheme://`` URL inside ``text`` redacted (:func:`redact`); the rest of the text unchanged."""
    return _IN_TEXT.sub(lambda m: redact(m.group(0)), str(text))


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``scheme://user:password@host/x`` → (``scheme://host/x``, user, password), both percent-decoded; (url, None,
    None) when the URL carries no user-info. The host starts after the authority's last ``@``, so the password may
    hold ``@`` and ``:``; a ``/`` in it must be written %2F (as for every URL client)."""
    m = _SCHEME.match(url)
    if m is None:
        return url, None, None
    userinfo, host, tail = _split_authority(url[m.end():], liberal=False)
    if not userinfo:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    return (f"{m.group(1)}{host}{tail}", urllib.parse.unquote(user),
            urllib.parse.unquote(password) if colon else None)
