"""A recorded call's media in the call controller: its SDP anchored at the media worker (or the
call connected unrecorded, its record saying why), offers and answers rewritten on the way
across, prompts played as early media.
"""

from __future__ import annotations

import logging
import uuid

from callrouter.call_events import RecordingRefused
from callrouter.routing.actions import AwaitMedia, MediaCommand
from callrouter.routing.call import Call
from callrouter.routing.call_lifecycle import CallLifecycle

__all__ = ["CallMedia"]

log = logging.getLogger(__name__)


class CallMedia(CallLifecycle):
    """The controller's media side: a recorded call anchored at the worker, or not recorded."""

    # -- announcements and media -------------------------------------------------------------------

    def _anchored(self, call: Call) -> bool:
        return call.anchored and self.media is not None and str(call.id) in self.media

    def _announce(self, call: Call, prompt: str) -> bool:
        """Play ``prompt`` to the caller as early media (183 with our SDP) before dialling,
        once the worker has bound the call's ports. False when it cannot be played: the call is
        not recorded, so its media does not pass through the worker."""
        if call.record and call.callee_offer is None:
            self._anchor(call)
        if not call.record or not self._anchored(call):
            return False
        call.prompt = prompt
        self._emit(AwaitMedia(call.id))
        return True

    def _anchor(self, call: Call) -> None:
        """A recorded call's media goes through the worker; when it cannot, the call is
        connected unrecorded and its record says why."""
        reason: str | None = "recording is not available (no media worker)"
        if call.record_refusal is not None:
            reason = call.record_refusal
        elif self.media is not None:
            nat = call.trunk.nat if call.trunk is not None else False
            assert call.request is not None  # anchored before it is dialled
            call.callee_offer, reason = self.media.offer(str(call.id), call.request.body, nat=nat)
            call.anchored = reason is None
        if reason is not None:
            call.record = False
            self._record(RecordingRefused(call.id, reason))
            log.info("call %s: not recorded: %s", call.id, reason)

    def _unanchor(self, call: Call, reason: str) -> None:
        """The worker could not bind the call's ports: its SDP passes through untouched and it
        is connected unrecorded, its record saying why (never dead air on unbound ports)."""
        if not self._anchored(call):
            return  # another branch of this call got there first
        call.anchored = False
        self._emit(MediaCommand(call.id, "withdraw"))
        call.callee_offer = None
        if call.record:
            call.record = False
            self._record(RecordingRefused(call.id, reason))
        log.warning("call %s: not recorded: %s", call.id, reason)

    def _for_caller(self, call: Call, body: bytes) -> bytes:
        """SDP from the destination as the caller must see it."""
        if self.media is not None and body and self._anchored(call):
            return self.media.towards_caller(str(call.id), body)
        return body

    def _for_callee(self, call: Call, body: bytes) -> bytes:
        """SDP from the caller as the destination must see it."""
        if self.media is not None and body and self._anchored(call):
            return self.media.towards_callee(str(call.id), body)
        return body

    def _media_refused(self, call_id: uuid.UUID, reason: str) -> None:
        call = self._by_id.get(call_id)
        if call is not None and call.record:
            call.record = False
            self._record(RecordingRefused(call.id, reason))
