"""The dialects' named building blocks against worked examples computed independently.

Every expected value below was computed outside Python with coreutils and OpenSSL, e.g.::

    printf '%s' 'app_id=1000&...&key=TESTAPPKEY...' | md5sum
    printf '%s' '<params>' | openssl dgst -sha256 -hmac '<secret>'
    printf '%s' '<json>' | fold -w1 | LC_ALL=C sort | tr -d '\\n' | ...  | md5sum
    printf '%s' 'CARD-1234-5678-9012' | openssl enc -aes-256-ecb -K <hex key> | xxd -p

except the acg-faka signature, which is the worked example in shared/spec/dialects.md.
"""

from __future__ import annotations

import json

import pytest

from harness.drivers.base import Failure, HttpResponse
from harness.drivers.signers import (
    SIGNERS,
    DecryptError,
    OAuth2ClientCredentials,
    SignInput,
    aes_ecb_decrypt,
    aes_ecb_encrypt,
    md5_concat,
    md5_sorted_chars,
    md5_sorted_query,
    sorted_chars_text,
)

ACG_KEY = "TESTAPPKEY0123456789abcdefABCDEF"
ACG_PARAMS = {"app_id": "1000", "contact": "buyer1", "num": "1",
              "request_no": "REQ2026112500000001", "shared_code": "TESTCODE0001"}
AES_KEY = "0123456789abcdef0123456789abcdef"


def test_md5_sorted_query_matches_the_acg_faka_worked_example() -> None:
    """The spec's acg-faka example signs to d0984eb4...; sign and empty values are dropped,
    and the parameters' order does not matter."""
    assert md5_sorted_query(ACG_PARAMS, ACG_KEY) == "d0984eb47ee8b94c0ae707093bbc561a"
    shuffled = dict(reversed(list(ACG_PARAMS.items())))
    assert md5_sorted_query({**shuffled, "sign": "x", "empty": ""}, ACG_KEY) == \
        "d0984eb47ee8b94c0ae707093bbc561a"


def test_md5_concat_joins_the_fields_with_no_separator() -> None:
    """md5(OpenID + key + cardid + cardnum + orderid), as md5sum computes it."""
    parts = ["OPENID123", "keyABCDEF123", "card", "num1", "ORDER0001"]
    assert md5_concat(parts) == "ceb44523a14c2542c2d690c719341ad5"
    assert SIGNERS["md5_concat"](SignInput({}, "unused", parts)) == md5_concat(parts)


def test_md5_sorted_chars_sorts_the_json_characters_then_appends_the_secret() -> None:
    """The gateway style: compact JSON, its characters sorted, the secret appended."""
    params = {"method": "fulu.goods.list.get", "app_key": "k", "biz_content": "{}"}
    assert sorted_chars_text(params) == \
        '""""""""""""' ',,...:::__abcddeeeefgghiikkllmnnooooppsstttttuuyz{{}}'
    assert md5_sorted_chars({**params, "sign": "ignored"}, "SECRET") == \
        "05230303a07034c415030c36286c3142"


def test_hmac_sha256_over_the_sorted_query() -> None:
    """HMAC-SHA256 keyed by the secret over sorted k=v pairs, as openssl computes it."""
    signed = SIGNERS["hmac_sha256"](SignInput(ACG_PARAMS, ACG_KEY))
    assert signed == "94df92dca1f9fe0a87a6d9c33b3ae19216e8aa7ea878ea99434a181adeba41f1"


def test_aes_ecb_decrypts_what_openssl_encrypted() -> None:
    """AES-256-ECB with PKCS#7, hex and base64, as `openssl enc -aes-256-ecb` produces."""
    assert aes_ecb_decrypt("a59c096412eecb79830021104f861307", AES_KEY, encoding="hex") == "hello"
    assert aes_ecb_decrypt("pZwJZBLuy3mDACEQT4YTBw==", AES_KEY) == "hello"
    card = "c1ff953570ebc2ab44027505862dd409356fb15aa4fb8fb7888b64a3ce37aff1"
    assert aes_ecb_decrypt(card, AES_KEY, encoding="hex") == "CARD-1234-5678-9012"
    assert aes_ecb_encrypt("CARD-1234-5678-9012", AES_KEY, encoding="hex") == card


@pytest.mark.parametrize("text", ["", "not base64!", "pZwJZBLuy3mDACEQ", "A" * 5000,
                                  "AAAAAAAAAAAAAAAAAAAAAA=="])
def test_aes_ecb_refuses_what_is_not_its_ciphertext(text: str) -> None:
    """Garbage, a partial block, an over-long field or a wrong key is a DecryptError."""
    with pytest.raises(DecryptError):
        aes_ecb_decrypt(text, AES_KEY)
    with pytest.raises(DecryptError):
        aes_ecb_decrypt("pZwJZBLuy3mDACEQT4YTBw==", "short key")


def test_oauth2_client_credentials_caches_the_token_until_it_nearly_expires() -> None:
    """One token per lifetime: fetched when missing or within the skew of expiry, kept
    otherwise; a malformed token answer is a Failure, not a crash."""
    auth = OAuth2ClientCredentials("http://127.0.0.1:9/oauth/token", "client", "s3cret",
                                   scope="orders", skew_s=30)
    assert auth.needs_token(0)
    request = auth.token_request()
    assert request.headers["Authorization"] == "Basic Y2xpZW50OnMzY3JldA=="  # base64 client:s3cret
    assert request.body == b"grant_type=client_credentials&scope=orders"
    ok = HttpResponse(200, {}, json.dumps({"access_token": "tok", "token_type": "Bearer",
                                           "expires_in": 600}).encode())
    assert auth.accept(ok, now=1000) == "tok"
    assert auth.headers() == {"Authorization": "Bearer tok"}
    assert not auth.needs_token(1000 + 500) and auth.needs_token(1000 + 571)
    assert auth.fetched == 1
    auth.invalidate()
    assert auth.needs_token(1001)
    for bad in (b"<html>", b'{"access_token": 5}', b'{"access_token": "t", "expires_in": -1}',
                b'{"access_token": "t", "token_type": "mac"}'):
        assert isinstance(auth.accept(HttpResponse(200, {}, bad), now=0), Failure)
    assert isinstance(auth.accept(HttpResponse(401, {}, b""), now=0), Failure)
