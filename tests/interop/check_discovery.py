"""Checks an aims server's discovery documents with a third-party JOSE library (PyJWT).

Usage: check_discovery.py BASE_URL

RFC 8414 metadata must name the issuer and jwks_uri; PyJWT's own JWKS client must load every
published key as an ES256 P-256 signing key; the SPIFFE bundle must carry the same keys marked
`use: "jwt-svid"` (which generic clients skip, so PyJWKClient must find no signing key there).
Prints one JSON line with what it checked; exits non-zero on the first failure.
"""

import json
import sys
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, f"{url}: HTTP {response.status}"
        return json.load(response)


def main(base):
    meta = fetch(f"{base}/.well-known/oauth-authorization-server")
    assert meta["issuer"] == base, meta
    jwks_uri = meta["jwks_uri"]
    assert jwks_uri.startswith(base + "/"), jwks_uri

    jwks = fetch(jwks_uri)
    keyset = jwt.PyJWKSet.from_dict(jwks)
    assert len(keyset.keys) == len(jwks["keys"]) >= 2, "PyJWT dropped a published key"
    public = {}
    for key in keyset.keys:
        assert key.key_id, "every key has a kid"
        assert key.algorithm_name == "ES256", key.algorithm_name
        assert key.public_key_use == "sig", key.public_key_use
        assert isinstance(key.key, ec.EllipticCurvePublicKey)
        assert key.key.curve.name == "secp256r1"
        public[key.key_id] = key.key.public_numbers()

    client = jwt.PyJWKClient(jwks_uri, cache_keys=False)
    signing = client.get_signing_keys()
    assert {k.key_id for k in signing} == set(public), "PyJWKClient sees every signing key"

    bundle_url = meta["spiffe_bundle_endpoint"]
    bundle = fetch(bundle_url)
    assert isinstance(bundle["spiffe_sequence"], int) and bundle["spiffe_sequence"] >= 1
    assert isinstance(bundle["spiffe_refresh_hint"], int) and bundle["spiffe_refresh_hint"] > 0
    for entry in bundle["keys"]:
        assert entry["use"] == "jwt-svid", entry
        key = jwt.PyJWK(entry, algorithm="ES256")
        assert key.key.public_numbers() == public[entry["kid"]], "bundle and JWKS keys differ"
    assert {e["kid"] for e in bundle["keys"]} == set(public)

    try:
        jwt.PyJWKClient(bundle_url, cache_keys=False).get_signing_keys()
    except jwt.PyJWKClientError:
        pass
    else:
        raise AssertionError("generic clients must not treat jwt-svid keys as signing keys")

    print(json.dumps({"ok": True, "keys": sorted(public), "spiffe_sequence": bundle["spiffe_sequence"]}))


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
