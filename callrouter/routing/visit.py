"""What a website visit tells us about where the caller came from.

The swap script sends the page URL and referrer; the server, not the script, extracts the
campaign parameters, so every client gets the same rules and old scripts stay correct.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

CLICK_IDS = ("gclid", "fbclid", "msclkid")
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_MAX_VALUE = 500


@dataclass(frozen=True, slots=True)
class VisitOrigin:
    """The attribution facts of one visit, as captured when its session starts."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    gclid: str | None = None
    fbclid: str | None = None
    msclkid: str | None = None
    referrer: str | None = None
    landing_page: str | None = None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values or not values[0].strip():
        return None
    return values[0].strip()[:_MAX_VALUE]


def origin_from_page(
    page_url: str, referrer: str | None, own_origins: Collection[str] = ()
) -> VisitOrigin:
    """Campaign parameters and click ids from the landing page's query string.

    The landing page is kept without its query string and fragment: those carry click ids and
    sometimes personal data (emails in links), which have their own fields or none at all.
    A referrer on the page's own origin or one of ``own_origins`` (the pool's sites) is a click
    inside the site, never a source: it is dropped.
    """
    parts = urlsplit(page_url)
    query = parse_qs(parts.query, keep_blank_values=False)
    values = {name: _first(query, name) for name in (*UTM_FIELDS, *CLICK_IDS)}
    own = {*own_origins, _origin(page_url)}
    return VisitOrigin(
        **values,
        referrer=None if referrer and _origin(referrer) in own else _strip_referrer(referrer),
        landing_page=page_without_query(page_url),
    )


def page_without_query(page_url: str) -> str | None:
    """A page's address as kept in attribution and journeys: no query string, no fragment."""
    parts = urlsplit(page_url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:_MAX_VALUE] if parts.netloc else None


def _origin(url: str) -> str | None:
    """scheme://host[:port] as browsers write an Origin header (default ports left out)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def has_campaign(origin: VisitOrigin) -> bool:
    """The page view brings a campaign of its own (a utm parameter or an ad click id): a new
    touch, even in the middle of a visit."""
    return any(getattr(origin, name) for name in (*UTM_FIELDS, *CLICK_IDS))


def _strip_referrer(referrer: str | None) -> str | None:
    """The referring page without query or fragment (search terms and ids stay out)."""
    if not referrer:
        return None
    parts = urlsplit(referrer)
    if not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:_MAX_VALUE]


def truncate_ip(address: str | None) -> str | None:
    """The visitor's network, not their address: IPv4 to /24, IPv6 to /48 (data minimisation)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    # Masked as an integer: building a network from text parsed the address a second time
    # (9 -> 3 µs a new visit).
    return str(type(ip)(int(ip) & _NETWORK_MASKS[ip.version]))


_NETWORK_MASKS = {4: (1 << 32) - (1 << 8), 6: (1 << 128) - (1 << 80)}
"""The first 24 bits of an IPv4 address, the first 48 of an IPv6 one."""


_CLICK_SOURCES = {"gclid": "google", "fbclid": "facebook", "msclkid": "bing"}


def channel(origin: VisitOrigin) -> dict[str, str]:
    """source / medium / campaign in the same keys static numbers use, so every call and form
    groups alike: utm_* first, then what a click id says (paid search or social), then the
    referring site, then "direct"."""
    click = next((name for name in _CLICK_SOURCES if getattr(origin, name)), None)
    referrer_host = urlsplit(origin.referrer).hostname if origin.referrer else None
    source = origin.utm_source or (_CLICK_SOURCES[click] if click else None) or referrer_host
    if origin.utm_medium:
        medium = origin.utm_medium
    elif click:
        medium = "cpc"
    elif referrer_host:
        medium = "referral"
    else:
        medium = "none"
    out = {"source": source or "direct", "medium": medium}
    if origin.utm_campaign:
        out["campaign"] = origin.utm_campaign
    return out
