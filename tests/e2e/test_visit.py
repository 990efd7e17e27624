"""Visits in a real browser: headless Chromium walks a client's site of several pages served on
loopback; one router process (embedded PostgreSQL) serves every test of this file.

- a two-page visit is one session: the second page keeps the number and the campaign, and a
  SIPp call to the number shown there is credited to newsletter/email/dec with both pages;
- a new campaign mid-visit gives the touch each attribution model says;
- a single-page app's route changes (pushState, replaceState, back) are page views of the
  visit, one per burst, with the title the app sets; a new fragment is none; a URL too long
  gets the router's 422 and the page no error;
- numbers are written in the page's style, grouped as the leased number is grouped, also when
  split across inline elements and in title/aria-label; other digits are left alone;
- the stub queues consent calls, also when swap.js cannot load;
- swap.js revalidates (304) and is sent compressed over real HTTP.
"""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import world_traversable_tempdir
from tests.e2e.sipp import run_sipp
from tests.e2e.test_swap import Router, answering_pbx

TARGET = "+441515550999"
MAIL = "https://mail.example.net/inbox"
CAMPAIGN = "utm_source=newsletter&utm_medium=email&utm_campaign=dec&fbclid=ABC"
SCRIPT = '<script src="{router}/v1/swap.js" data-pool="{key}" {extra} async></script>'
PLAIN = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><p id="number">Call us on 0151 555 0999 today.</p>
<a id="next" href="{next}">Next page</a>
{script}
</body></html>
"""
STYLES = """<!doctype html>
<html><head><meta charset="utf-8"><title>Styles</title></head>
<body>
  <p id="national">Call us on 0151 555 0999 today.</p>
  <p id="split">Call <b id="area">0151</b> 555 0999 now.</p>
  <p id="compact">Or 01515550999.</p>
  <p id="intl">From abroad: +44 151 555 0999</p>
  <p id="trunk">Or +44 (0)151 555 0999</p>
  <p id="bracketed">Or (0151) 555-0999</p>
  <p id="hours">Call 0151 555 0999 24 hours a day</p>
  <p id="order">Order number 1515550999 shipped.</p>
  <p id="other">Our fax is 0151 555 0123.</p>
  <span id="icon" title="Call 0151 555 0999" aria-label="Phone 0151 555 0999"
        data-phone="0151 555 0999" data-fax="0151 555 0999">icon</span>
  <a id="tel" href="tel:01515550999">Tap to call</a>
  <a id="tel-intl" href="tel:+44-151-555-0999">Tap to call</a>
  {script}
</body></html>
"""
STUB = (
    "<script>window.callrouter=window.callrouter||"
    '{q:[],consent:function(){this.q.push(["consent"])}};</script>'
)
CONSENT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Consent</title>{stub}</head>
<body><p id="number">Call us on 0151 555 0999 today.</p>
<script>window.callrouter.consent();</script>
{script}
</body></html>
"""
SPA = """<!doctype html>
<html><head><meta charset="utf-8"><title>app</title>
<script>
  // The site's own instrumentation: every page view the swap script asks of the router, and
  // the router's answers (CDP cannot read the body of a keepalive fetch).
  window.views = [];
  window.answers = [];
  var send = window.fetch;
  window.fetch = function (url, init) {
    var sent = send.apply(this, arguments);
    if (String(url).slice(-12) !== "/v1/sessions") return sent;
    window.views.push(JSON.parse(init.body));
    sent.then(function (response) {
      var type = response.headers.get("Content-Type");
      response.clone().json().then(function (body) {
        window.answers.push({status: response.status, type: type, body: body});
      });
    });
    return sent;
  };
  // The app's router: it sets each route's title in a task queued with the navigation, as
  // React's effects run after the render.
  function titled() {
    setTimeout(function () { document.title = location.pathname.slice(1); }, 0);
  }
  function go(url) { history.pushState({}, "", url); titled(); }
  window.addEventListener("popstate", titled);
</script></head>
<body><p id="number">Call us on 0151 555 0999 today.</p>
{script}
</body></html>
"""
SETTLED = """() => {
  NAVIGATION;
  return new Promise(done => requestAnimationFrame(() => setTimeout(done, 0)));
}"""
"""Run NAVIGATION in the page and return once the swap script has sent its page view, if it
sends one: the script sends it from a task queued in the next animation frame, and this one's
task, queued after it in the same frame, runs after it (timers of one delay run in order)."""


class Site:
    """The client's website on loopback: pages by path (the query string is ignored)."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.pages.get(self.path.split("?", 1)[0])
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class World:
    def __init__(self, router: Router, site: Site, browser: Browser) -> None:
        self.router, self.site, self.browser = router, site, browser
        self.client = router.api("POST", "/v1/clients", {"name": "Acme Dental"})
        self.errors: dict[Page, list[str]] = {}
        """Uncaught script errors per page."""

    def pool(
        self, name: str, numbers: list[str], destination: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        pool = self.router.api(
            "POST",
            "/v1/pools",
            {
                "client_id": self.client["id"],
                "name": name,
                "allowed_origins": [self.site.origin],
                "target_numbers": [TARGET],
                **settings,
            },
        )
        for e164 in numbers:
            number = {"client_id": self.client["id"], "e164": e164, "pool_id": pool["id"]}
            if destination is not None:
                number["destination"] = destination
            self.router.api("POST", "/v1/numbers", number)
        self.router.server.wait_for(
            rf"sessions: pool {pool['id']} loaded with {len(numbers)} number"
        )
        return pool

    def script(self, pool: dict[str, Any], extra: str = "") -> str:
        return SCRIPT.format(
            router=self.router.server.http_url, key=pool["public_key"], extra=extra
        )

    def page(self) -> Page:
        """A tab in a fresh browser profile (its own localStorage: a new visitor)."""
        page = self.browser.new_context().new_page()
        self.errors[page] = []
        page.on("pageerror", lambda error: self.errors[page].append(str(error)))
        return page


def swapped(page: Page) -> dict[str, Any]:
    page.wait_for_function(
        "window.callrouter && window.callrouter.session && window.callrouter.session() !== null"
    )
    session: dict[str, Any] = page.evaluate("window.callrouter.session()")
    return session


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    workdir = world_traversable_tempdir("callrouter-visit-")
    site = Site()
    router = Router(workdir)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
            )
            try:
                yield World(router, site, browser)
            finally:
                browser.close()
    finally:
        router.server.stop()
        site.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_two_page_visit_is_one_session_and_the_call_credits_its_campaign(
    world: World, tmp_path: Path
) -> None:
    pbx, desk = answering_pbx(tmp_path)
    try:
        pool = world.pool("two pages", ["+441515550100"], destination=desk)
        tag = world.script(pool)
        world.site.pages["/offers"] = PLAIN.format(
            title="Offers", next="/contact", script=tag
        ).encode()
        world.site.pages["/contact"] = PLAIN.format(title="Contact", next="/", script=tag).encode()
        page = world.page()
        page.goto(f"{world.site.origin}/offers?{CAMPAIGN}", referer=MAIL)
        entry = swapped(page)
        assert page.evaluate("document.referrer") == MAIL
        with page.expect_navigation():
            page.click("#next")
        second = swapped(page)
        assert second["session_id"] == entry["session_id"]
        shown = page.inner_text("#number")
        assert shown == "Call us on 0151 555 0100 today."
        e164 = second["number"]["e164"]
        assert e164 == entry["number"]["e164"] == "+441515550100"
        page.context.close()

        result = run_sipp("uac", world.router.server.sip_port(), tmp_path, service=e164)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        world.router.server.wait_for(rf"call: \S+ to \{e164} ended answered")
    finally:
        if pbx.poll() is None:
            pbx.kill()
        pbx.communicate(timeout=60)
    (listed,) = world.router.api("GET", "/v1/calls?number=%2B441515550100")["data"]
    assert listed["session_id"] == entry["session_id"]
    facts = listed["attribution"]
    assert (facts["source"], facts["medium"], facts["campaign"]) == ("newsletter", "email", "dec")
    assert facts["fbclid"] == "ABC" and facts["referrer"] == MAIL
    pages = [(p["url"], p["title"]) for p in listed["visit"]["journey"]]
    assert pages == [
        (world.site.origin + "/offers", "Offers"),
        (world.site.origin + "/contact", "Contact"),
    ]
    session = world.router.api("GET", f"/v1/sessions/{entry['session_id']}")
    assert session["call_ids"] == [listed["id"]]
    assert session["attribution"]["source"] == "newsletter"


@pytest.mark.parametrize(
    ("model", "credited"), [("first_touch", "newsletter"), ("last_non_direct", "google")]
)
def test_a_new_campaign_mid_visit_gives_the_touch_the_model_says(
    world: World, model: str, credited: str
) -> None:
    number = {"first_touch": "+441515550200", "last_non_direct": "+441515550201"}[model]
    pool = world.pool(model, [number], attribution_model=model)
    tag = world.script(pool)
    world.site.pages[f"/{model}"] = PLAIN.format(title=model, next="/", script=tag).encode()
    page = world.page()
    page.goto(f"{world.site.origin}/{model}?{CAMPAIGN}", referer=MAIL)
    entry = swapped(page)
    # The visitor comes back from a Google ad while the visit is still going.
    page.goto(f"{world.site.origin}/{model}?gclid=G1", referer="https://www.google.com/")
    clicked = swapped(page)
    assert clicked["session_id"] == entry["session_id"]
    session = world.router.api("GET", f"/v1/sessions/{entry['session_id']}")
    assert session["attribution"]["source"] == credited
    first, last = session["touches"]["first"], session["touches"]["last"]
    assert (first["source"], first["campaign"]) == ("newsletter", "dec")
    assert (last["source"], last["medium"], last["gclid"]) == ("google", "cpc", "G1")
    assert len(session["journey"]) == 2
    page.context.close()


def test_numbers_are_written_in_the_pages_style_and_grouped_as_the_leased_number(
    world: World,
) -> None:
    # A London number (2-digit area code) replaces a Liverpool one (3 digits).
    pool = world.pool("styles", ["+442079460000"])
    script = world.script(pool, 'data-attributes="data-phone"')
    world.site.pages["/styles"] = STYLES.format(script=script).encode()
    page = world.page()
    page.goto(world.site.origin + "/styles")
    swapped(page)
    text = {
        id_: page.inner_text("#" + id_)
        for id_ in ("national", "split", "compact", "intl", "trunk", "bracketed", "hours")
    }
    assert text == {
        "national": "Call us on 020 7946 0000 today.",
        "split": "Call 020 7946 0000 now.",
        "compact": "Or 02079460000.",
        "intl": "From abroad: +44 20 7946 0000",
        "trunk": "Or +44 (0)20 7946 0000",
        "bracketed": "Or (020) 7946-0000",
        "hours": "Call 020 7946 0000 24 hours a day",
    }
    assert page.inner_text("#area") == "020"  # the markup around the split number is kept
    assert page.inner_text("#order") == "Order number 1515550999 shipped."
    assert page.inner_text("#other") == "Our fax is 0151 555 0123."
    assert page.get_attribute("#icon", "title") == "Call 020 7946 0000"
    assert page.get_attribute("#icon", "aria-label") == "Phone 020 7946 0000"
    assert page.get_attribute("#icon", "data-phone") == "020 7946 0000"  # opted in
    assert page.get_attribute("#icon", "data-fax") == "0151 555 0999"  # not opted in
    assert page.get_attribute("#tel", "href") == "tel:+442079460000"
    assert page.get_attribute("#tel-intl", "href") == "tel:+442079460000"
    # Content added later, split from the start, is swapped as a whole.
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend', "
        '\'<p id="late" title="0151 555 0999"><i>0151</i> <i>555</i> 0999</p>\')'
    )
    page.wait_for_function("!document.getElementById('late').innerText.includes('0999')")
    assert page.inner_text("#late") == "020 7946 0000"
    assert page.get_attribute("#late", "title") == "020 7946 0000"
    assert world.errors[page] == []
    page.context.close()


def test_the_stub_queues_consent_and_survives_a_script_that_cannot_load(world: World) -> None:
    pool = world.pool("consent", ["+441515550300"])
    waiting = world.script(pool, 'data-consent="wait"')
    world.site.pages["/queued"] = CONSENT.format(stub=STUB, script=waiting).encode()
    broken = f'<script src="{world.router.server.http_url}/v1/missing.js" async></script>'
    world.site.pages["/broken"] = CONSENT.format(stub=STUB, script=broken).encode()
    world.site.pages["/nostub"] = CONSENT.format(stub="", script=broken).encode()

    page = world.page()
    page.goto(world.site.origin + "/queued")  # consent() ran before swap.js was there
    swapped(page)
    assert page.inner_text("#number") == "Call us on 0151 555 0300 today."
    page.goto(world.site.origin + "/broken")
    page.wait_for_load_state("load")
    assert page.evaluate("window.callrouter.q") == [["consent"]]
    assert page.inner_text("#number") == "Call us on 0151 555 0999 today."
    assert world.errors[page] == []
    page.goto(world.site.origin + "/nostub")  # the failure the stub exists for
    page.wait_for_load_state("load")
    assert any("consent" in error for error in world.errors[page])
    page.context.close()


def test_swap_js_revalidates_and_is_sent_compressed(world: World) -> None:
    url = world.router.server.http_url + "/v1/swap.js"
    with urllib.request.urlopen(url, timeout=30) as response:
        plain, etag = response.read(), response.headers["ETag"]
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read()) == plain
        gzip_etag = response.headers["ETag"]
    for tag in (etag, gzip_etag):
        request = urllib.request.Request(url, headers={"If-None-Match": tag})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 304 and answer.value.read() == b""
    pool = world.router.api("GET", "/v1/pools?limit=1")["data"][0]
    pinned = world.router.server.http_url + pool["swap_script"]["src"]
    with urllib.request.urlopen(pinned, timeout=30) as response:
        assert response.read() == plain
        assert "immutable" in response.headers["Cache-Control"]
    assert json.loads(json.dumps(pool["swap_script"]))["integrity"].startswith("sha384-")


def answered_view(page: Page, navigation: str) -> dict[str, Any]:
    """The router's answer (status, type, body) to the page view that ``navigation`` (run in
    the page) makes the swap script send."""
    count = page.evaluate("window.answers.length")
    page.evaluate(navigation)
    page.wait_for_function(f"window.answers.length > {count}")
    answer: dict[str, Any] = page.evaluate(f"window.answers[{count}]")
    return answer


def test_single_page_app_route_changes_are_page_views_of_the_visit(world: World) -> None:
    pool = world.pool("spa", ["+441515550400"])
    world.site.pages["/app"] = SPA.replace("{script}", world.script(pool)).encode()
    page = world.page()
    page.goto(world.site.origin + "/app", referer=MAIL)
    entry = swapped(page)

    assert answered_view(page, "go('/pricing')")["status"] == 201
    # A router that pushes, then writes the canonical query in place: one view, the last URL.
    push_then_replace = "go('/offer'); history.replaceState({}, '', '/offer?utm_campaign=spring')"
    assert answered_view(page, push_then_replace)["status"] == 201
    assert answered_view(page, "history.back()")["status"] == 201  # popstate, to /pricing
    # A new fragment is no new page.
    page.evaluate(SETTLED.replace("NAVIGATION", "history.replaceState({}, '', '#plans')"))
    assert page.evaluate("window.views.length") == 4

    refused = answered_view(page, "go('/search?q=' + 'x'.repeat(3000))")
    assert (refused["status"], refused["type"]) == (422, "application/problem+json")
    assert [e["field"] for e in refused["body"]["errors"]] == ["page_url"]
    assert answered_view(page, "go('/contact')")["status"] == 201  # the visit goes on after it

    views = page.evaluate("window.views")
    assert [v["page_url"].removeprefix(world.site.origin) for v in views] == [
        "/app",
        "/pricing",
        "/offer?utm_campaign=spring",
        "/pricing",
        "/search?q=" + "x" * 3000,
        "/contact",
    ]
    # Each route change says it came from the previous page of the site, without its query.
    assert [v["referrer"] for v in views] == [
        MAIL,
        *(world.site.origin + path for path in ("/app", "/pricing", "/offer", "/pricing")),
        world.site.origin + "/search",
    ]
    assert {v["visitor_id"] for v in views} == {views[0]["visitor_id"]}
    # Every view answered continued the visit: one session, one number.
    kept = [
        (a["body"]["session_id"], a["body"]["number"]["e164"])
        for a in page.evaluate("window.answers")
        if a["status"] == 201
    ]
    assert kept == [(entry["session_id"], "+441515550400")] * 5
    assert page.evaluate("window.callrouter.session().session_id") == entry["session_id"]
    assert page.inner_text("#number") == "Call us on 0151 555 0400 today."
    assert world.errors[page] == []
    page.context.close()

    session = world.router.api("GET", f"/v1/sessions/{entry['session_id']}")
    assert session["number"]["e164"] == "+441515550400"
    pages = [(p["url"].removeprefix(world.site.origin), p["title"]) for p in session["journey"]]
    assert pages == [
        ("/app", "app"),
        ("/pricing", "pricing"),
        ("/offer", "offer"),
        ("/pricing", "pricing"),
        ("/contact", "contact"),
    ]
    first, last = session["touches"]["first"], session["touches"]["last"]
    assert (first["source"], first["medium"]) == ("mail.example.net", "referral")
    assert (last["campaign"], last["landing_page"]) == ("spring", world.site.origin + "/offer")
    assert session["attribution"]["campaign"] == "spring"


def test_route_changes_before_consent_send_nothing(world: World) -> None:
    pool = world.pool("spa consent", ["+441515550401"])
    world.site.pages["/wait"] = SPA.replace(
        "{script}", world.script(pool, 'data-consent="wait"')
    ).encode()
    page = world.page()
    page.goto(world.site.origin + "/wait")
    page.wait_for_function("window.callrouter && window.callrouter.version")
    page.evaluate(SETTLED.replace("NAVIGATION", "go('/pricing')"))
    assert page.evaluate("window.views") == []
    # Consent: the visit starts on the page the app shows now, and follows it from there.
    page.evaluate("window.callrouter.consent()")
    entry = swapped(page)
    assert answered_view(page, "go('/contact')")["status"] == 201
    views = page.evaluate("window.views")
    assert [(v["page_url"], v["referrer"]) for v in views] == [
        (world.site.origin + "/pricing", None),
        (world.site.origin + "/contact", world.site.origin + "/pricing"),
    ]
    assert world.errors[page] == []
    page.context.close()
    session = world.router.api("GET", f"/v1/sessions/{entry['session_id']}")
    assert [p["url"] for p in session["journey"]] == [
        world.site.origin + "/pricing",
        world.site.origin + "/contact",
    ]
