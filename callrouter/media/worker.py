"""The media worker process: RTP relays for recorded calls, and their recordings.

It runs apart from the signalling process so that audio work never stalls SIP or the API. The
control protocol is one JSON object per line on a Unix socket, in the spirit of rtpengine's ng
protocol: every command is idempotent and keyed by the call, so the controller may safely
repeat one after a timeout. Commands of one call are carried out in the order they came;
commands of different calls (and ``recover``) do not wait for each other, so replies may come
out of order: they carry the command's ``id``. A refusal is ``{"id": n, "ok": false, "error":
"..."}``.

    -> {"id": 1, "cmd": "create", "call": "c1", "ports": [30000, 30002]}
    <- {"id": 1, "ok": true, "a": ["127.0.0.1", 30000], "b": ["127.0.0.1", 30002]}
    -> {"id": 2, "cmd": "signal", "call": "c1", "leg": "a", "rtp": ["192.0.2.5", 4000],
        "rtcp": null, "nat": false}
    <- {"id": 2, "ok": true}
    -> {"id": 3, "cmd": "record", "call": "c1", "recording": "<uuid>",
        "payload_types": {"96": "PCMU"}}                     (payload_types optional)
    <- {"id": 3, "ok": true}
    -> {"id": 4, "cmd": "pause", "call": "c1"}                  (and "resume")
    <- {"id": 4, "ok": true}
    -> {"id": 5, "cmd": "query", "call": "c1"}
    <- {"id": 5, "ok": true, "stats": {...}, "recording": {"id": "<uuid>", "paused": true,
        "flushed_seconds": 3.2} | null}
    -> {"id": 6, "cmd": "delete", "call": "c1"}
    <- {"id": 6, "ok": true, "stats": {...}, "recording": "<uuid>"}
    <- {"event": "recording_ready", "call": "c1", "recording": {"id": "<uuid>",
        "path": "<uuid>.flac", "format": "flac", "bytes": 51234, "duration_seconds": 12.5,
        "peaks": {...}, "interrupted": false, "counters": {"a": {...}, "b": {...}},
        "truncated": null | "the recordings disk is full (...)"}}
    <- {"event": "recording_failed", "call": "c1", "recording": "<uuid>", "error": "..."}
    -> {"id": 8, "cmd": "stats"}                  (cumulative since the worker started)
    <- {"id": 8, "ok": true, "packets_from_caller": 5012, "packets_from_destination": 4990,
        "sessions": 3}
    -> {"id": 9, "cmd": "play", "call": "c1", "prompt": "recording-notice", "codec": "PCMU"}
    <- {"id": 9, "ok": true, "packets": 50}            (once the last packet has gone)
    -> {"id": 7, "cmd": "recover"}
    <- {"id": 7, "ok": true, "recordings": [{... "interrupted": true, "counters": null}],
        "failed": [{"recording": "<uuid>", "error": "..."}]}
    <- {"event": "media_timeout", "call": "c1"}          (unsolicited, once per timeout period)

``create`` with ``ports`` binds exactly those RTP ports (RTCP on each + 1), the controller
having chosen them; without, it takes a pair from the worker's own range; if a port cannot be
bound the reply is an error and nothing stays bound. ``record`` (a second one for the call is a
no-op) creates the recording's data key, opens ``<uuid>.raw.part`` and records both legs from
now; the raw stream is written and flushed every second. ``delete`` answers at once; a recorded
call's file is finalised afterwards and announced by ``recording_ready`` or
``recording_failed``. A recording whose file cannot be written any more (a full disk) ends
there and keeps what was written: ``recording_ready`` with ``truncated`` saying why, and
``"format": "pcm"`` when not even the encoded file fits. A recording with no audio at all is
stored as an empty WAV file (``"format": "wav"``): FLAC cannot hold zero frames. ``play`` sends
the built-in ``recording-notice`` or an operator's ``<name>.wav`` from ``--prompts-dir`` (read
once, read again when the file changes; one that is gone or broken is refused, the worker
carries on). ``recover``
finalises the raw files a worker that stopped left behind in this worker's raw directory
(``--raw-dir``; never those of calls this one is recording) and in the directories it was told
to ``--adopt``; the controller sends it after every start. A ``media_timeout`` changes nothing in
the worker: the controller's ``delete`` then finalises the recording like any other.

The worker stops with its parent (``--parent-pid``) and owns its control socket by a lock file
beside it (:mod:`callrouter.media.lifeline`): a second worker on the same socket waits up to
``--lock-wait`` seconds for the first to go, and never removes a socket it does not own.

Run by ``callrouter serve``; by hand: ``python -m callrouter.media.worker --control /tmp/m.sock``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import numpy as np
import uvloop
from numpy.typing import NDArray

from callrouter import logs
from callrouter.config import LogConfig
from callrouter.media.lifeline import SocketTaken, claim_socket, die_with_parent, orphaned
from callrouter.media.prompt import (
    RECORDING_NOTICE,
    PromptCache,
    PromptError,
    load_prompt,
    packetize,
    recording_notice_tone,
)
from callrouter.media.recorder import Codec
from callrouter.media.recording import (
    FORMATS,
    RecordingError,
    Recordings,
    RecordingSettings,
)
from callrouter.media.relay import LEGS, PortAllocator, PortInUse, PortsExhausted, RelaySession
from callrouter.privileges import account_for, drop_to
from callrouter.vault import DEFAULT_SEGMENT_BYTES, Vault

log = logging.getLogger(__name__)

Command = dict[str, Any]
LINE_LIMIT = 1 << 24
"""Longest control line, either way (a ``recover`` reply carries every recording's peaks)."""


class CommandError(Exception):
    """A command the worker cannot carry out; the message goes back to the controller."""


class Controllers:
    """The controllers connected to the control socket: where events go."""

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()

    def emit(self, event: Command) -> None:
        """Send an unsolicited event to every controller connected."""
        line = json.dumps(event).encode() + b"\n"
        for writer in self.writers:
            writer.write(line)

    def connected(self) -> bool:
        return bool(self.writers)


class MediaWorker:
    """The relays of one worker and the commands that manage them.

    :param controllers: where events go.
    :param recordings: None when this worker does not record (``record`` is refused).
    :param prompts: the operator prompts (None: only the built-in recording notice plays).
    """

    def __init__(
        self,
        host: str,
        ports: PortAllocator,
        media_timeout: float,
        controllers: Controllers,
        recordings: Recordings | None = None,
        *,
        prompts: PromptCache | None = None,
    ) -> None:
        self.host = host
        self.ports = ports
        self.media_timeout = media_timeout
        self.controllers = controllers
        self.recordings = recordings
        self.prompts = prompts
        self.sessions: dict[str, RelaySession] = {}
        self.relayed = {"a": 0, "b": 0}
        """RTP packets forwarded from each leg by relays already closed (``stats`` adds the
        live ones)."""
        self._handlers: dict[str, Callable[[Command], Awaitable[Command]]] = {
            "ping": self._ping,
            "create": self._create,
            "signal": self._signal,
            "query": self._query,
            "record": self._record,
            "pause": self._pause,
            "resume": self._resume,
            "delete": self._delete,
            "recover": self._recover,
            "play": self._play,
            "stats": self._stats,
        }

    async def handle(self, command: Command) -> Command:
        handler = self._handlers.get(str(command.get("cmd")))
        if handler is None:
            raise CommandError(f"unknown command {command.get('cmd')!r}")
        try:
            return await handler(command)
        except RecordingError as exc:
            raise CommandError(str(exc)) from None

    async def _play(self, command: Command) -> Command:
        """Send a prompt to the caller (leg "a") in real time, 20 ms a packet; replies when done.

        Played before the call is bridged, as early media, so nothing comes back to mix."""
        session = self._session(command)
        codec = command.get("codec")
        if codec not in ("PCMU", "PCMA"):
            raise CommandError("codec must be PCMU or PCMA")
        packets = packetize(
            await self._prompt(str(command.get("prompt"))),
            codec=codec,
            ssrc=secrets.randbits(32),
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        for index, packet in enumerate(packets):
            leg = session.legs.get("a")
            if leg is None:
                break  # the call ended while we played
            target = leg.rtp.destination
            receiver = leg.rtp_receiver
            if target is not None and receiver is not None and receiver.transport is not None:
                receiver.transport.sendto(packet, target)
                sent += 1
            # Paced on the loop clock, not slept per packet, so delays do not add up.
            await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))
        return {"packets": sent}

    async def _prompt(self, name: str) -> NDArray[np.int16]:
        """The audio of prompt ``name``: the built-in notice, or an operator's file, read in a
        thread (up to 960 KB: relays keep running meanwhile) the first time and after a change.

        :raises CommandError: no such prompt, or its file is gone, unreadable or no longer a
            prompt (edited after the dialplan was loaded).
        """
        if name == RECORDING_NOTICE:
            return recording_notice_tone()
        if self.prompts is None:
            raise CommandError(f"unknown prompt {name!r} (this worker has no --prompts-dir)")
        try:
            path, stamp = self.prompts.stamp(name)
            audio = self.prompts.kept(name, stamp)
            if audio is None:
                audio = await asyncio.to_thread(load_prompt, path)
                self.prompts.keep(name, stamp, audio)
        except PromptError as exc:
            self.prompts.forget(name)
            raise CommandError(str(exc)) from None
        return audio

    def _session(self, command: Command) -> RelaySession:
        session = self.sessions.get(str(command.get("call")))
        if session is None:
            raise CommandError(f"no relay for call {command.get('call')!r}")
        return session

    def _recordings(self) -> Recordings:
        if self.recordings is None:
            raise CommandError("this media worker does not record (no --recordings-dir)")
        return self.recordings

    async def _ping(self, _command: Command) -> Command:
        return {
            "sessions": len(self.sessions),
            "ports_in_use": self.ports.in_use,
            "recordings": len(self.recordings) if self.recordings is not None else None,
        }

    async def _create(self, command: Command) -> Command:
        call = str(command["call"])
        ports = _ports(command.get("ports"))
        session = self.sessions.get(call)
        if session is None:
            session = await self._open(call, ports)
            self.sessions[call] = session
        elif ports is not None and ports != tuple(session.local(leg)[1] for leg in LEGS):
            raise CommandError(f"call {call!r} already has other ports")
        return {leg: list(session.local(leg)) for leg in LEGS}

    async def _open(self, call: str, ports: tuple[int, int] | None) -> RelaySession:
        """Bind the call's sockets: the ports given, or pairs from our range, skipping (a few
        times) pairs another process on this host holds."""
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for _attempt in range(1 if ports is not None else 8):
            session = RelaySession(call, self.host, self.ports, loop.time)
            try:
                await session.open(ports)
            except (PortsExhausted, PortInUse) as exc:
                raise CommandError(str(exc)) from None
            except OSError as exc:
                failure = exc
                continue
            return session
        which = f" ({ports[0]}, {ports[1]})" if ports is not None else ""
        raise CommandError(f"cannot bind RTP ports{which}: {_why(failure)}")

    async def _signal(self, command: Command) -> Command:
        session = self._session(command)
        leg = command.get("leg")
        if leg not in LEGS:
            raise CommandError(f"leg must be one of {LEGS}")
        rtp = _address(command.get("rtp"))
        if rtp is None:
            raise CommandError("rtp address missing")
        session.signal(leg, rtp, _address(command.get("rtcp")), nat=bool(command.get("nat")))
        return {}

    async def _query(self, command: Command) -> Command:
        call = str(command.get("call"))
        stats = self._session(command).stats()
        recording = self.recordings.describe(call) if self.recordings is not None else None
        return {"stats": stats, "recording": recording}

    async def _record(self, command: Command) -> Command:
        recordings = self._recordings()
        session = self._session(command)
        try:
            recording_id = UUID(str(command.get("recording")))
        except ValueError:
            raise CommandError(f"recording {command.get('recording')!r} is not a UUID") from None
        now = asyncio.get_running_loop().time()
        types = _payload_types(command.get("payload_types"))
        await recordings.start(session.call_id, recording_id, session, now, types)
        return {}

    async def _pause(self, command: Command) -> Command:
        self._recordings().pause(self._session(command).call_id, asyncio.get_running_loop().time())
        return {}

    async def _resume(self, command: Command) -> Command:
        self._recordings().resume(self._session(command).call_id, asyncio.get_running_loop().time())
        return {}

    async def _delete(self, command: Command) -> Command:
        session = self.sessions.pop(str(command.get("call")), None)
        if session is None:
            return {"stats": None, "recording": None}
        stats = session.stats()
        for leg in self.relayed:
            self.relayed[leg] += stats.get(leg, {}).get("forwarded", 0)
        session.close()
        recording = None
        if self.recordings is not None:
            recording = self.recordings.stop(session.call_id, asyncio.get_running_loop().time())
        return {"stats": stats, "recording": str(recording) if recording else None}

    async def _stats(self, _command: Command) -> Command:
        """Cumulative counters since this worker started, for the controller's metrics."""
        relayed = dict(self.relayed)
        for session in self.sessions.values():
            for leg, counts in session.stats().items():
                relayed[leg] += counts["forwarded"]
        return {
            "packets_from_caller": relayed["a"],
            "packets_from_destination": relayed["b"],
            "sessions": len(self.sessions),
        }

    async def _recover(self, _command: Command) -> Command:
        finished, failed = await self._recordings().recover()
        return {"recordings": finished, "failed": failed}

    def check_timeouts(self, now: float) -> None:
        """Report calls whose media stopped; the controller decides to end them (its
        ``delete`` then finalises the recording like any other)."""
        for call, session in list(self.sessions.items()):
            if now - session.last_activity > self.media_timeout:
                session.last_activity = now  # report once per timeout period
                self.controllers.emit({"event": "media_timeout", "call": call})

    async def close(self) -> None:
        """Close every relay; close the raw recording files for the next worker's recover."""
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        if self.recordings is not None:
            await self.recordings.close(asyncio.get_running_loop().time())


def _why(failure: BaseException | None) -> str:
    """The cause of a bind failure: uvloop's message names the address and chains the OSError
    that says why (``Address already in use``)."""
    while failure is not None:
        if isinstance(failure, OSError) and failure.errno is not None:
            return f"{failure.strerror} ({failure.errno})"
        failure = failure.__cause__
    return "unknown cause"


def _address(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and 0 <= value[1] <= 65535
    ):
        return (value[0], value[1])
    raise CommandError(f"bad address {value!r}: expected [ip, port]")


def _ports(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(type(port) is int and port % 2 == 0 and 0 < port < 65535 for port in value)
    ):
        return (value[0], value[1])
    raise CommandError(f"bad ports {value!r}: expected [a_port, b_port], even RTP ports")


def _payload_types(value: object) -> dict[int, Codec] | None:
    """``{"96": "PCMU"}``: dynamic payload types the SDP bound to G.711."""
    if value is None:
        return None
    if isinstance(value, dict) and all(
        isinstance(key, str) and key.isdigit() and codec in ("PCMU", "PCMA")
        for key, codec in value.items()
    ):
        return {int(key): cast(Codec, codec) for key, codec in value.items()}
    raise CommandError(f'bad payload_types {value!r}: expected {{"96": "PCMU"}}')


def _parse(line: bytes) -> Command:
    command = json.loads(line)
    if not isinstance(command, dict):
        raise CommandError("a command is a JSON object")
    return command


async def serve_control(
    worker: MediaWorker, path: Path, stop: asyncio.Event, parent: int | None = None
) -> None:
    """Accept the controller's connection and answer its commands until ``stop``, or until
    ``parent`` (a pid) is gone. The caller holds the socket's lock (:func:`claim_socket`)."""
    writers = worker.controllers.writers
    clients: set[asyncio.Task[Any]] = set()

    async def answer(
        writer: asyncio.StreamWriter, command: Command, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None:
            await asyncio.wait({after})
        reply: Command
        try:
            reply = {"id": command.get("id"), "ok": True, **await worker.handle(command)}
        except (CommandError, ValueError, KeyError) as exc:
            reply = {"id": command.get("id"), "ok": False, "error": str(exc)}
        except Exception:  # a bug: the controller gets an answer rather than a timeout
            log.exception("command %r failed", command)
            reply = {"id": command.get("id"), "ok": False, "error": "internal error"}
        if not writer.is_closing():
            writer.write(json.dumps(reply).encode() + b"\n")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            clients.add(task)
            task.add_done_callback(clients.discard)
        writers.add(writer)
        answering: set[asyncio.Task[None]] = set()
        # The last command of each call: the next one of that call waits for it.
        tails: dict[str, asyncio.Task[None]] = {}
        try:
            while line := await reader.readline():
                try:
                    command = _parse(line)
                except (CommandError, ValueError) as exc:
                    writer.write(json.dumps({"ok": False, "error": str(exc)}).encode() + b"\n")
                    continue
                call = None if command.get("call") is None else str(command["call"])
                after = tails.get(call) if call is not None else None
                answer_task = asyncio.create_task(answer(writer, command, after))
                answering.add(answer_task)
                answer_task.add_done_callback(answering.discard)
                if call is not None:
                    tails[call] = answer_task
                    answer_task.add_done_callback(partial(_forget_tail, tails, call))
                await writer.drain()
        finally:
            writers.discard(writer)
            writer.close()

    _remove_socket(path)
    server = await asyncio.start_unix_server(client, path=str(path), limit=LINE_LIMIT)
    os.chmod(path, 0o600)
    loop = asyncio.get_running_loop()
    draining = None
    if worker.recordings is not None:
        draining = asyncio.create_task(worker.recordings.run(), name="recording-drain")
    print("ready", flush=True)  # the supervisor waits for this line
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                worker.check_timeouts(loop.time())
                if parent is not None and orphaned(parent):
                    log.warning("the parent process %d is gone: stopping", parent)
                    stop.set()
    finally:
        server.close()
        for writer in writers:
            writer.close()  # each client sees the end of its stream and returns
        if clients:
            await asyncio.wait(clients, timeout=1.0)
        if draining is not None:
            draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await draining
        await worker.close()
        await server.wait_closed()
        _remove_socket(path)


def _forget_tail(tails: dict[str, asyncio.Task[None]], call: str, task: asyncio.Task[None]) -> None:
    if tails.get(call) is task:
        del tails[call]


def _remove_socket(path: Path) -> None:
    path.unlink(missing_ok=True)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="callrouter media worker")
    parser.add_argument("--control", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address RTP sockets bind to")
    parser.add_argument("--ports", default="30000-39999", help="RTP port range FIRST-LAST")
    parser.add_argument("--media-timeout", type=float, default=60.0)
    parser.add_argument(
        "--recordings-dir", type=Path, help="where recordings go; without it, none are made"
    )
    parser.add_argument("--key-ring", type=Path, help="the vault's key ring file")
    parser.add_argument("--keys-dir", type=Path, help="the vault's key store directory")
    parser.add_argument("--segment-bytes", type=int, default=DEFAULT_SEGMENT_BYTES)
    parser.add_argument(
        "--raw-dir", type=Path, help="this worker's raw streams (default: --recordings-dir)"
    )
    parser.add_argument(
        "--adopt",
        type=Path,
        action="append",
        default=[],
        help="a raw directory no running worker owns: its leftovers are recovered here",
    )
    # The server's log settings, so the worker's lines join its log in the same format.
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--format", choices=FORMATS, default="flac", help="final file format")
    parser.add_argument(
        "--parent-pid", type=int, help="stop when this process (the server) is gone"
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=15.0,
        help="seconds to wait for a stopping worker to give up the control socket",
    )
    parser.add_argument("--user", help="started as root: the account to switch to first")
    parser.add_argument(
        "--prompts-dir", type=Path, help="the operators' prompts, <name>.wav, that play may name"
    )
    return parser


def main() -> None:
    parser = _arguments()
    args = parser.parse_args()
    logs.configure(LogConfig(format=args.log_format, level=args.log_level))
    if args.user is not None and (account := account_for(args.user)) is not None:
        drop_to(account)  # before any file, socket or packet parser is touched
    # After the drop: a change of credentials clears PR_SET_PDEATHSIG (prctl(2)).
    if args.parent_pid is not None and not die_with_parent(args.parent_pid):
        log.warning("the parent process %d is already gone: not starting", args.parent_pid)
        return
    try:
        # Held until this process ends; the kernel gives it up however that happens.
        claim_socket(args.control, args.lock_wait)
    except SocketTaken as exc:
        parser.exit(1, f"media worker: {exc}\n")
    first, _, last = args.ports.partition("-")
    settings = None
    if args.recordings_dir is not None:
        if args.key_ring is None or args.keys_dir is None:
            parser.error("--recordings-dir needs --key-ring and --keys-dir")
        settings = RecordingSettings(
            args.recordings_dir,
            args.key_ring,
            args.keys_dir,
            args.segment_bytes,
            args.format,
            args.raw_dir,
            tuple(args.adopt),
        )
        settings.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.raw_streams.mkdir(mode=0o700, parents=True, exist_ok=True)
        vault = Vault.open(settings.key_ring, settings.keys_dir, settings.segment_bytes)

    async def run() -> None:
        controllers = Controllers()
        recordings = None
        if settings is not None:
            recordings = Recordings(settings, vault, controllers.emit, controllers.connected)
        ports = PortAllocator(int(first), int(last))
        prompts = PromptCache(args.prompts_dir) if args.prompts_dir is not None else None
        worker = MediaWorker(
            args.host, ports, args.media_timeout, controllers, recordings, prompts=prompts
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_control(worker, args.control, stop, args.parent_pid)

    # uvloop, as the signalling process: the worker relays about 1.5 times the packets it does
    # on asyncio's own loop (bench/media.py on a 2-core machine).
    uvloop.run(run())


if __name__ == "__main__":
    main()
