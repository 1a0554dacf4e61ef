"""A GLM server as the command reaches it: its root URL, its `/v1/models` list (the one reader of it), the model to use.

Why one reader: `chat`, `check` and `claude-code` need the served model's id and context, and the server start-up
waits until the list answers; each failure (no server, wrong URL, missing API key) is explained once, here.
"""

from __future__ import annotations

import httpx


class EndpointError(RuntimeError):
    """The server cannot be used, an HTTP error or an unreadable answer; the message says what to check."""


def api_root(url: str) -> str:
    """`http://host:8000`, `.../v1`, `.../v1/` and `host:8000` all mean the same server; return
    `http://host:8000` (a URL without a scheme is plain HTTP, as a GLM server on a port is)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url[:-3] if url.endswith("/v1") else url


def _unreachable(root: str, err: httpx.HTTPError) -> str:
    """What an httpx failure to reach `root` means for the user, and what to check."""
    text = str(err)
    if isinstance(err, httpx.TimeoutException):
        return (f"{root} did not answer in time: is the address right, is a firewall in between, or is the "
                "server still loading (a large checkpoint takes minutes)?")
    if any(s in text for s in ("Name or service not known", "nodename nor servname", "getaddrinfo",
                                "Temporary failure in name resolution")):
        return f"cannot resolve the host in {root}: check the URL's host name"
    if isinstance(err, httpx.ConnectError):
        return (f"nothing is listening at {root} ({text}): start a server there (`glm-plugin serve`; on another "
                "machine with --host 0.0.0.0, which is not the default) or pass the right URL and port")
    return f"{root} did not answer like an HTTP server ({type(err).__name__}: {text}): check the URL and port"


def list_models(url: str, api_key: str | None = None, timeout: float = 5.0) -> list[dict]:
    """The server's `/v1/models` entries (`id`, `max_model_len`, ...), or an EndpointError that says what to fix:
    no server, a wrong URL, a missing API key."""
    root = api_root(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        reply = httpx.get(root + "/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as err:
        raise EndpointError(_unreachable(root, err)) from None
    if reply.status_code in (401, 403):
        raise EndpointError(f"{root} wants an API key (HTTP {reply.status_code}): pass --api-key KEY (the key the "
                            "server was started with) or set GLM_API_KEY")
    try:
        data = reply.json()["data"] if reply.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        data = None
    if not isinstance(data, list):
        raise EndpointError(f"{root}/v1/models answered HTTP {reply.status_code} without a model list: this is "
                            "not an OpenAI-compatible server's root; pass the URL of the server itself, e.g. "
                            "http://HOST:8000 (the port `glm-plugin serve` printed)")
    return data


def pick_model(models: list[dict], wanted: str | None, root: str) -> dict:
    """The entry for `wanted` (default: the first), or an EndpointError naming the models the server has."""
    ids = [m.get("id") for m in models]
    if not models:
        raise EndpointError(f"{root}/v1/models lists no model; is the server still starting?")
    if wanted is None:
        return models[0]
    if wanted not in ids:
        raise EndpointError(f"{root} serves {', '.join(map(str, ids))}, not {wanted!r}: pass --model {ids[0]} "
                            "(or leave --model out for the first)")
    return models[ids.index(wanted)]


def served_model_ids(url: str, timeout: float = 2.0) -> list[str]:
    """The served model ids once `/v1/models` answers, else an empty list (the engine is still loading)."""
    try:
        return [m["id"] for m in list_models(url, timeout=timeout)]
    except EndpointError:
        return []
