"""``url.full`` without credentials or secret values, per the OpenTelemetry URL semantic conventions.

The conventions say credentials in the userinfo become ``REDACTED:REDACTED`` and the values of
``AWSAccessKeyId``, ``Signature``, ``sig`` and ``X-Goog-Signature`` become ``REDACTED``, keeping the
keys. We redact those and a broader set of secret-looking names (see ``_is_secret_key``), and
change no other byte of the URL.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote_plus

#: What ``redact_url`` returns when it cannot read its input: nothing of it can be shown safely.
FALLBACK = "REDACTED"

# RFC 3986: the authority follows the scheme and "//" and ends at "/" (the caller cut "?" and "#"
# off first); the userinfo is everything before its last "@". Like browsers, we skip leading
# spaces and control characters and read backslashes as the slashes of "//".
_USERINFO = re.compile(r"([\x00-\x20]*(?:[A-Za-z][A-Za-z0-9+.-]*:)?[/\\]{2})[^/]+@")
_SEPARATOR = re.compile(r"([&;])")
_CAMEL_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_WORD = re.compile(r"[a-z0-9]+")

# A key is secret if it is one of _SECRET_NAMES, has one of _SECRET_WORDS as a word, or contains
# one of _SECRET_PARTS once its separators are dropped; minus _HARMLESS_NAMES.
_SECRET_NAMES = frozenset({"code"})  # the OAuth authorization code; too common a word to match inside names
_SECRET_WORDS = frozenset({"key", "pass", "pwd", "auth", "session", "sig"})
_SECRET_PARTS = (
    "token", "secret", "passw", "credential", "signature", "apikey", "accesskey", "privatekey", "jwt",
    "authorization", "authcode", "sessionid", "sessid",
)
_HARMLESS_NAMES = frozenset({"tokentype", "maxtokens", "maxnewtokens", "maxcompletiontokens", "maxoutputtokens"})


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the values of secret-looking query (or fragment) parameters
    replaced; the literal ``FALLBACK`` for anything that is not a string. Never raises."""
    try:
        if "?" not in url and "#" not in url and "@" not in url:
            return url
        rest, hash_mark, fragment = url.partition("#")
        rest, question_mark, query = rest.partition("?")
        if match := _USERINFO.match(rest):
            rest = f"{match[1]}REDACTED:REDACTED@{rest[match.end():]}"
        return rest + question_mark + _redact_pairs(query) + hash_mark + _redact_pairs(fragment)
    except Exception:
        return FALLBACK


def _redact_pairs(text: str) -> str:
    """``text`` (a query, or a fragment that may look like one) with secret values replaced."""
    if "=" not in text:
        return text
    pairs = _SEPARATOR.split(text)  # the separators at odd indexes, kept as they were
    for index in range(0, len(pairs), 2):
        key, equals, value = pairs[index].partition("=")
        # A "?" inside a key starts a nested query (a fragment such as "#/callback?code=...").
        if value and _is_secret_key(key.rpartition("?")[2]):
            pairs[index] = f"{key}{equals}REDACTED"
    return "".join(pairs)


@lru_cache(maxsize=512)
def _is_secret_key(raw_key: str) -> bool:
    """Whether a query key names a secret, read as the server reads it (percent-decoded, "+" as a
    space) and in any case: unlike the conventions' four exact names, a leak costs more than an
    over-redacted value.

    Words are split at separators and at camelCase humps, so ``key`` matches ``api_key``,
    ``x-api-key``, ``goog-api-key`` and ``subscriptionKey`` but not ``monkey`` or ``keyword``;
    ``apikey``, ``accesskey`` and the like match inside run-together names. ``code`` matches only
    as the whole key, so ``zip_code`` and ``codec`` stay; ``sig`` only as a word, not in ``signal``.
    Any name with ``token`` in it matches, except the token counts and type of LLM and OAuth APIs."""
    try:
        name = unquote_plus(raw_key)
    except Exception:  # a key we cannot decode may be anything: hide its value
        return True
    words = _WORD.findall(name.lower())
    compact = "".join(words)
    if compact in _HARMLESS_NAMES:
        return False
    return (
        compact in _SECRET_NAMES
        or any(part in compact for part in _SECRET_PARTS)
        or not _SECRET_WORDS.isdisjoint(words)
        or not _SECRET_WORDS.isdisjoint(word.lower() for word in _CAMEL_WORD.findall(name))
    )
