"""Phone numbers: E.164 normalisation and the display formats pages and reports use."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers


class NumberFormatError(ValueError):
    """The text is not a valid phone number; the message says why, for an API field error."""


@dataclass(frozen=True, slots=True)
class DisplayFormats:
    """How one number is written: E.164 for machines, national and international for people."""

    e164: str
    national: str
    international: str


def to_e164(text: str, region: str | None = None, *, allocated: bool = True) -> str:
    """Normalise ``text`` to E.164 (``+441515550001``).

    :param region: ISO 3166 region for numbers written nationally (``0151 555 0001``); without
        it the number must start with ``+`` and the country code.
    :param allocated: the number must be in an allocated range (tracking numbers). False
        accepts any number of a possible length for its country: a caller's privacy rights must
        not depend on how recent the number metadata is, nor fail for the ranges reserved for
        drama and tests (+44 7700 900xxx).
    :raises NumberFormatError: with the reason.
    """
    if len(text) > 40:
        raise NumberFormatError("too long to be a phone number")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise NumberFormatError(
                "not in international format: start with + and the country code"
            ) from None
        raise NumberFormatError("not a phone number") from None
    if allocated and not phonenumbers.is_valid_number(parsed):
        raise NumberFormatError("not a valid phone number for its country")
    # IS_POSSIBLE, not IS_POSSIBLE_LOCAL_ONLY: a caller's number always has its area code.
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    if not allocated and possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise NumberFormatError("not a possible phone number for its country (check its length)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def display_formats(e164: str) -> DisplayFormats:
    """The national and international spellings of a stored E.164 number."""
    parsed = phonenumbers.parse(e164, None)
    return DisplayFormats(
        e164,
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    )


@dataclass(frozen=True, slots=True)
class NumberParts:
    """What the swap script needs to recognise a number however a page writes it."""

    e164: str
    national: str
    international: str
    country_code: str
    nsn: str
    trunk_prefix: str
    groups: tuple[str, ...]
    """The national significant number in the digit groups phonenumbers writes it in
    ("20", "7946", "0000"), so a page shows it grouped as that number is grouped."""


@functools.lru_cache(maxsize=65_536)
def number_parts(e164: str) -> NumberParts:
    """Country code, national significant number and trunk prefix ("0" in the UK) of a number.

    Cached: every swap-script page view answers with its pool's numbers' parts, and parsing
    them again was a sixth of a new visit's time on the node."""
    parsed = phonenumbers.parse(e164, None)
    region = phonenumbers.region_code_for_number(parsed)
    trunk = phonenumbers.ndd_prefix_for_region(region, True) if region else None
    formats = display_formats(e164)
    country_code = str(parsed.country_code)
    groups = re.findall(r"\d+", formats.international)[1:]  # after the country code
    nsn = phonenumbers.national_significant_number(parsed)
    return NumberParts(
        e164,
        formats.national,
        formats.international,
        country_code,
        nsn,
        trunk or "",
        tuple(groups) if "".join(groups) == nsn else (nsn,),
    )
