"""Attribution facts captured from the landing page, and data minimisation on the way in."""

from __future__ import annotations

from callrouter.routing.visit import (
    VisitOrigin,
    channel,
    has_campaign,
    origin_from_page,
    truncate_ip,
)


def test_campaign_parameters_and_click_ids_come_from_the_landing_page() -> None:
    origin = origin_from_page(
        "https://www.acme.example/offers/?utm_source=google&utm_medium=cpc&utm_campaign=spring"
        "&utm_term=dentist+liverpool&gclid=Cj0KCQ&email=someone%40example.com#top",
        "https://www.google.com/search?q=dentist+liverpool",
    )
    assert origin == VisitOrigin(
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="spring",
        utm_term="dentist liverpool",
        gclid="Cj0KCQ",
        referrer="https://www.google.com/search",
        landing_page="https://www.acme.example/offers/",
    )


def test_blank_and_missing_parameters_are_none() -> None:
    origin = origin_from_page("https://acme.example/?utm_source=&fbclid=abc", None)
    assert origin.utm_source is None
    assert origin.fbclid == "abc"
    assert origin.referrer is None
    assert origin_from_page("not a url", "also not").landing_page is None


def test_ip_addresses_are_truncated_to_their_network() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert truncate_ip("garbage") is None
    assert truncate_ip("fe80::1%eth0") == "fe80::"  # a zone is not part of the network
    assert truncate_ip("255.255.255.255") == "255.255.255.0"
    assert truncate_ip(None) is None


def test_channel_from_utm_click_ids_referrers_or_direct() -> None:
    def of(page: str, referrer: str | None = None) -> dict[str, str]:
        return channel(origin_from_page(page, referrer))

    assert of("https://a.example/?utm_source=news&utm_medium=email&utm_campaign=x") == {
        "source": "news",
        "medium": "email",
        "campaign": "x",
    }
    assert of("https://a.example/?gclid=123") == {"source": "google", "medium": "cpc"}
    assert of("https://a.example/", "https://www.bing.com/search?q=dentist") == {
        "source": "www.bing.com",
        "medium": "referral",
    }
    assert of("https://a.example/") == {"source": "direct", "medium": "none"}


def test_a_referrer_on_the_sites_own_origins_is_a_click_inside_the_site() -> None:
    own = ["https://www.acme.example", "https://shop.acme.example"]
    page = "https://www.acme.example/prices?utm_source=x"
    for inside in (
        "https://www.acme.example/",
        "https://WWW.acme.example:443/offers?q=1",
        "https://shop.acme.example/cart",
    ):
        assert origin_from_page(page, inside, own).referrer is None, inside
    # Its own origin counts even when the pool lists none (any origin may use the pool).
    assert origin_from_page("http://127.0.0.1:8000/b", "http://127.0.0.1:8000/a").referrer is None
    for outside in ("https://acme.example/", "http://www.acme.example/", "https://evil.example/"):
        assert origin_from_page(page, outside, own).referrer == outside, outside
    assert origin_from_page(page, "not a url", own).referrer is None


def test_a_page_brings_a_campaign_only_with_a_utm_parameter_or_click_id() -> None:
    assert has_campaign(origin_from_page("https://a.example/?gclid=1", None))
    assert has_campaign(origin_from_page("https://a.example/?utm_medium=email", None))
    assert not has_campaign(origin_from_page("https://a.example/?q=1", "https://b.example/"))
