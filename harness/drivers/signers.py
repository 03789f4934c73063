"""Named building blocks of the supplier dialects: signers, decryptors, an authenticator.

A dialect file (:mod:`harness.drivers.dialect`) chooses each by name; each is a plain
function of plain data, tested against worked examples computed independently.

Signers (``SIGNERS``), each returning lowercase hex:

- ``md5_concat``: MD5 of fields concatenated with no separator, in the order the operation
  names them (the concatenated-MD5 style: ``md5(OpenID + key + phoneno + cardnum + orderid)``);
- ``md5_sorted_query``: drop ``sign`` and empty values, sort by key, join ``k=v`` with
  ``&``, append ``&key=SECRET``, MD5 (the synchronous trade style, acg-faka);
- ``md5_sorted_chars``: the parameters (without ``sign``) as compact JSON, that text's
  characters sorted, the secret appended, MD5 (the gateway style, Fulu v2);
- ``hmac_sha256``: HMAC-SHA256 keyed by the secret over the sorted query (no key appended).

Decryptor: ``aes_ecb`` (AES-256-ECB, PKCS#7 padding, base64 or hex text), keyed by the
secret's UTF-8 bytes (16, 24 or 32 of them).

Authenticator: :class:`OAuth2ClientCredentials` builds the token request and caches the
token until shortly before it expires; it does no I/O (the lifecycle sends the request).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from harness.drivers.base import Failure, HttpRequest, HttpResponse, Result


def md5_hex(text: str) -> str:
    """Lowercase hex MD5 of ``text``'s UTF-8 bytes."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _text(value: Any) -> str:
    """A parameter value as signers see it: ``True`` is ``true``, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)


def sorted_query(params: Mapping[str, Any], *, exclude: Sequence[str] = ("sign",)) -> str:
    """``k1=v1&k2=v2`` over the parameters sorted by key, without ``exclude`` and empty
    values, not URL-encoded (the text that is signed, not the text that is sent)."""
    pairs = sorted((k, _text(v)) for k, v in params.items() if k not in exclude)
    return "&".join(f"{k}={v}" for k, v in pairs if v != "")


def md5_concat(parts: Sequence[str]) -> str:
    """MD5 of ``parts`` concatenated with no separator."""
    return md5_hex("".join(parts))


def md5_sorted_query(params: Mapping[str, Any], secret: str, *, key_name: str = "key",
                     exclude: Sequence[str] = ("sign",)) -> str:
    """MD5 of :func:`sorted_query` + ``&key=`` + secret."""
    return md5_hex(f"{sorted_query(params, exclude=exclude)}&{key_name}={secret}")


def sorted_chars_text(params: Mapping[str, Any], *, exclude: Sequence[str] = ("sign",)) -> str:
    """The parameters (without ``exclude``) as compact JSON, characters sorted."""
    payload = {k: v for k, v in params.items() if k not in exclude}
    return "".join(sorted(json.dumps(payload, separators=(",", ":"), ensure_ascii=False)))


def md5_sorted_chars(params: Mapping[str, Any], secret: str, *,
                     exclude: Sequence[str] = ("sign",)) -> str:
    """MD5 of :func:`sorted_chars_text` + secret (the gateway style)."""
    return md5_hex(sorted_chars_text(params, exclude=exclude) + secret)


def hmac_sha256(message: str, secret: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``message`` keyed by ``secret``."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignInput:
    """What a signer may use: the parameters to send, the secret, and for ``md5_concat``
    the operation's parts (already rendered, the secret among them where named)."""

    params: Mapping[str, Any]
    secret: str = field(repr=False)
    parts: Sequence[str] = ()
    exclude: Sequence[str] = ("sign",)


Signer = Callable[[SignInput], str]

SIGNERS: dict[str, Signer] = {
    "md5_concat": lambda s: md5_concat(s.parts),
    "md5_sorted_query": lambda s: md5_sorted_query(s.params, s.secret, exclude=s.exclude),
    "md5_sorted_chars": lambda s: md5_sorted_chars(s.params, s.secret, exclude=s.exclude),
    "hmac_sha256": lambda s: hmac_sha256(
        "".join(s.parts) if s.parts else sorted_query(s.params, exclude=s.exclude), s.secret),
}
"""Every signer a dialect may name."""


# ---------------------------------------------------------------------------- decryptors


class DecryptError(ValueError):
    """A field that should be encrypted could not be decrypted: a protocol error."""


MAX_CIPHERTEXT = 4096
"""Longest encrypted field accepted, characters (a card code is a few dozen)."""


def _aes_key(secret: str) -> bytes:
    key = secret.encode()
    if len(key) not in (16, 24, 32):
        raise DecryptError(f"an AES key is 16, 24 or 32 bytes; the secret has {len(key)}")
    return key


def aes_ecb_decrypt(text: str, secret: str, *, encoding: str = "base64") -> str:
    """Decrypt AES-ECB ``text`` (base64 or hex) with PKCS#7 padding; raises
    :class:`DecryptError` for anything that is not such a ciphertext."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if not isinstance(text, str) or not text or len(text) > MAX_CIPHERTEXT:
        raise DecryptError("an encrypted field must be a non-empty string of at most "
                           f"{MAX_CIPHERTEXT} characters")
    try:
        raw = base64.b64decode(text, validate=True) if encoding == "base64" \
            else bytes.fromhex(text)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError(f"not {encoding}: {exc}") from exc
    if not raw or len(raw) % 16:
        raise DecryptError("ciphertext is not a whole number of 16-byte blocks")
    decryptor = Cipher(algorithms.AES(_aes_key(secret)), modes.ECB()).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecryptError("wrong key or corrupt ciphertext (bad padding or not UTF-8)") \
            from exc


def aes_ecb_encrypt(plain: str, secret: str, *, encoding: str = "base64") -> str:
    """The inverse of :func:`aes_ecb_decrypt` (the simulator encrypts with it)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(_aes_key(secret)), modes.ECB()).encryptor()
    raw = encryptor.update(data) + encryptor.finalize()
    return base64.b64encode(raw).decode() if encoding == "base64" else raw.hex()


Decryptor = Callable[[str, str], str]

DECRYPTORS: dict[str, Callable[[str], Decryptor]] = {
    "aes_ecb": lambda encoding: lambda text, secret: aes_ecb_decrypt(text, secret,
                                                                      encoding=encoding),
}
"""Every decryptor a dialect may name, by name, then by its text encoding."""


# ---------------------------------------------------------------------------- authenticator


@dataclass
class OAuth2ClientCredentials:
    """OAuth2 client credentials (RFC 6749, 4.4) with the token cached until it expires.

    Sans-I/O: :meth:`token_request` builds the POST to the token endpoint (HTTP Basic with
    the client id and secret, form body), :meth:`accept` reads the answer, :meth:`headers`
    gives the ``Authorization`` header for the next request, and :meth:`needs_token` says
    whether a token must be fetched first (none yet, or within ``skew_s`` of expiry). A
    401 from the supplier should :meth:`invalidate` it.
    """

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    skew_s: float = 30.0
    _token: str | None = field(default=None, repr=False)
    _expires_at: float = 0.0
    fetched: int = 0
    """Tokens fetched so far (a cache that works fetches one per lifetime)."""

    def needs_token(self, now: float) -> bool:
        return self._token is None or now >= self._expires_at - self.skew_s

    def token_request(self) -> HttpRequest:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return HttpRequest("POST", self.token_url,
                           {"Authorization": f"Basic {basic}",
                            "Content-Type": "application/x-www-form-urlencoded",
                            "Accept": "application/json"},
                           urlencode(form).encode(), read_only=True)

    def accept(self, response: HttpResponse, now: float) -> Result[str]:
        """Cache the token of a token answer; the token, or a :class:`Failure`."""
        if response.status != 200 or response.transport_error is not None:
            return Failure(f"token_http_{response.status}", response.status,
                           "the token endpoint refused or did not answer")
        try:
            data = json.loads(response.body)
            token = data["access_token"]
            kind = str(data.get("token_type", "bearer")).lower()
            expires_in = data.get("expires_in", 3600)
            if not isinstance(token, str) or not 0 < len(token) <= 4096:
                raise ValueError("access_token must be a non-empty string")
            if kind != "bearer":
                raise ValueError(f"token_type {kind[:20]!r} is not bearer")
            if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) \
                    or not 0 < expires_in <= 10 * 86400:
                raise ValueError("expires_in must be a number of seconds up to 10 days")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            return Failure("bad_token_response", response.status,
                           f"{type(exc).__name__}: {exc}"[:200])
        self._token, self._expires_at = token, now + float(expires_in)
        self.fetched += 1
        return token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def invalidate(self) -> None:
        self._token = None


__all__ = ["DECRYPTORS", "SIGNERS", "DecryptError", "OAuth2ClientCredentials", "SignInput",
           "aes_ecb_decrypt", "aes_ecb_encrypt", "hmac_sha256", "md5_concat", "md5_hex",
           "md5_sorted_chars", "md5_sorted_query", "sorted_chars_text", "sorted_query"]
