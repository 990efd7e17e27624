"""The transaction layer of one SIP endpoint: bytes in, bytes and events out (RFC 3261 §17).

Feed it what the transports receive (``receive``), what the layer above decides (``respond``,
``send_request``, ``send_stateless``) and timer ticks (``handle_timers``), each with ``now``.
Pull ``transmissions()``, ``next_event()`` and ``next_deadline()`` after every feed.

It matches requests to server transactions (§17.2.3, with the RFC 2543 fallback), responses to
client transactions (§17.1.3), absorbs retransmissions, answers CANCEL (§9.2), detects merged
requests (§8.2.2.2, answered 482) and sends responses where §18.2.2 and RFC 3581 say.
"""

from __future__ import annotations

import heapq
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from callrouter.sip.admission import Admission, Drop, Verdict, admit_everyone
from callrouter.sip.errors import LocalError, MessageTooLarge, ParseError
from callrouter.sip.events import (
    AckReceived,
    CancelReceived,
    Event,
    Flow,
    MessageRejected,
    RequestReceived,
    ResponseReceived,
    Transmission,
)
from callrouter.sip.headers import Headers, Via, canonical_name
from callrouter.sip.message import REASONS, Limits, Message, Request, Response, parse_message
from callrouter.sip.transactions import (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
    State,
    Timers,
    Transaction,
    Wire,
)

__all__ = ["MAGIC_COOKIE", "SipCounters", "SipEndpoint"]

MAGIC_COOKIE = "z9hG4bK"
_MERGE_MEMORY = 32.0  # seconds a (From tag, Call-ID, CSeq) stays known for §8.2.2.2
MergeKey = tuple[str, str, int, str]
"""§8.2.2.2's From tag, Call-ID, CSeq number and method."""


def _server_key(request: Request) -> str:
    """§17.2.3: branch + sent-by + method (ACK matches its INVITE); RFC 2543 peers fall back to
    the dialog identifiers and the top Via."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    host, port = via.sent_by
    if branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return f"{branch}|{host}:{port}|{method}"
    dialog = f"{request.from_.tag}|{request.call_id}|{request.cseq.number}"
    return f"2543|{request.uri}|{dialog}|{via}|{method}"


def _client_key(branch: str, method: str) -> str:
    return f"{branch}|{'INVITE' if method == 'ACK' else method}"


def response_flow(via: Via, received_on: Flow) -> Flow:
    """Where a response whose top Via is ``via`` goes (§18.2.2, RFC 3581 §4): back on the
    connection for TCP/TLS, else to ``received``/``rport`` of the top Via, falling back to its
    sent-by. A response copies its request's Via (§8.2.6.2), so the request's (as stamped on
    arrival) says where every response of its transaction goes."""
    if received_on.reliable:
        return received_on
    host = (via.params.get("received") or via.host).strip("[]")
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isdigit() else via.port or 5060
    if (host, port) == (received_on.host, received_on.port):
        return received_on  # the usual case: kept once per transaction, not a copy of it
    return Flow(received_on.transport, host, port)


def rejection_for(data: bytes, error: ParseError, agent: str = "") -> Response | None:
    """A stateless answer to bytes that failed to parse, built from whatever fields can be read."""
    if error.status is None:
        return None
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    headers = Headers()
    for line in head.split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon and canonical_name(name.strip()) in ("via", "from", "to", "call-id", "cseq"):
            headers.add(name.strip(), value.strip())
    try:
        if headers.get("via") is None:
            return None
    except ParseError:
        return None  # a Via that cannot even be split says nowhere to answer (bench/fuzz_sip.py)
    response = Response(error.status, REASONS.get(error.status, "Bad Request"), headers)
    # Warning 399 carries the reason for the peer's logs; its warn-agent is a pseudonym (§20.43)
    # so that no product name reaches a scanner unless the operator configured one.
    warning = error.reason.replace('"', "'")[:200]
    response.headers.add("Warning", f'399 {agent or "-"} "{warning}"')
    return response


@dataclass(eq=False)
class SipCounters:
    """Plain counters of what the endpoint saw and sent, for an adapter to export as metrics."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests received, by method (retransmissions included)."""
    responses: Counter[int] = field(default_factory=Counter)
    """Responses sent, by status (retransmitted ones included)."""
    retransmissions: int = 0
    """Messages sent again on timers A, E, G or for a 2xx, and requests received again."""


@dataclass(eq=False)
class SipEndpoint:
    """Transaction layer state for every transaction of one process.

    :param advertised: per transport, the host:port written in our Via headers unless
        ``send_request`` is given one.
    :param admission: who may open transactions; refusals are sent statelessly, once.
    :param agent: product token for Server, User-Agent and warn-agent; empty sends none.
    :param new_token: where branch parameters and tags come from (injected for tests).
    """

    advertised: dict[str, str]
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    admission: Admission = field(default=admit_everyone)
    agent: str = ""
    new_token: Callable[[], str] = field(default=lambda: secrets.token_hex(8))
    counters: SipCounters = field(default_factory=SipCounters)
    _server: dict[str, ServerInvite | ServerNonInvite] = field(default_factory=dict)
    _client: dict[str, ClientInvite | ClientNonInvite] = field(default_factory=dict)
    _flows: dict[str, Flow] = field(default_factory=dict)
    """Per transaction, where what it sends goes: a client's requests, a server's responses."""
    _merge: dict[MergeKey, tuple[str, float]] = field(default_factory=dict)
    _merge_keys: dict[str, MergeKey] = field(default_factory=dict)
    """The key each transaction holds in ``_merge``, to forget it once the request is gone."""
    _timers: list[tuple[float, int, str]] = field(default_factory=list)
    _timer_seq: int = 0
    _out: list[Transmission] = field(default_factory=list)
    _events: deque[Event] = field(default_factory=deque)

    # -- outputs -----------------------------------------------------------------------------

    def transmissions(self) -> list[Transmission]:
        """What to send now, in order."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When ``handle_timers`` must next run (stale entries may make it early, never late)."""
        while self._timers:
            deadline, _, tid = self._timers[0]
            tx = self._transaction(tid)
            if tx is None or tx.deadline is None or tx.deadline > deadline:
                heapq.heappop(self._timers)
                if tx is not None and tx.deadline is not None:
                    self._schedule(tx)
                continue
            return deadline
        return None

    @property
    def transaction_count(self) -> int:
        return len(self._server) + len(self._client)

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, data: bytes, flow: Flow, now: float) -> None:
        """One datagram, or one framed message from a stream."""
        if not self.admission.admit_datagram(flow.host, now):
            return
        try:
            message = parse_message(data, self.limits, stream=flow.reliable)
        except ParseError as exc:
            self._unreadable(data, exc, flow, now)
            return
        if isinstance(message, Response):
            self._receive_response(message, flow, now)
        else:
            self._receive_request(message, flow, now)

    def framing_failed(self, error: ParseError, flow: Flow, now: float) -> None:
        """A stream could not be framed (the transport closes it): answered and counted as a
        message that failed to parse, so a request too large gets its 513 over TCP as over
        UDP. The bytes answered from are the head a ``MessageTooLarge`` carries."""
        if not self.admission.admit_datagram(flow.host, now):
            return
        head = error.head if isinstance(error, MessageTooLarge) else b""
        self._unreadable(head, error, flow, now)

    def respond(self, transaction_id: str, response: Response, now: float) -> None:
        """Answer a request that arrived as ``RequestReceived``."""
        tx = self._server.get(transaction_id)
        if tx is None:
            raise LocalError(f"no server transaction {transaction_id}")
        if response.status >= 200 and isinstance(tx, ServerInvite):
            self._forget_merge(tx.id)
        self._answer(tx, response, now)

    def send_request(
        self, request: Request, flow: Flow, now: float, *, sent_by: str | None = None
    ) -> str:
        """Send a request in a new client transaction; adds our Via with a fresh branch.

        :param sent_by: the host:port this peer must answer to (the transport computes it for
            a wildcard bind or NAT); None: the ``advertised`` entry for the flow's transport.
        """
        branch = MAGIC_COOKIE + self.new_token()
        if sent_by is None:
            sent_by = self.advertised.get(flow.transport, self.advertised.get("udp", "invalid"))
        request.headers.add(
            "Via", f"SIP/2.0/{flow.transport.upper()} {sent_by};branch={branch};rport", first=True
        )
        if self.agent:
            request.headers.add("User-Agent", self.agent)
        tid = _client_key(branch, request.method)
        cls = ClientInvite if request.method == "INVITE" else ClientNonInvite
        tx = cls(tid, request, flow.reliable, self.timers)
        self._client[tid] = tx
        self._flows[tid] = flow
        tx.start(now)
        self._drain(tx, now)
        return tid

    def cancel(self, invite_id: str, now: float) -> str | None:
        """CANCEL a pending INVITE we sent (§9.1): same Request-URI, Call-ID, From, To, Route,
        CSeq number and top Via, so the peer matches it to the INVITE. None when the INVITE
        already has a final response (nothing left to cancel)."""
        invite = self._client.get(invite_id)
        if not isinstance(invite, ClientInvite) or invite.state not in (
            State.CALLING,
            State.PROCEEDING,
        ):
            return None
        original = invite.request
        assert original is not None  # only a transaction that waits out a timer lets it go
        headers = Headers()
        headers.add("Via", original.headers.get("via") or "")
        for name, value in original.headers:
            if canonical_name(name) in ("route", "from", "to", "call-id"):
                headers.add(name, value)
        headers.add("Max-Forwards", "70")
        headers.add("CSeq", f"{original.cseq.number} CANCEL")
        request = Request("CANCEL", original.uri, headers)
        tid = _client_key(original.top_via.branch or "", "CANCEL")
        flow = self._flows[invite_id]
        tx = ClientNonInvite(tid, request, flow.reliable, self.timers)
        self._client[tid] = tx
        self._flows[tid] = flow
        tx.start(now)
        self._drain(tx, now)
        return tid

    def send_stateless(self, message: Message, flow: Flow) -> None:
        """Send outside any transaction: ACK for a 2xx, a 2xx retransmission (§13.3.1.4)."""
        if isinstance(message, Response):
            self.counters.retransmissions += 1
        self._out.append(Transmission(message.to_bytes(), flow))

    def transport_failed(self, flow: Flow, reason: str, now: float) -> None:
        """The transport could not reach ``flow`` (a refused connection, a TLS peer that failed
        verification): each client transaction waiting there ends with a 503 the layer above
        sees as ``ResponseReceived`` (§8.1.3.1), so failover need not wait for Timer B.

        :param reason: why, for the 503's reason phrase.
        """
        for tid in [tid for tid, sent_to in self._flows.items() if sent_to == flow]:
            tx = self._client.get(tid)
            if tx is None:
                continue
            response = tx.transport_failed(reason, now)
            if response is not None:
                self._events.append(ResponseReceived(response, tid, flow))
            self._drain(tx, now)

    def handle_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, tid = heapq.heappop(self._timers)
            tx = self._transaction(tid)
            if tx is None:
                continue
            tx.handle_timer(now)
            self.counters.retransmissions += len(tx.outgoing)
            self._drain(tx, now)
        for key in [k for k, (_, until) in self._merge.items() if until <= now]:
            del self._merge[key]

    # -- internals ---------------------------------------------------------------------------

    def _transaction(self, tid: str) -> Transaction | None:
        return self._server.get(tid) or self._client.get(tid)

    def _schedule(self, tx: Transaction) -> None:
        if tx.deadline is not None:
            self._timer_seq += 1
            heapq.heappush(self._timers, (tx.deadline, self._timer_seq, tx.id))

    def _answer(self, tx: ServerInvite | ServerNonInvite, response: Response, now: float) -> None:
        # Stamped before the transaction sees it: a final is serialised there, once, and the
        # bytes sent again for retransmitted requests must be the ones sent first.
        self._stamp(response)
        tx.respond(response, now)
        self._drain(tx, now)

    def _drain(self, tx: Transaction, now: float) -> None:
        flow = self._flows[tx.id]
        for message in tx.outgoing:
            if isinstance(message, Wire):
                if message.status is not None:
                    self.counters.responses[message.status] += 1
                self._out.append(Transmission(message.data, flow))
            elif isinstance(message, Response):
                self._send_response(message, flow)
            else:
                self._out.append(Transmission(message.to_bytes(), flow))
        tx.outgoing.clear()
        self._events.extend(tx.events)
        tx.events.clear()
        if tx.state is State.TERMINATED:
            self._server.pop(tx.id, None)
            self._client.pop(tx.id, None)
            self._flows.pop(tx.id, None)
            self._forget_merge(tx.id)
        else:
            self._schedule(tx)

    def _unreadable(self, data: bytes, error: ParseError, flow: Flow, now: float) -> None:
        if self.admission.malformed(flow.host, now):
            self._reject(data, error, flow)
        else:
            self._events.append(MessageRejected(error.reason, None, flow))

    def _reject(self, data: bytes, error: ParseError, flow: Flow) -> None:
        response = rejection_for(data, error, self.agent)
        if response is None:
            self._events.append(MessageRejected(error.reason, None, flow))
            return
        # The Via may be the broken part: a stateless refusal goes back to the source address.
        self.counters.responses[response.status] += 1
        self._out.append(Transmission(response.to_bytes(), flow))
        self._events.append(MessageRejected(error.reason, response.status, flow))

    def _receive_response(self, response: Response, flow: Flow, now: float) -> None:
        branch = response.top_via.branch or ""
        tid = _client_key(branch, response.cseq.method)
        tx = self._client.get(tid)
        if tx is None:
            # A 2xx retransmitted after the INVITE transaction ended still needs the UAC core's
            # ACK (§13.2.2.4); anything else stray is dropped (§18.1.2).
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                self._events.append(ResponseReceived(response, None, flow))
            return
        if tx.receive_response(response, now):
            self._events.append(ResponseReceived(response, tid, flow))
        self._drain(tx, now)

    def _receive_request(self, request: Request, flow: Flow, now: float) -> None:
        self.counters.requests[request.method] += 1
        via = request.top_via
        # §18.2.1 and RFC 3581 §4: note where it really came from, for the response.
        params = dict(via.params)
        if via.host.strip("[]") != flow.host:
            params["received"] = flow.host
        if "rport" in params:
            params["rport"] = str(flow.port)
            params.setdefault("received", flow.host)
        if params != via.params:
            request.headers.pop_first("via")
            stamped = Via(via.transport, via.host, via.port, params)
            request.headers.add("Via", str(stamped), first=True)
        tid = _server_key(request)
        tx = self._server.get(tid)
        if tx is None:
            verdict = self.admission.screen(request, flow, now)
            if verdict is not None:
                self._refuse(request, verdict, flow)
                return
        if request.method == "ACK":
            if tx is not None and tx.state is not State.ACCEPTED:
                tx.receive_request(request, now)
                self._drain(tx, now)
            else:
                self._events.append(AckReceived(request, flow))
            return
        if tx is not None:
            self.counters.retransmissions += 1
            tx.receive_request(request, now)
            self._drain(tx, now)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, flow, now)
            return
        merged = self._merged(request, tid, now)
        tx = self._new_server(tid, request, flow, now)
        if merged:
            self._answer(tx, request.response(482, to_tag=self.new_token()), now)
            return
        self._events.append(RequestReceived(request, tid, flow))

    def _refuse(self, request: Request, verdict: Verdict, flow: Flow) -> None:
        """A stateless answer: no transaction, so nothing is ever retransmitted (§8.2.6.1)."""
        if verdict is None or isinstance(verdict, Drop) or request.method == "ACK":
            return
        response = request.response(verdict.status, to_tag=self.new_token())
        if verdict.retry_after is not None:
            response.headers.add("Retry-After", str(verdict.retry_after))
        self._send_response(response, response_flow(response.top_via, flow))

    def _stamp(self, response: Response) -> None:
        if self.agent and response.headers.get("server") is None:  # retransmissions have it
            response.headers.add("Server", self.agent)

    def _send_response(self, response: Response, destination: Flow) -> None:
        self._stamp(response)
        self.counters.responses[response.status] += 1
        self._out.append(Transmission(response.to_bytes(), destination))

    def _new_server(
        self, tid: str, request: Request, flow: Flow, now: float
    ) -> ServerInvite | ServerNonInvite:
        cls = ServerInvite if request.method == "INVITE" else ServerNonInvite
        tx = cls(tid, request, flow.reliable, self.timers)
        self._server[tid] = tx
        self._flows[tid] = response_flow(request.top_via, flow)
        tx.start(now)
        self._drain(tx, now)
        return tx

    def _receive_cancel(self, request: Request, flow: Flow, now: float) -> None:
        tid = _server_key(request)
        tx = self._new_server(tid, request, flow, now)
        invite_id = tid.rsplit("|", 1)[0] + "|INVITE"
        invite = self._server.get(invite_id)
        if isinstance(invite, ServerInvite) and invite.state is State.PROCEEDING:
            self._answer(tx, request.response(200, to_tag=None), now)
            self._events.append(CancelReceived(invite_id, request))
        else:
            self._answer(tx, request.response(481), now)

    def _merge_key(self, request: Request) -> MergeKey:
        return (request.from_.tag or "", request.call_id, request.cseq.number, request.method)

    def _merged(self, request: Request, tid: str, now: float) -> bool:
        """§8.2.2.2: same From tag, Call-ID and CSeq as a pending request, but another branch."""
        if request.to.tag is not None:
            return False
        key = self._merge_key(request)
        seen = self._merge.get(key)
        if seen is not None and seen[0] != tid:
            return True
        self._merge[key] = (tid, now + _MERGE_MEMORY)
        self._merge_keys[tid] = key
        return False

    def _forget_merge(self, tid: str) -> None:
        key = self._merge_keys.pop(tid, None)
        if key is not None and (seen := self._merge.get(key)) is not None and seen[0] == tid:
            del self._merge[key]
