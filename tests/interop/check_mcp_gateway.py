"""Drives the aims gateway with the official MCP Python SDK's client (`mcp.Client` over
streamable HTTP), the way an agent built on that SDK would, through an MCP route in front of
an MCP server built with the same SDK (mcp_tool_server.py).

Usage: check_mcp_gateway.py SCENE_FILE

SCENE_FILE is JSON written by the Rust test: `endpoint` (the MCP route's URL at the gateway),
`token` (the agent's DPoP-bound task token for the gateway's audience) and `key_file` (the
agent's private key, PKCS#8 PEM). Every HTTP request the SDK sends gets `Authorization: DPoP`
and a fresh RFC 9449 proof built with joserfc (htm, htu, iat, jti, ath), added by an httpx2
`Auth` — the SDK's own extension point for credentials.

For each protocol generation — the initialize handshake (2025-11-25 and before, `legacy`) and
the stateless 2026-07-28 — it checks:
- `tools/list` shows exactly the tools the token could call (`search_code`, and
  `merge_pull_request`, which needs a human's approval), not `delete_repository`;
- `search_code` is called and answered by the server (which accepts only the credential the
  gateway injects, and refuses any request carrying the agent's token or proof);
- `delete_repository` comes back as an MCP error with the gateway's `denied` code (-32003)
  and a decision id, and `merge_pull_request` as `approval_required` (-32004) with the approval URL.
And without the token: the gateway answers 401 with `WWW-Authenticate: Bearer
resource_metadata=…`, and the metadata it names is RFC 9728 protected-resource metadata.

Prints one JSON line; exits non-zero on the first failure.
"""

import asyncio
import base64
import hashlib
import json
import secrets
import sys
import time
import urllib.request
import urllib.error

import httpx2
from joserfc import jwt
from joserfc.jwk import ECKey
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

DENIED = -32003
APPROVAL_REQUIRED = -32004


class DPoPAuth(httpx2.Auth):
    """The agent's DPoP-bound token and a fresh proof on every request."""

    def __init__(self, token, key):
        self.token = token
        self.key = key
        self.ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()

    def auth_flow(self, request):
        htu = str(request.url.copy_with(query=None, fragment=None))
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        claims = {
            "htm": request.method,
            "htu": htu,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(24),
            "ath": self.ath,
        }
        request.headers["Authorization"] = f"DPoP {self.token}"
        request.headers["DPoP"] = jwt.encode(header, claims, self.key, algorithms=["ES256"])
        yield request


async def exercise(endpoint, auth, mode):
    http = httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0))
    async with http, Client(streamable_http_client(endpoint, http_client=http), mode=mode) as client:
        version = client.protocol_version
        modern = version == "2026-07-28"
        assert modern == (mode == "2026-07-28"), (mode, version)
        listed = await client.list_tools()
        names = [tool.name for tool in listed.tools]
        assert names == ["search_code", "merge_pull_request"], names
        result = await client.call_tool("search_code", {"q": "aims"})
        texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
        assert texts == ["found aims"], result
        refused = {}
        for tool, arguments, code in [
            ("delete_repository", {"name": "app"}, DENIED),
            ("merge_pull_request", {"pr": 12}, APPROVAL_REQUIRED),
        ]:
            try:
                answer = await client.call_tool(tool, arguments)
            except MCPError as error:
                assert error.code == code, (tool, error.code, error.message)
                assert error.data["decision_id"], error.data
                refused[tool] = {"code": error.code, "message": error.message, "data": error.data}
            else:
                raise AssertionError(f"{tool} was not refused: {answer}")
        assert refused["merge_pull_request"]["data"]["approval_url"].startswith("http"), refused
        return {"protocol_version": version, "tools": names, "search_code": texts[0], "refused": refused}


def challenge(endpoint):
    """The 401 without a token, and the metadata its challenge names."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    request = urllib.request.Request(endpoint, data=body, headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(request)
    except urllib.error.HTTPError as error:
        assert error.code == 401, error.code
        challenges = error.headers.get_all("WWW-Authenticate")
    else:
        raise AssertionError("a call without a token was answered")
    bearer = [c for c in challenges if c.startswith("Bearer ")]
    assert bearer, challenges
    params = dict(
        part.strip().split("=", 1) for part in bearer[0][len("Bearer ") :].split(",")
    )
    metadata_url = params["resource_metadata"].strip('"')
    with urllib.request.urlopen(metadata_url) as answer:
        metadata = json.load(answer)
    for member in ["resource", "authorization_servers", "scopes_supported"]:
        assert metadata.get(member), (member, metadata)
    assert metadata["dpop_bound_access_tokens_required"] is True, metadata
    return {"scope": params["scope"].strip('"'), "resource": metadata["resource"]}


def main():
    with open(sys.argv[1]) as f:
        scene = json.load(f)
    with open(scene["key_file"]) as f:
        key = ECKey.import_key(f.read())
    auth = DPoPAuth(scene["token"], key)
    out = {"ok": True}
    for mode in ["legacy", "2026-07-28"]:
        out[mode] = asyncio.run(exercise(scene["endpoint"], auth, mode))
    out["unauthenticated"] = challenge(scene["endpoint"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
