"""Validates a JWT-SVID issued by an aims server with a third-party library (PyJWT), using
only the SPIFFE trust bundle the server publishes, the way a relying party would.

Usage: check_svid.py BASE_URL SVID_FILE AUDIENCE

Checks: the header (alg ES256, typ JWT, a kid found in the bundle's jwt-svid keys), the
signature, `aud` == AUDIENCE, `exp`, `iss`, `sub` a SPIFFE ID of the trust domain, and that the
same token is rejected for any other audience. Prints one JSON line; exits non-zero on failure.
"""

import json
import sys
import urllib.request

import jwt


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def main(base, svid_file, audience):
    with open(svid_file) as f:
        token = f.read().strip()
    meta = fetch(f"{base}/.well-known/oauth-authorization-server")
    bundle = fetch(meta["spiffe_bundle_endpoint"])
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256", header
    assert header["typ"] == "JWT", header
    entry = next(k for k in bundle["keys"] if k["kid"] == header["kid"])
    assert entry["use"] == "jwt-svid"
    key = jwt.PyJWK(entry, algorithm="ES256")

    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=audience,
        issuer=meta["issuer"],
        options={"require": ["exp", "iat", "sub", "aud", "jti"]},
    )
    assert claims["sub"].startswith("spiffe://"), claims
    assert isinstance(claims["aud"], str), "single audience"
    assert claims["cnf"]["jkt"], "bound to the agent's key"

    for other in ["https://someone-else.example", audience + "x"]:
        try:
            jwt.decode(token, key.key, algorithms=["ES256"], audience=other)
        except jwt.InvalidAudienceError:
            pass
        else:
            raise AssertionError(f"accepted for audience {other}")
    try:
        jwt.decode(token, key.key, algorithms=["HS256"], audience=audience)
    except jwt.InvalidTokenError:
        pass
    else:
        raise AssertionError("accepted with a non-ES256 algorithm")

    print(json.dumps({"ok": True, "sub": claims["sub"], "aud": claims["aud"], "kid": header["kid"]}))


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3])
