"""Drives an aims server's OAuth endpoints with third-party libraries: Authlib's OAuth 2.0
client for token exchange (RFC 8693), introspection (RFC 7662) and revocation (RFC 7009), and
joserfc for the DPoP proofs (RFC 9449) and for verifying the access tokens (RFC 9068) against
the JWKS named by the RFC 8414 metadata.

Usage: check_token_exchange.py SCENE_FILE

SCENE_FILE is JSON written by the Rust test: `base` (the issuer), `admin_token`, `audience`,
`scope`, `intent`, `planner` and `executor` (each `spiffe_id` and `svid`, the planner also
`key_file`: its private key as PKCS#8 PEM). The policies are pushed and the agents attested;
this script registers the resource servers itself (plain JSON over the admin API, as
set-up, not as part of what is checked).

Checks, in order:
- metadata: Authlib's RFC 8414 validator (`AuthorizationServerMetadata.validate()`) passes
  with no exception, `response_types_supported` included; the endpoints are the issuer's;
- the SVID verifies against the JWKS with joserfc and is bound (`cnf.jkt`) to the key in
  SCENE_FILE, whose RFC 7638 thumbprint joserfc computes;
- token exchange with Authlib's OAuth2Session (public client, `none` authentication) and a DPoP
  proof built with joserfc (typ dpop+jwt, jwk, htm, htu = token_endpoint exactly as in the
  metadata, iat, jti) passed through `headers=`: token_type DPoP, issued_token_type, scope,
  `Cache-Control: no-store`; refused exchanges come back as Authlib errors with the RFC codes
  (no proof, a replayed proof, another key's proof, another htu, a wrong typ);
- the access token verifies with joserfc against jwks_uri: header typ at+jwt, alg ES256, a kid
  of the JWKS; JWTClaimsRegistry requires iss, aud, exp, iat, sub, client_id, jti, scope and
  their values; `cnf.jkt` is the agent's thumbprint; the same token is refused for another
  audience, after its expiry, for other algorithms and once tampered with; an SVID (signed by
  the same keys) is refused because its typ is not at+jwt;
- delegation (RFC 8693 actor_token) with Authlib: the executor's token narrows the scope, is
  bound to the executor's key and carries the nested `act` chain;
- introspection with Authlib as the resource server (client_secret_basic): `active: true` with
  the token's own claims, token_type DPoP, `no-store`; a wrong secret is 401 invalid_client
  with `WWW-Authenticate: Basic`; another resource server, an SVID and garbage see exactly
  `{"active": false}`;
- revocation with Authlib: a public client (no authentication: possession is enough) revokes
  the delegated token, the resource server (client_secret_basic) revokes its parent, unknown
  tokens get 200; each revoked token then introspects as exactly `{"active": false}`, while
  the parent stayed active after its child was revoked.

Prints one JSON line; exits non-zero on the first failure.
"""

import base64
import json
import os
import secrets
import sys
import time

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.client import DEFAULT_HEADERS
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet

GRANT_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TIMEOUT = 10
INACTIVE = {"active": False}


def fetch(url):
    response = requests.get(url, timeout=TIMEOUT)
    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
    return response.json()


def check_metadata(base):
    meta = fetch(f"{base}/.well-known/oauth-authorization-server")
    assert meta["issuer"] == base, meta
    # RFC 8414 wants https URLs; the test server is plain HTTP on loopback, which Authlib's
    # validator accepts only when told to.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    # Every member, the REQUIRED response_types_supported included: any ValueError fails.
    AuthorizationServerMetadata(meta).validate()
    # No authorization endpoint, so the one response type is the one that issues nothing.
    assert meta["response_types_supported"] == ["none"], meta
    assert "authorization_endpoint" not in meta, meta
    for name in ["token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"]:
        assert meta[name].startswith(base + "/"), (name, meta[name])
    assert GRANT_EXCHANGE in meta["grant_types_supported"], meta
    assert "ES256" in meta["dpop_signing_alg_values_supported"], meta
    assert meta["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"], meta
    assert {"none", "client_secret_basic"} <= set(meta["revocation_endpoint_auth_methods_supported"])
    return meta


def register_resource_server(base, admin_token, name, audience, system):
    """Set-up through the admin API (not one of the checks)."""
    response = requests.post(
        f"{base}/v1/resource-servers",
        json={"name": name, "audience": audience, "system": system},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return response.json()["client_secret"]


def dpop_proof(key, url, method="POST", typ="dpop+jwt"):
    """An RFC 9449 proof built with joserfc: the public key travels in the `jwk` header."""
    header = {"typ": typ, "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims = {"htm": method, "htu": url, "iat": int(time.time()), "jti": secrets.token_urlsafe(24)}
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dpop_headers(proof):
    return {**DEFAULT_HEADERS, "DPoP": proof}


class AtJwtVerifier:
    """RFC 9068 §4 checks with joserfc against the JWKS from jwks_uri."""

    def __init__(self, meta):
        self.issuer = meta["issuer"]
        self.jwks = fetch(meta["jwks_uri"])
        self.keys = KeySet.import_key_set(self.jwks)
        self.kids = {k["kid"] for k in self.jwks["keys"]}

    def verify(self, token, audience, now=None, algorithms=("ES256",), **expected):
        decoded = jwt.decode(token, self.keys, algorithms=list(algorithms))
        header = decoded.header
        if header.get("typ") != "at+jwt":
            raise InvalidClaimError("typ")
        assert header["alg"] == "ES256", header
        assert header["kid"] in self.kids, header
        options = {
            "iss": {"essential": True, "value": self.issuer},
            "aud": {"essential": True, "value": audience},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "sub": {"essential": True},
            "client_id": {"essential": True},
            "jti": {"essential": True},
            "scope": {"essential": True},
        }
        for name, value in expected.items():
            options[name] = {"essential": True, "value": value}
        jwt.JWTClaimsRegistry(now=now, **options).validate(decoded.claims)
        return header, decoded.claims

    def verify_svid(self, svid):
        """The SVID is signed by the same keys (typ JWT); its `cnf` names the agent's key."""
        decoded = jwt.decode(svid, self.keys, algorithms=["ES256"])
        assert decoded.header["typ"] == "JWT", decoded.header
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer}, exp={"essential": True}
        ).validate(decoded.claims)
        return decoded.claims


def refused(verify, *errors):
    try:
        verify()
    except errors:
        return True
    raise AssertionError(f"accepted where {errors} was expected")


def oauth_error(call, code):
    try:
        call()
    except OAuthError as error:
        assert error.error == code, (error.error, error.description, code)
        return error.description
    raise AssertionError(f"succeeded where {code} was expected")


def introspect(session, url, token, **kwargs):
    response = session.introspect_token(url, token=token, timeout=TIMEOUT, **kwargs)
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.headers.get("cache-control") == "no-store", response.headers
    return response.json()


def main(scene_file):
    with open(scene_file) as f:
        scene = json.load(f)
    base = scene["base"].rstrip("/")
    audience, scope, intent = scene["audience"], scene["scope"], scene["intent"]
    planner, executor = scene["planner"], scene["executor"]
    checked = []

    # --- discovery ------------------------------------------------------------------------
    meta = check_metadata(base)
    token_url = meta["token_endpoint"]
    introspection_url = meta["introspection_endpoint"]
    revocation_url = meta["revocation_endpoint"]
    verifier = AtJwtVerifier(meta)
    checked.append("rfc8414 metadata (authlib validator)")

    rs_name = scene["resource_server"]
    rs_secret = register_resource_server(base, scene["admin_token"], rs_name, audience, "github")
    other_secret = register_resource_server(
        base, scene["admin_token"], "other-tools", audience + "/other", "github"
    )

    # --- the agent's key and identity -----------------------------------------------------
    with open(planner["key_file"]) as f:
        key = ECKey.import_key(f.read())
    thumbprint = key.thumbprint()
    svid_claims = verifier.verify_svid(planner["svid"])
    assert svid_claims["sub"] == planner["spiffe_id"], svid_claims
    assert svid_claims["cnf"]["jkt"] == thumbprint, "the SVID is bound to the key handed over"
    executor_jkt = verifier.verify_svid(executor["svid"])["cnf"]["jkt"]
    checked.append("svid bound to the agent key (joserfc rfc7638 thumbprint)")

    # --- token exchange with Authlib and a joserfc DPoP proof ------------------------------
    agent = OAuth2Session(
        client_id=planner["spiffe_id"], token_endpoint_auth_method="none", default_timeout=TIMEOUT
    )
    responses = []
    agent.register_compliance_hook("access_token_response", lambda r: responses.append(r) or r)

    def exchange(proof, **extra):
        form = {
            "grant_type": GRANT_EXCHANGE,
            "subject_token": planner["svid"],
            "subject_token_type": TYPE_JWT,
            "scope": scope,
            "audience": audience,
            "intent": intent,
            **extra,
        }
        headers = dict(DEFAULT_HEADERS) if proof is None else dpop_headers(proof)
        return agent.fetch_token(token_url, headers=headers, **form)

    proof = dpop_proof(key, token_url)
    token = exchange(proof)
    response = responses[-1]
    assert response.status_code == 200, response.text
    assert response.headers.get("cache-control") == "no-store", response.headers
    assert token["token_type"] == "DPoP", token
    assert token["issued_token_type"] == TYPE_ACCESS, token
    assert token["scope"] == scope, token
    assert isinstance(token["expires_in"], int) and 0 < token["expires_in"] <= 900, token
    assert "refresh_token" not in token, token
    access = token["access_token"]
    checked.append("rfc8693 exchange via authlib OAuth2Session.fetch_token + DPoP header")

    # Refusals, as Authlib reports them.
    oauth_error(lambda: exchange(None), "invalid_request")
    oauth_error(lambda: exchange(proof), "invalid_dpop_proof")  # replayed
    stranger = ECKey.generate_key("P-256")
    oauth_error(lambda: exchange(dpop_proof(stranger, token_url)), "invalid_dpop_proof")
    oauth_error(lambda: exchange(dpop_proof(key, token_url + "/")), "invalid_dpop_proof")
    oauth_error(lambda: exchange(dpop_proof(key, token_url, method="GET")), "invalid_dpop_proof")
    oauth_error(lambda: exchange(dpop_proof(key, token_url, typ="JWT")), "invalid_dpop_proof")
    oauth_error(
        lambda: exchange(dpop_proof(key, token_url), audience="https://nowhere.example"),
        "invalid_target",
    )
    checked.append("refused exchanges: no proof, replay, other key, htu, htm, typ, target")

    # --- the access token, verified by joserfc against jwks_uri ---------------------------
    header, claims = verifier.verify(
        access,
        audience,
        sub=planner["spiffe_id"],
        client_id=planner["spiffe_id"],
        scope=scope,
    )
    assert claims["cnf"] == {"jkt": thumbprint}, claims
    assert claims["intent"] == intent and claims["task_id"] == token["task_id"], claims
    assert claims["exp"] - claims["iat"] == token["expires_in"], (claims, token)
    assert "act" not in claims, claims
    refused(lambda: verifier.verify(access, "https://someone-else.example"), InvalidClaimError)
    refused(lambda: verifier.verify(access, audience, now=claims["exp"] + 1), ExpiredTokenError)
    refused(lambda: verifier.verify(access, audience, algorithms=("RS256", "HS256")), JoseError)
    head, _, signature = access.split(".")
    forged = jws.extract_compact(access.encode()).payload.replace(b"read", b"drop")
    tampered = ".".join([head, b64url(forged), signature])
    refused(lambda: verifier.verify(tampered, audience), BadSignatureError)
    refused(lambda: verifier.verify(planner["svid"], audience), InvalidClaimError, MissingClaimError)
    checked.append("rfc9068 at+jwt via joserfc: typ, alg, kid, iss, aud, exp, claims, cnf")

    # --- delegation (RFC 8693 actor_token) with Authlib -----------------------------------
    narrower = scene["delegated_scope"]
    child_token = agent.fetch_token(
        token_url,
        headers=dpop_headers(dpop_proof(key, token_url)),
        grant_type=GRANT_EXCHANGE,
        subject_token=access,
        subject_token_type=TYPE_ACCESS,
        actor_token=executor["svid"],
        actor_token_type=TYPE_JWT,
        scope=narrower,
    )
    child = child_token["access_token"]
    assert child_token["token_type"] == "DPoP" and child_token["scope"] == narrower, child_token
    _, child_claims = verifier.verify(
        child,
        audience,
        sub=planner["spiffe_id"],
        client_id=executor["spiffe_id"],
        scope=narrower,
    )
    assert child_claims["cnf"] == {"jkt": executor_jkt}, child_claims
    assert child_claims["act"] == {
        "sub": executor["spiffe_id"],
        "act": {"sub": planner["spiffe_id"]},
    }, child_claims
    assert child_claims["task_id"] == claims["task_id"] and child_claims["exp"] <= claims["exp"]
    checked.append("rfc8693 delegation via authlib: narrower scope, act chain, executor cnf")

    # --- introspection with Authlib as the resource server --------------------------------
    rs = OAuth2Session(client_id=rs_name, client_secret=rs_secret, default_timeout=TIMEOUT)
    assert rs.token_endpoint_auth_method == "client_secret_basic"
    active = introspect(rs, introspection_url, access, token_type_hint="access_token")
    assert active.pop("active") is True, active
    assert active.pop("token_type") == "DPoP", active
    assert active == claims, (active, claims)
    child_active = introspect(rs, introspection_url, child)
    assert child_active["active"] is True and child_active["act"] == child_claims["act"]

    wrong = OAuth2Session(client_id=rs_name, client_secret=rs_secret + "x")
    denied = wrong.introspect_token(introspection_url, token=access, timeout=TIMEOUT)
    assert denied.status_code == 401, (denied.status_code, denied.text)
    assert denied.json()["error"] == "invalid_client", denied.text
    assert denied.headers["www-authenticate"].lower().startswith("basic"), denied.headers
    other = OAuth2Session(client_id="other-tools", client_secret=other_secret)
    assert introspect(other, introspection_url, access) == INACTIVE, "another audience"
    assert introspect(rs, introspection_url, planner["svid"]) == INACTIVE, "an SVID"
    assert introspect(rs, introspection_url, "not-a-token") == INACTIVE, "garbage"
    checked.append("rfc7662 introspection via authlib (client_secret_basic)")

    # --- revocation with Authlib ----------------------------------------------------------
    # A public client (`none`: client_id in the body, no Authorization): possession of a token
    # is enough to revoke it.
    revoked = agent.revoke_token(
        revocation_url, token=child, token_type_hint="access_token", timeout=TIMEOUT
    )
    assert revoked.status_code == 200, (revoked.status_code, revoked.text)
    assert "authorization" not in {h.lower() for h in revoked.request.headers}
    assert introspect(rs, introspection_url, child) == INACTIVE, "revoked without authentication"
    assert introspect(rs, introspection_url, access)["active"] is True, "the parent stays"
    # The resource server, with client_secret_basic.
    assert rs.revocation_endpoint_auth_method == "client_secret_basic"
    revoked = rs.revoke_token(revocation_url, token=access, timeout=TIMEOUT)
    assert revoked.status_code == 200, (revoked.status_code, revoked.text)
    assert revoked.request.headers["authorization"].startswith("Basic ")
    assert introspect(rs, introspection_url, access) == INACTIVE, "revoked by the resource server"
    unknown = rs.revoke_token(revocation_url, token="not-a-token", timeout=TIMEOUT)
    assert unknown.status_code == 200, (unknown.status_code, unknown.text)
    bad = wrong.revoke_token(revocation_url, token=access, timeout=TIMEOUT)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client", bad.text
    # Revocation is seen through introspection (and the feed); the JWT itself still verifies.
    verifier.verify(access, audience)
    checked.append("rfc7009 revocation via authlib (none and client_secret_basic)")

    print(
        json.dumps(
            {
                "ok": True,
                "kid": header["kid"],
                "access_jti": claims["jti"],
                "delegated_jti": child_claims["jti"],
                "task_id": claims["task_id"],
                "thumbprint": thumbprint,
                "checked": checked,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
