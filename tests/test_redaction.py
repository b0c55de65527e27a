"""``redact_url``: credentials and secret query values out of ``url.full``, every other byte kept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from nexent_autoinstrument.redaction import FALLBACK, redact_url

H = "https://api.example.com/v1/x"

CASES = [
    ("plain URL", "https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1/chat/completions"),
    ("user and password", "https://bob:hunter2@host/p", "https://REDACTED:REDACTED@host/p"),
    ("token as userinfo, port kept", "https://tok@host:8443/p?q=1", "https://REDACTED:REDACTED@host:8443/p?q=1"),
    ("userinfo with an IPv6 host", "http://u:p@[::1]:8080/x", "http://REDACTED:REDACTED@[::1]:8080/x"),
    ("@ inside the password", "https://u:p@ss@host/", "https://REDACTED:REDACTED@host/"),
    ("scheme-relative userinfo", "//u:p@host/x", "//REDACTED:REDACTED@host/x"),
    ("upper-case scheme and userinfo", "HTTPS://U:P@HOST/", "HTTPS://REDACTED:REDACTED@HOST/"),
    ("empty userinfo is no credential", "https://@host/", "https://@host/"),
    ("@ in the path", "https://host/users/@me?x=1", "https://host/users/@me?x=1"),
    ("@ in the query", "https://host?x@y=1", "https://host?x@y=1"),
    ("semicolon separator", f"{H}?foo=1;key=S", f"{H}?foo=1;key=REDACTED"),
    ("percent-encoded key", f"{H}?k%65y=S", f"{H}?k%65y=REDACTED"),
    ("fully encoded key", f"{H}?%6B%45%79=S&a=1", f"{H}?%6B%45%79=REDACTED&a=1"),
    ("encoded separator in key", f"{H}?api%5Fkey=S;api+key=T", f"{H}?api%5Fkey=REDACTED;api+key=REDACTED"),
    ("pass, pwd, jwt, code", f"{H}?pass=S&pwd=S&jwt=S&code=S",
     f"{H}?pass=REDACTED&pwd=REDACTED&jwt=REDACTED&code=REDACTED"),
    ("OAuth fragment", f"{H}#access_token=S&token_type=bearer&expires_in=3600",
     f"{H}#access_token=REDACTED&token_type=bearer&expires_in=3600"),
    ("fragment route with a query", f"{H}#/callback?code=S&state=x", f"{H}#/callback?code=REDACTED&state=x"),
    ("plain fragment", f"{H}#section-2", f"{H}#section-2"),
    ("query and fragment", f"{H}?token=S#frag", f"{H}?token=REDACTED#frag"),
    ("empty pairs kept", f"{H}?a=1&&b=2;;&token=S&", f"{H}?a=1&&b=2;;&token=REDACTED&"),
    ("key without =", f"{H}?flag&token=S&token", f"{H}?flag&token=REDACTED&token"),
    ("empty secret value", f"{H}?token=&a=1", f"{H}?token=&a=1"),
    ("= inside the value", f"{H}?sig=abc%2B%2F==&sv=2021", f"{H}?sig=REDACTED&sv=2021"),
    ("other encoding untouched", f"{H}?q=a%20b+c&token=S%3D&x=%zz", f"{H}?q=a%20b+c&token=REDACTED&x=%zz"),
    ("LLM parameters", f"{H}?model=gpt-4o&stream=true&api-version=2024-02-01&alt=sse&max_tokens=9",
     f"{H}?model=gpt-4o&stream=true&api-version=2024-02-01&alt=sse&max_tokens=9"),
    ("near misses", f"{H}?codec=opus&zip_code=1&monkey=1&keyword=k&author=a&authuser=0&signal=1&bypass=1",
     f"{H}?codec=opus&zip_code=1&monkey=1&keyword=k&author=a&authuser=0&signal=1&bypass=1"),
    ("key spellings", f"{H}?KEY=S&apikey=S&api-key=S&x-api-key=S&goog-api-key=S&apiKey=S&subscriptionKey=S",
     f"{H}?KEY=REDACTED&apikey=REDACTED&api-key=REDACTED&x-api-key=REDACTED&goog-api-key=REDACTED"
     "&apiKey=REDACTED&subscriptionKey=REDACTED"),
    ("tokens", f"{H}?id_token=S&refresh_token=S&accessToken=S&X-Auth-Token=S",
     f"{H}?id_token=REDACTED&refresh_token=REDACTED&accessToken=REDACTED&X-Auth-Token=REDACTED"),
    ("semconv defaults", f"{H}?AWSAccessKeyId=A&Signature=S&Expires=1&X-Goog-Signature=G",
     f"{H}?AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=1&X-Goog-Signature=REDACTED"),
    ("AWS SigV4 presigned",
     f"{H}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=C%2F2013&X-Amz-Date=D&X-Amz-SignedHeaders=host"
     "&X-Amz-Signature=S&X-Amz-Security-Token=T",
     f"{H}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=D&X-Amz-SignedHeaders=host"
     "&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED"),
    ("Google signed URL", f"{H}?X-Goog-Credential=C&X-Goog-Date=D&X-Goog-Expires=60",
     f"{H}?X-Goog-Credential=REDACTED&X-Goog-Date=D&X-Goog-Expires=60"),
    ("secrets and passwords", f"{H}?client_secret=S&client_id=c&password=S&passwd=S&user[password]=S",
     f"{H}?client_secret=REDACTED&client_id=c&password=REDACTED&passwd=REDACTED&user[password]=REDACTED"),
    ("auth and credentials", f"{H}?auth=S&Authorization=Bearer%20S&credentials=S&credential=S",
     f"{H}?auth=REDACTED&Authorization=REDACTED&credentials=REDACTED&credential=REDACTED"),
    ("sessions", f"{H}?session=S&sessionid=S&JSESSIONID=S&session_id=S",
     f"{H}?session=REDACTED&sessionid=REDACTED&JSESSIONID=REDACTED&session_id=REDACTED"),
    ("private keys", f"{H}?secret_key=S&private_key=S&privatekey=S", f"{H}?secret_key=REDACTED&private_key=REDACTED"
     "&privatekey=REDACTED"),
    ("OAuth 1 signature", f"{H}?oauth_signature=S&oauth_nonce=n", f"{H}?oauth_signature=REDACTED&oauth_nonce=n"),
    ("weird port", "https://host:99999/x?token=S", "https://host:99999/x?token=REDACTED"),
    ("broken IPv6 host", "http://[::1/x?token=S", "http://[::1/x?token=REDACTED"),
    ("backslashes before the authority", "https:\\\\u:p@host/", "https:\\\\REDACTED:REDACTED@host/"),
    ("leading space before the scheme", " \thttps://u:p@host/", " \thttps://REDACTED:REDACTED@host/"),
    ("a relative path is no authority", "files//a@b/c", "files//a@b/c"),
    ("empty string", "", ""),
    ("not a URL", "not a url", "not a url"),
]


@pytest.mark.parametrize(("url", "expected"), [(u, e) for _, u, e in CASES], ids=[n for n, _, _ in CASES])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_common_case_returns_the_same_string() -> None:
    url = "https://api.openai.com/v1/chat/completions"
    assert redact_url(url) is url


@pytest.mark.parametrize("value", [None, b"https://u:p@host/?token=S", 42])
def test_not_a_string_gives_the_fallback(value: Any) -> None:
    assert redact_url(value) == FALLBACK


# -- properties ---------------------------------------------------------------------------------

SECRET_NAMES = [
    "key", "api_key", "apikey", "api-key", "x-api-key", "goog-api-key", "subscription-key", "private_key",
    "token", "access_token", "id_token", "refresh_token", "x-amz-security-token", "secret", "client_secret",
    "password", "passwd", "pass", "pwd", "auth", "authorization", "credential", "credentials", "session",
    "sessionid", "jsessionid", "signature", "sig", "jwt", "code", "x-amz-signature", "x-amz-credential",
    "AWSAccessKeyId", "Signature", "X-Goog-Signature", "x-goog-credential",
]
#: Real names that must not match (used as they are: re-casing camelCase can make a "Key" word).
HARMLESS_NAMES = [
    "model", "stream", "api-version", "alt", "codec", "zip_code", "monkey", "keyword", "author", "authuser",
    "signal", "bypass", "q", "page", "limit", "max_tokens", "token_type", "client_id", "state", "X-Amz-Date",
]
# No vowels nor p, j, s, c, k: these letters cannot spell any secret name.
HARMLESS_CHARS = "bfhmqvxz0123456789-._~"
VALUE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-._~%!$'()*+,=:@/?"
# Upper case, so no safe part (all lower case) and no "REDACTED" can contain a planted secret.
SECRET_CHARS = "ABCDEF0123456789"

hosts = st.one_of(
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,5}){0,2}", fullmatch=True),
    st.just("[::1]"), st.just("[2001:db8::7]"), st.just("127.0.0.1"),
).flatmap(lambda host: st.sampled_from(["", ":80", ":8443", ":99999", ":x"]).map(lambda port: host + port))
paths = st.from_regex(r"(/[a-z0-9@;=:%.~-]*){0,3}", fullmatch=True)
values = st.text(VALUE_CHARS, max_size=8)
names = st.sampled_from(HARMLESS_NAMES)
harmless_keys = st.one_of(names, names.map(str.upper), st.text(HARMLESS_CHARS, max_size=6))
harmless_pairs = st.one_of(st.tuples(harmless_keys, values).map("=".join), harmless_keys, st.just(""))


def join(pairs: list[str], separators: list[str]) -> str:
    """The pairs joined by the separators, taken in turn."""
    out = pairs[:1]
    for index, pair in enumerate(pairs[1:]):
        out += [separators[index % len(separators)], pair]
    return "".join(out)


@st.composite
def secret_keys(draw: st.DrawFn) -> str:
    """A secret name in any case, some of its characters percent-encoded."""
    name = draw(st.sampled_from(SECRET_NAMES))
    out = []
    for char in name:
        char = char.upper() if draw(st.booleans()) else char.lower()
        if draw(st.integers(0, 3)) == 0:
            code = f"%{ord(char):02X}"
            char = code.lower() if draw(st.booleans()) else code
        out.append(char)
    return "".join(out)


@st.composite
def urls_with_secrets(draw: st.DrawFn) -> tuple[str, list[str]]:
    secrets: list[str] = []

    def secret(extra: str = "") -> str:
        value = "ZZ" + draw(st.text(SECRET_CHARS, min_size=8, max_size=12)) + draw(st.text(extra, max_size=3))
        secrets.append(value)
        return value

    def pairs_text(extra: str) -> str:
        pairs = draw(st.lists(harmless_pairs, max_size=4))
        for _ in range(draw(st.integers(1, 3))):
            pairs.insert(draw(st.integers(0, len(pairs))), f"{draw(secret_keys())}={secret(extra)}")
        return join(pairs, draw(st.lists(st.sampled_from("&;"), min_size=1, max_size=3)))

    url = draw(st.sampled_from(["https://", "http://", "HTTP://", "//"]))
    if draw(st.booleans()):
        user = draw(st.sampled_from(["", "user:", "a%40b:"]))
        url += user + secret(":@!$'()*+,=%") + "@"
    url += draw(hosts) + draw(paths)
    in_query, in_fragment = draw(st.sampled_from([(True, False), (False, True), (True, True), (False, False)]))
    if in_query:
        url += "?" + pairs_text("=:@/?%")
    if in_fragment:
        url += "#" + draw(st.sampled_from(["", "/callback?"])) + pairs_text("=:@/?#%")
    return url, secrets


@settings(max_examples=examples(250))
@given(urls_with_secrets())
def test_planted_secrets_never_appear(case: tuple[str, list[str]]) -> None:
    url, secrets = case
    redacted = redact_url(url)
    for secret in secrets:
        assert secret not in redacted, (url, redacted)


@st.composite
def harmless_urls(draw: st.DrawFn) -> str:
    url = draw(st.sampled_from(["https://", "http://", "HTTPS://", "//", ""])) + draw(hosts) + draw(paths)
    separators = draw(st.lists(st.sampled_from("&;"), min_size=1, max_size=3))
    if draw(st.booleans()):
        url += "?" + join(draw(st.lists(harmless_pairs, max_size=6)), separators)
    if draw(st.booleans()):
        url += "#" + draw(st.one_of(
            st.text(HARMLESS_CHARS + "/?#:@!$'()*+,=", max_size=10),
            st.lists(harmless_pairs, max_size=4).map(lambda pairs: join(pairs, separators)),
        ))
    return url


@settings(max_examples=examples(250))
@given(harmless_urls())
def test_nothing_secret_means_no_change(url: str) -> None:
    assert redact_url(url) == url


URL_CHARS = "htps:/\\?#@&;=%[]:.+ \t\nAaKkEeYy0\x00\ud800"


@settings(max_examples=examples(250))
@given(st.one_of(
    st.text(),
    st.text(URL_CHARS, max_size=40),
    st.tuples(st.sampled_from(["http://", "https://u:p@", "//", "http://["]), st.text(URL_CHARS, max_size=30))
    .map("".join),
))
def test_never_raises(text: str) -> None:
    assert isinstance(redact_url(text), str)
