"""Backup cost: ``callrouter backup``'s own work (pg_dump, recordings copied, every data key
copied under the key store's lock) against the same three jobs done bare in the same run
(pg_dump, ``cp -a`` of the recordings directory and of the key store, ``sync -f``: both are
durable when they end), on the same data:
an embedded PostgreSQL with ``--calls`` call records and as many recordings, each with an
encrypted file of ``--kilobytes`` and a data key.

    python3 bench/backup.py [--calls 2000] [--kilobytes 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from callrouter.backup import take_backup  # noqa: E402
from callrouter.config import Config, load_config  # noqa: E402
from callrouter.store.database import ensure_database  # noqa: E402
from callrouter.store.embedded import DATABASE, EmbeddedPostgres, binaries_dir  # noqa: E402
from callrouter.store.ids import new_id  # noqa: E402
from callrouter.store.migrations import migrate  # noqa: E402
from callrouter.vault import Vault, vault_paths  # noqa: E402


async def populate(dsn: str, config: Config, calls: int, kilobytes: int) -> None:
    """A client, ``calls`` answered calls, each with a recording row, file and data key."""
    vault = Vault.from_config(config)
    config.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    audio = os.urandom(kilobytes * 1024)
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
        client = await connection.fetchval(
            "INSERT INTO clients (id, name) VALUES ($1, 'Bench') RETURNING id", new_id()
        )
        rows = []
        for _ in range(calls):
            call_id, recording_id = new_id(), new_id()
            vault.create_key(recording_id)
            with vault.writer(recording_id, config.recordings_dir / f"{recording_id}.flac") as out:
                out.write(audio)
            rows.append((call_id, recording_id))
        await connection.executemany(
            """INSERT INTO calls (id, client_id, tracking_number, caller_number, sip_call_id,
                   record, started_at)
               VALUES ($1, $2, '+441615550100', '+447700900123', $3, true, now())""",
            [(call_id, client, str(call_id)) for call_id, _ in rows],
        )
        await connection.executemany(
            """INSERT INTO recordings (id, client_id, call_id, format, path, bytes,
                   duration_seconds, peaks, started_at, ended_at)
               VALUES ($1, $2, $3, 'flac', $4, $5, 60, '[]', now(), now())""",
            [(r, client, c, f"{r}.flac", len(audio)) for c, r in rows],
        )
    finally:
        await connection.close()


def best(runs: int, action: Callable[[Path], object], scratch: Path) -> float:
    """The fastest of ``runs`` timings of ``action`` into a new directory under ``scratch``."""
    times = []
    for run in range(runs):
        target = scratch / f"run-{action.__name__}-{run}"
        start = time.perf_counter()
        action(target)
        times.append(time.perf_counter() - start)
        shutil.rmtree(target)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--kilobytes", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="callrouter-bench-backup-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # PostgreSQL runs as the callrouter account when we are root
        config = load_config(
            None,
            {},
            {"data_dir": str(root / "data"), "recordings_dir": str(root / "recordings")},
        )
        server = EmbeddedPostgres(config.data_dir / "postgres")
        server.start()
        try:
            asyncio.run(ensure_database(server.admin_dsn, DATABASE))
            asyncio.run(populate(server.dsn, config, args.calls, args.kilobytes))
            _, keys_dir = vault_paths(config)

            def bare(target: Path) -> None:
                target.mkdir()
                subprocess.run(
                    [
                        str(binaries_dir() / "pg_dump"),
                        "--format=custom",
                        f"--file={target / 'database.dump'}",
                        f"--dbname={server.dsn}",
                    ],
                    check=True,
                )
                subprocess.run(["cp", "-a", str(config.recordings_dir), str(target)], check=True)
                subprocess.run(["cp", "-a", str(keys_dir), str(target / "keys")], check=True)
                subprocess.run(["sync", "--file-system", str(target)], check=True)

            def callrouter(target: Path) -> None:
                asyncio.run(
                    take_backup(
                        config, server.dsn, target / "data", target / "keys", lambda _: None
                    )
                )

            reference = best(args.runs, bare, root)
            ours = best(args.runs, callrouter, root)
        finally:
            server.stop()

    size = args.calls * args.kilobytes / 1024
    print(f"{args.calls} calls and recordings ({size:.0f} MiB of audio), best of {args.runs}:")
    print(f"  bare pg_dump, cp -a recordings and keys, sync -f: {reference:.2f} s")
    print(f"  callrouter backup:                                {ours:.2f} s")
    print(f"  ratio (bare / callrouter): {reference / ours:.2f}")


if __name__ == "__main__":
    main()
