"""The PROTOS c07-sip INVITE cases (OUSPG), read from the shared test data at run time.

The data is GPLv2 and stays outside the repository: ``../shared/protos-c07-sip/`` relative to
the repository root holds ``protos-c07-sip.tar.gz`` (``PROTOS_C07_SIP`` names another folder, for
checkouts that live elsewhere); its README gives the format this module reads (length-prefixed
request templates with placeholders).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(
    os.environ.get("PROTOS_C07_SIP")
    or Path(__file__).resolve().parents[2].parent / "shared" / "protos-c07-sip"
)
ARCHIVE = FOLDER / "protos-c07-sip.tar.gz"


@dataclass(frozen=True)
class Case:
    """One test case: its number, the INVITE template and the teardown template."""

    number: int
    invite: bytes
    teardown: bytes | None


def split_requests(data: bytes) -> list[bytes]:
    """``<length> <request>`` repeated; the length counts the template's bytes."""
    out = []
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space])
        out.append(data[space + 1 : space + 1 + length])
        at = space + 1 + length
        while at < len(data) and data[at : at + 1] in b"\r\n":
            at += 1
    return out


def cases(archive: Path = ARCHIVE) -> list[Case]:
    """Every case in number order (the archive is read as a stream: seeking a gzip is slow)."""
    out = []
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            handle = tar.extractfile(member) if "/cases/" in member.name else None
            if handle is None:
                continue
            requests = split_requests(handle.read())
            out.append(
                Case(
                    int(member.name.rsplit("/", 1)[1]),
                    requests[0],
                    requests[1] if len(requests) > 1 else None,
                )
            )
    return sorted(out, key=lambda case: case.number)


def fill(
    template: bytes,
    *,
    to: str,
    source: str,
    port: int,
    call_id: str,
    branch: str,
    teardown: str = "CANCEL",
) -> bytes:
    """The request to send: placeholders replaced, Content-Length the body's real length."""
    values = {
        b"<To>": to.encode(),
        b"<From>": f"protos@{source}".encode(),
        b"<From-Address>": source.encode(),
        b"<From-IP>": source.encode(),
        b"<Local-Port>": str(port).encode(),
        b"<Call-ID>": call_id.encode(),
        b"<Branch-ID>": branch.encode(),
        b"<CSeq>": b"1",
        b"<Teardown-Method>": teardown.encode(),
    }
    for name, value in values.items():
        template = template.replace(name, value)
    head, separator, body = template.partition(b"\r\n\r\n")
    return head.replace(b"<Content-Length>", str(len(body)).encode()) + separator + body
