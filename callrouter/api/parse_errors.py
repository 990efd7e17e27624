"""Requests aiohttp cannot parse, answered as problem+json like every other refusal.

aiohttp's HTTP parser refuses a malformed request (a bad request line, a header line over its
limit, a bad ``Content-Length``, too many headers) before any handler or middleware runs, and
its request handler answers a plain-text 400 that quotes the offending bytes back. aiohttp
has no hook for that answer (aio-libs/aiohttp#3287), so the site below builds each
connection's handler from a subclass that answers problem+json naming the part that was
wrong, without echoing the peer's bytes.

The parser says which part only in its message (llhttp's reason, then the bytes it quotes)
and in a few exception classes; the table here reads both and falls back to a plain 400.
A line over the limit is the one case it cannot place: request line and header lines share
the limit and the exception, so that answer names both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)

from callrouter.api.problems import FieldError, Problem

__all__ = ["SERVER_LOG", "ProblemRequestHandler", "ProblemSite", "parse_problem"]


class MalformedRequestLog(logging.Filter):
    """aiohttp logs each malformed request (a header line over 8 KiB, a bad request line) as an
    ERROR with a traceback; anyone can send those, so each becomes one INFO line instead and a
    flood of them cannot fill the disk with tracebacks. Installed on ``SERVER_LOG``."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "http: refused a malformed request: %s", (error.message,)
            record.exc_info, record.exc_text = None, None
        return True


SERVER_LOG = logging.getLogger("callrouter.http")
"""The logger of the request handlers: aiohttp's refusals and unhandled errors."""
SERVER_LOG.addFilter(MalformedRequestLog())


def _reason(error: HttpProcessingError) -> str:
    """What the parser says it refused, without any of the peer's bytes."""
    head, quoted, _ = error.message.partition(":\n\n")
    if quoted:  # llhttp's reason, then the bytes it quotes and a caret under the fault
        return head.splitlines()[-1].strip()
    # aiohttp's own fixed texts ("Too many headers received"); its subclasses quote bytes.
    return error.message.rstrip(".") if type(error) is BadHttpMessage else ""


_NAMED = ("Transfer-Encoding", "Content-Length", "Host")
"""Headers the parser checks itself, named when one is what it refused (the first named in a
reason is the one at fault: "Transfer-Encoding can't be present with Content-Length")."""


def _refused(status: int, part: str, reason: str) -> Problem:
    return Problem(status, f"{part}: {reason}", [FieldError(part, reason)])


def parse_problem(error: HttpProcessingError, max_headers: int) -> Problem:
    """The answer to a request the parser refused with ``error``.

    :param max_headers: the handler's limit on header fields (the parser's message omits it).
    """
    if isinstance(error, LineTooLong):
        limit = error.args[1]
        return _refused(
            431, "request line or header", f"a line of the request head is over {limit} bytes"
        )
    reason = _reason(error)
    if isinstance(error, BadHttpMethod):
        if "HTTPS" in error.message:  # a TLS ClientHello where a request line should be
            return _refused(400, "request line", "TLS sent to a plain HTTP port")
        return _refused(400, "request line", reason or "not a known method")
    if isinstance(error, BadStatusLine):
        return _refused(400, "request line", reason or "not METHOD TARGET HTTP/1.x")
    if isinstance(error, InvalidURLError):
        return _refused(400, "request line", "the target is not a valid URL")
    if isinstance(error, PayloadEncodingError):
        return _refused(400, "body", reason or "its encoding is broken")
    if isinstance(error, InvalidHeader):
        # ``hdr`` is a header's name when the parser knew which, else the line it refused.
        if error.hdr in _NAMED:
            return _refused(400, error.hdr, "not a valid value")
        return _refused(400, "headers", "a header line is not valid")
    if reason.startswith("Too many headers"):
        return _refused(431, "headers", f"more than {max_headers} header fields")
    for header in _NAMED:
        if header in reason:
            return _refused(400, header, reason)
    if "chunk" in reason:
        return _refused(400, "body", reason)
    if "header" in reason.lower():
        return _refused(400, "headers", reason)
    return _refused(400, "request", reason or "not a valid HTTP/1.1 request")


class ProblemRequestHandler(web.RequestHandler):
    """aiohttp's request handler, answering what fails before the application runs (parse
    errors; a handler's error that escaped every middleware) as problem+json."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own keeps its logging (one INFO line for a refusal, through
        # ``MalformedRequestLog``) and its refusal to answer twice; only its plain-text answer
        # is replaced.
        super().handle_error(request, status, exc, message)
        if isinstance(exc, HttpProcessingError):
            problem = parse_problem(exc, self.max_headers)
            instance = None  # the request line may be what could not be read
        elif status == 504:
            problem = Problem(504, "the request took too long to answer")
            instance = request.path
        else:
            problem = Problem(status, "internal error; it has been logged")
            instance = request.path
        response = problem.response(instance)
        response.force_close()
        return response


class ProblemSite(web.TCPSite):
    """aiohttp's TCP site with ``ProblemRequestHandler`` for every connection.

    :param keepalive_timeout: seconds an idle keep-alive connection is kept (aiohttp's own,
        graceful close).
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        backlog: int = 128,
        keepalive_timeout: float,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, reuse_address=True)
        self._keepalive_timeout = keepalive_timeout

    def protocol_factory(self, handler: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """What each accepted connection speaks: ``handler``'s protocol itself, here."""
        return handler

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def handler() -> ProblemRequestHandler:
            # The application logs each request itself (``access_log.py``): no access
            # log here, which aiohttp spells None (documented, though typed as a Logger).
            return ProblemRequestHandler(
                server,
                loop=loop,
                keepalive_timeout=self._keepalive_timeout,
                logger=SERVER_LOG,
                access_log=None,  # type: ignore[arg-type]
            )

        self._server = await loop.create_server(
            self.protocol_factory(handler),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
