"""swap.js as a static asset: compressed once at start, revalidated by a strong ETag, and
published at a versioned URL that caches for a year, with its Subresource Integrity hash.

``/v1/swap.js`` always serves the current script (an hour's cache, then a 304 revalidation);
``/v1/swap/{version}.js`` serves only the version named, so a page that pins it with
``integrity=`` never receives other bytes than the hash it pinned (an upgrade gets a new URL).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

import brotli
from aiohttp import web

from callrouter.api.endpoints import RequestContext
from callrouter.api.problems import not_found

__all__ = ["SWAP_SCRIPT", "SwapScript", "serve_current", "serve_versioned"]

CURRENT_MAX_AGE = 3600
VERSIONED_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class SwapScript:
    """One build of the script and its encoded representations."""

    body: bytes
    version: str
    """The first 16 hex digits of the body's SHA-256: the versioned URL's name."""
    integrity: str
    """sha384-<base64>: the value for the script tag's ``integrity`` attribute (SRI)."""
    encodings: dict[str, bytes]
    """Content-Coding -> body: "identity", "gzip", "br"."""

    @classmethod
    def of(cls, body: bytes) -> SwapScript:
        digest = hashlib.sha384(body).digest()
        return cls(
            body,
            hashlib.sha256(body).hexdigest()[:16],
            "sha384-" + base64.b64encode(digest).decode(),
            {
                "identity": body,
                # mtime=0: the same bytes on every start and every node, so ETags agree.
                "gzip": gzip.compress(body, compresslevel=9, mtime=0),
                "br": brotli.compress(body, quality=11),
            },
        )

    @property
    def path(self) -> str:
        return f"/v1/swap/{self.version}.js"

    def etag(self, coding: str) -> str:
        """Strong, and one per representation (RFC 9110 §8.8.3: a gzip body is not the same
        bytes as the plain one)."""
        return f'"{self.version}"' if coding == "identity" else f'"{self.version}-{coding}"'


SWAP_SCRIPT = SwapScript.of(
    resources.files("callrouter.api").joinpath("static/swap.js").read_bytes()
)


def _accepted(header: str) -> dict[str, float]:
    """Accept-Encoding as coding -> q (RFC 9110 §12.5.3)."""
    accepted: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        if coding.strip():
            accepted[coding.strip().lower()] = q
    return accepted


def _coding(request: web.Request) -> str:
    accepted = _accepted(request.headers.get("Accept-Encoding", ""))
    for coding in ("br", "gzip"):  # smallest first
        if accepted.get(coding, accepted.get("*", 0.0)) > 0:
            return coding
    return "identity"


def _not_modified(request: web.Request, script: SwapScript) -> bool:
    """If-None-Match names one of this build's representations (weak comparison, §13.1.2)."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    ours = {script.etag(c) for c in script.encodings}
    return any(tag.strip().removeprefix("W/") in ours for tag in header.split(","))


def _serve(request: web.Request, script: SwapScript, cache_control: str) -> web.Response:
    coding = _coding(request)
    headers = {
        "Cache-Control": cache_control,
        "ETag": script.etag(coding),
        "Vary": "Accept-Encoding",
        # Pages load it with crossorigin="anonymous" to check its integrity hash.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if _not_modified(request, script):
        return web.Response(status=304, headers=headers)
    if coding != "identity":
        headers["Content-Encoding"] = coding
    return web.Response(
        body=script.encodings[coding], headers=headers, content_type="application/javascript"
    )


async def serve_current(ctx: RequestContext) -> web.Response:
    return _serve(ctx.request, SWAP_SCRIPT, f"public, max-age={CURRENT_MAX_AGE}")


async def serve_versioned(ctx: RequestContext) -> web.Response:
    if ctx.request.match_info["version"] != SWAP_SCRIPT.version:
        raise not_found("swap script version")
    return _serve(ctx.request, SWAP_SCRIPT, VERSIONED_CACHE)
