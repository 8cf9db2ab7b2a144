"""An MCP tool server built with the official MCP Python SDK (`MCPServer`, streamable HTTP),
standing behind the aims gateway in the interoperability test.

Usage: mcp_tool_server.py SECRET AGENT_TOKEN

It serves three tools (`search_code`, `merge_pull_request`, `delete_repository`) at http://127.0.0.1:PORT/mcp, PORT
chosen by the system and printed as `listening on PORT` once it accepts connections. Every
request must carry `Authorization: Bearer SECRET` — the credential the gateway injects — and
no `DPoP` header, and no header may contain AGENT_TOKEN (the agent's task token): anything
else is answered 401, so a gateway that forwarded the agent's credential fails the test.
"""

import asyncio
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

SECRET, AGENT_TOKEN = sys.argv[1], sys.argv[2]

server = MCPServer("repo-tools")


@server.tool()
def search_code(q: str) -> str:
    """Searches the repositories' code."""
    return f"found {q}"


@server.tool()
def merge_pull_request(pr: int) -> str:
    """Merges a pull request."""
    return f"merged {pr}"


@server.tool()
def delete_repository(name: str) -> str:
    """Deletes a repository."""
    return f"deleted {name}"


def only_the_gateway(app):
    """Refuses every request without the injected credential, or with the agent's."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            forwarded_agent = "dpop" in headers or any(AGENT_TOKEN in v for v in headers.values())
            if headers.get("authorization") != f"Bearer {SECRET}" or forwarded_agent:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"not the gateway"})
                return
        await app(scope, receive, send)

    return guarded


async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    app = only_the_gateway(server.streamable_http_app(streamable_http_path="/mcp"))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    served = uvicorn.Server(config)
    serving = asyncio.create_task(served.serve(sockets=[sock]))
    while not served.started:
        await asyncio.sleep(0.05)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    await serving


asyncio.run(main())
