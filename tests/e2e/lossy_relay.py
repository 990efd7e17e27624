"""A UDP relay that loses packets: put it between the router and a peer to test retransmissions.

    python lossy_relay.py TOWARDS_LOSS BACK_LOSS SEED TARGET_PORT

Prints ``relay: listening on PORT`` once bound. Datagrams to PORT go to 127.0.0.1:TARGET_PORT
from a second socket (each dropped with probability TOWARDS_LOSS percent); what the target sends
back goes to whoever last wrote to PORT (dropped with probability BACK_LOSS percent). The drops
come from a seeded generator, so a run is reproducible. Exits when its standard input closes.
"""

from __future__ import annotations

import random
import selectors
import socket
import sys


def main(towards_loss: float, back_loss: float, seed: int, target_port: int) -> None:
    rng = random.Random(seed)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    target = ("127.0.0.1", target_port)
    peer: tuple[str, int] | None = None
    selector = selectors.DefaultSelector()
    selector.register(front, selectors.EVENT_READ)
    selector.register(back, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    print(f"relay: listening on {front.getsockname()[1]}", flush=True)
    dropped = passed = 0
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    print(f"relay: passed {passed}, dropped {dropped}", flush=True)
                    return
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data, source = sock.recvfrom(65535)
            if sock is front:
                peer = source
                destination: tuple[str, int] | None = target
                out, loss = back, towards_loss
            else:
                destination, out, loss = peer, front, back_loss
            if destination is None:
                continue
            if rng.random() * 100 < loss:
                dropped += 1
                continue
            passed += 1
            out.sendto(data, destination)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
