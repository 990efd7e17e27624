"""The trunks the router knows, in memory: who may send calls, and how each one is read.

A trunk named ``config`` always exists, made from ``[sip] carriers``, ``country``,
``carrier_keepalives`` and ``outbound_trunk``; trunks created over the API join it and win
ties. An INVITE's source picks the trunk whose network matches it most narrowly, so a
carrier's /32 SBC can be treated differently from the /24 it lives in.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers

from callrouter.config import SipConfig
from callrouter.ip_networks import parse_networks
from callrouter.store.trunks import IpNetwork, TrunkRow

__all__ = ["Trunk", "TrunkTable", "normalise"]

CONFIG_TRUNK = "config"


@dataclass(frozen=True, slots=True)
class Trunk:
    """How calls from (or to) one carrier are treated."""

    name: str
    networks: tuple[IpNetwork, ...] = ()
    number_from: str = "request_uri"
    """``request_uri`` (then To when the R-URI is not a number) or ``to``."""
    country: str = "GB"
    """Region for numbers the carrier writes nationally (0151 ... is +44151 ...)."""
    nat: bool = False
    """Media comes from behind NAT: RTP latches to the first source whatever its address."""
    keepalives: bool = True
    """Whether this carrier's leg of a call gets dialog keepalives (routing/keepalives.py)."""
    uri: str | None = None
    """Where E.164 destinations are sent through this trunk; None for an inbound-only trunk."""
    caller_id: str = "pass"
    """``pass``, ``rewrite`` (present ``caller_id_number``) or ``withhold``."""
    caller_id_number: str | None = None

    @classmethod
    def configured(cls, sip: SipConfig) -> Trunk:
        """The ``config`` trunk of ``[sip]``; ValueError naming a carrier that is no network."""
        return cls(
            CONFIG_TRUNK,
            parse_networks(sip.carriers),
            country=sip.country,
            keepalives=sip.carrier_keepalives,
            uri=sip.outbound_trunk,
        )

    @classmethod
    def from_row(cls, row: TrunkRow) -> Trunk:
        return cls(
            row.name,
            tuple(row.networks),
            row.number_from,
            row.country,
            row.nat,
            row.keepalives,
            row.uri,
            row.caller_id,
            row.caller_id_number,
        )


class TrunkTable:
    """The trunks in service; ``replace`` swaps them all at once when the table changes."""

    def __init__(self, configured: Trunk, stored: Sequence[Trunk] = ()) -> None:
        self.configured = configured
        self._trunks: tuple[Trunk, ...] = ()
        self.replace(stored)

    def replace(self, stored: Sequence[Trunk]) -> None:
        # Stored trunks first: on equally narrow matches the operator's table beats the config.
        self._trunks = (*stored, self.configured)

    @property
    def trunks(self) -> tuple[Trunk, ...]:
        return self._trunks

    def for_source(self, host: str) -> Trunk | None:
        """The trunk whose networks hold ``host`` most narrowly, or None: not a carrier."""
        address = _address(host)
        if address is None:
            return None
        best: Trunk | None = None
        best_prefix = -1
        for trunk in self._trunks:
            for network in trunk.networks:
                if address in network and network.prefixlen > best_prefix:
                    best, best_prefix = trunk, network.prefixlen
        return best

    def outbound(self) -> Trunk | None:
        """The trunk E.164 destinations go through: the first one with a URI."""
        return next((t for t in self._trunks if t.uri), None)


@functools.lru_cache(maxsize=4096)
def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, or None when it is not one. Cached: every request from a
    carrier is screened by its source address, and parsing it was ~2 % of serve's samples."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def normalise(digits: str, country: str) -> str | None:
    """The E.164 form of a number as a carrier wrote it, or None if it is not one.

    ``+44...`` and ``0044...`` are international. Other digits are tried as a valid national
    number of the trunk's country first (``01515550001`` in GB, ``2125550123`` in US); failing
    that, as an international number without its ``+`` (``441515550001``), which is how many
    carriers write the Request-URI.
    """
    digits = "".join(c for c in digits if c.isdigit() or c == "+")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not digits.startswith("+"):
        try:
            parsed = phonenumbers.parse(digits, country)
        except phonenumbers.NumberParseException:
            parsed = None
        # Valid, or at least possible when written with the trunk prefix (0...): ranges set
        # aside for drama and tests are not "valid" but are still dialled.
        if parsed is not None and (
            phonenumbers.is_valid_number(parsed)
            or (digits.startswith("0") and phonenumbers.is_possible_number(parsed))
        ):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        digits = "+" + digits
    return digits if 8 <= len(digits) <= 16 and digits[1:].isdigit() else None
