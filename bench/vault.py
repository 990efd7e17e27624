"""Vault throughput: recordings sealed and opened through the vault's writer and reader, against
raw AES-256-GCM over the same buffer with the same segments and nonces (same run, in memory:
the reference does no file I/O, the vault's figures include writing and reading the file).

The files go to tmpfs (/dev/shm) when there is one, so the figure is the vault's own cost
(Python, the format, the syscalls), not the disk's.

    python3 bench/vault.py [--megabytes 64] [--segment 16384] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from callrouter.vault import Vault  # noqa: E402
from callrouter.vault.stream import Header  # noqa: E402

# 20 ms of 8 kHz 16-bit mono: what the media worker hands over per RTP packet.
PACKET = 320
RANGE = 65536


def best(runs: int, action: Callable[[], object], before: Callable[[], object] = list) -> float:
    """The fastest of ``runs`` timings of ``action``, in seconds (the others measure the
    machine's noise); ``before`` runs untimed ahead of each."""
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def nonce(header: Header, index: int, count: int) -> bytes:
    return header.nonce_prefix + struct.pack(">IB", index, index == count - 1)


def raw_seal(key: bytes, header: Header, data: memoryview) -> list[bytes]:
    """Every segment sealed and kept (the input of the decrypt reference)."""
    aead, aad, size = AESGCM(key), header.pack(), header.segment_bytes
    count = len(data) // size + 1
    return [
        aead.encrypt(nonce(header, i, count), data[i * size : (i + 1) * size], aad)
        for i in range(count)
    ]


def raw_encrypt(key: bytes, header: Header, data: memoryview) -> None:
    """Every segment sealed and dropped once made, as the writer drops it once written."""
    aead, aad, size = AESGCM(key), header.pack(), header.segment_bytes
    count = len(data) // size + 1
    for i in range(count):
        aead.encrypt(nonce(header, i, count), data[i * size : (i + 1) * size], aad)


def raw_decrypt(key: bytes, header: Header, sealed: list[bytes]) -> None:
    aead, aad = AESGCM(key), header.pack()
    for i, segment in enumerate(sealed):
        aead.decrypt(nonce(header, i, len(sealed)), segment, aad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--segment", type=int, default=16384)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="callrouter-bench-", dir=shm if shm.is_dir() else None))
    try:
        vault = Vault.open(root / "keyring.json", root / "keys", args.segment)
        recording_id = uuid.uuid4()
        vault.create_key(recording_id)
        data = memoryview(os.urandom(args.megabytes * 2**20))
        path = root / "call.raw"

        def write(piece: int) -> Callable[[], None]:
            def run() -> None:
                with vault.writer(recording_id, path) as out:
                    for start in range(0, len(data), piece):
                        out.write(data[start : start + piece])

            return run

        def read_all() -> None:
            with vault.reader(recording_id, path) as source:
                for _segment in source:
                    pass

        starts = [random.randrange(len(data) - RANGE) for _ in range(2000)]

        def read_ranges() -> None:
            with vault.reader(recording_id, path) as source:
                for start in starts:
                    source.read_range(start, start + RANGE)

        key = vault.key_store.get(recording_id).key
        header = Header(recording_id, bytes(16), os.urandom(7), args.segment)

        def remove() -> None:
            path.unlink(missing_ok=True)

        packets = best(args.runs, write(PACKET), remove)
        large = best(args.runs, write(2**20), remove)
        raw_enc = best(args.runs, lambda: raw_encrypt(key, header, data))
        with vault.reader(recording_id, path) as check:
            assert check.read_all() == data
        whole = best(args.runs, read_all)
        ranges = best(args.runs, read_ranges)
        # Made last: holding 64 MiB in small objects slowed the writer runs 2.5-fold.
        sealed = raw_seal(key, header, data)
        raw_dec = best(args.runs, lambda: raw_decrypt(key, header, sealed))

        def rate(seconds: float) -> float:
            return len(data) / seconds / 1e6

        print(
            f"vault, {args.megabytes} MiB of audio, {args.segment}-byte segments, "
            f"best of {args.runs}, files in {root.parent}"
        )
        print(f"  encrypt, vault writer, {PACKET}-byte writes:  {rate(packets):8.0f} MB/s")
        print(f"  encrypt, vault writer, 1 MiB writes:      {rate(large):8.0f} MB/s")
        print(f"  encrypt, raw AES-256-GCM, same segments:  {rate(raw_enc):8.0f} MB/s")
        print(f"  ratio vault / raw, {PACKET}-byte writes:      {raw_enc / packets:8.2f}")
        print(f"  ratio vault / raw, 1 MiB writes:          {raw_enc / large:8.2f}")
        print(f"  decrypt, vault reader, whole file:        {rate(whole):8.0f} MB/s")
        print(f"  decrypt, raw AES-256-GCM, same segments:  {rate(raw_dec):8.0f} MB/s")
        print(f"  ratio vault / raw:                        {raw_dec / whole:8.2f}")
        print(
            f"  range reads of {RANGE // 1024} KiB at random offsets: "
            f"{len(starts) / ranges:,.0f} per second"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
