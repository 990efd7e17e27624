"""A SIP flooder: as many INVITE and OPTIONS datagrams as a Python loop can send, from one
source address, and a count of what came back."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Blast:
    """What one flood sent and heard."""

    sent: int
    seconds: float
    answers: list[bytes]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def requests(source: str, port: int, target: tuple[str, int], count: int) -> list[bytes]:
    """``count`` distinct requests (a fresh branch and Call-ID each), alternating methods."""
    host, target_port = target
    out = []
    for i in range(count):
        method = "INVITE" if i % 2 == 0 else "OPTIONS"
        out.append(
            (
                f"{method} sip:+441515550001@{host}:{target_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-flood-{i};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:flood@{source}>;tag=f{i}\r\n"
                f"To: <sip:+441515550001@{host}>\r\n"
                f"Call-ID: flood-{i}@{source}\r\n"
                f"CSeq: 1 {method}\r\n"
                f"Contact: <sip:flood@{source}:{port}>\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
    return out


def blast(source: str, target: tuple[str, int], count: int, quiet: float = 1.0) -> Blast:
    """Send ``count`` requests from ``source`` at full speed, then collect answers until none
    has arrived for ``quiet`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        port = sock.getsockname()[1]
        packets = requests(source, port, target, count)
        answers: list[bytes] = []
        started = time.perf_counter()
        for packet in packets:
            sock.sendto(packet, target)
        seconds = time.perf_counter() - started
        while select.select([sock], [], [], quiet)[0]:
            answers.append(sock.recv(65535))
        return Blast(len(packets), seconds, answers)
