/* callrouter swap script: shows each visitor a tracking number leased to their visit.
 *
 *   <script src="https://calls.example.com/v1/swap.js" data-pool="pk_..." async></script>
 *
 * Options (attributes of the script tag):
 *   data-pool        the pool's public key (required)
 *   data-consent     "wait": do nothing until the page calls window.callrouter.consent()
 *   data-attributes  more attributes to swap numbers in, besides title and aria-label
 *                    (space separated, e.g. "data-phone alt")
 *
 * Pages that call window.callrouter before this script has loaded (or when it cannot load)
 * put this stub first; the calls queue and run once the script is there:
 *   <script>window.callrouter=window.callrouter||{q:[],consent:function(){this.q.push(["consent"])}};</script>
 *
 * No dependencies, no cookies: a first-party visitor id in localStorage lets the server
 * continue the visitor's visit (same session, same number) on their next page, whether the
 * browser loads it or a single-page app changes the URL with history.pushState/replaceState.
 */
(function () {
  "use strict";
  var VERSION = "2";
  var script = document.currentScript;
  var stub = window.callrouter;
  if (!script || (stub && stub.version)) return;
  var poolKey = script.getAttribute("data-pool");
  var base = new URL(script.src).origin;
  var state = {
    session: null, started: false, timer: null, observer: null,
    visitor: null, viewed: null, settling: false, views: null
  };
  var CANDIDATE = /(?:\+|00)?\(?\d[\d\s().\-\u00a0\/]{5,}\d/g;
  var WORD = /[0-9A-Za-z_\u00c0-\u024f]/;
  var SKIP = /^(SCRIPT|STYLE|TEXTAREA|INPUT|SELECT|OPTION|NOSCRIPT|TEMPLATE)$/;
  // Text in these elements flows on one line with its neighbours: a number may be split
  // across them (<b>0151</b> 555 0999) and is matched on the joined text of its block.
  var INLINE = /^(A|ABBR|B|BDI|BDO|BIG|CITE|CODE|DATA|DFN|EM|FONT|I|KBD|LABEL|MARK|Q|S|SAMP|SMALL|SPAN|STRONG|SUB|SUP|TIME|TT|U|VAR)$/;
  var ATTRIBUTES = ["title", "aria-label"].concat(
    (script.getAttribute("data-attributes") || "").split(/[\s,]+/).filter(Boolean));

  function api(path, body) {
    return fetch(base + path, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      keepalive: true,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) throw new Error("callrouter: " + path + " answered " + r.status);
      return r.status === 204 ? null : r.json();
    });
  }

  function visitorId() {
    try {
      var id = localStorage.getItem("callrouter_vid");
      if (!id) {
        id = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));
        localStorage.setItem("callrouter_vid", id);
      }
      return id;
    } catch (e) {
      return null;
    }
  }

  function digits(text) { return text.replace(/\D/g, ""); }

  /* How a written number relates to a target, or null when it is some other number. A
   * number is a target only with its trunk prefix (0151...) or country code (+44, 0044), or
   * written in groups (151 555 0999): a bare run of digits is an order or reference number.
   * In a tel: link the whole value is the number, so any spelling counts. */
  function styleOf(text, target, isLink) {
    var d = digits(text);
    var t = text.replace(/^\s+/, "");
    var full = target.country_code + target.nsn;
    var grouped = isLink || /\D/.test(t.replace(/^\+/, ""));
    if (t.charAt(0) === "+") {
      if (d === full) return "intl";
      // "+44 (0)151 ...": the trunk prefix kept in brackets, a common UK and DE spelling.
      return target.trunk_prefix && d === target.country_code + target.trunk_prefix + target.nsn
        ? "intl-trunk" : null;
    }
    if (d === "00" + full) return "intl00";
    if (target.trunk_prefix && d === target.trunk_prefix + target.nsn) return "national-trunk";
    if (d === target.nsn && grouped) return "national";
    if (d === full && grouped) return "intl-bare";
    return null;
  }

  function matchTarget(text, isLink) {
    var targets = state.session.targets;
    for (var i = 0; i < targets.length; i++) {
      var style = styleOf(text, targets[i], isLink);
      if (style) return style;
    }
    return null;
  }

  /* The leased number's digit groups as the style writes them. */
  function groupsFor(style) {
    var n = state.session.number;
    var groups = (n.groups && n.groups.length ? n.groups : [n.nsn]).slice();
    if (style === "national-trunk") groups[0] = n.trunk_prefix + groups[0];
    else if (style === "intl-trunk") groups = [n.country_code, n.trunk_prefix].concat(groups);
    else if (style === "intl00") groups = ["00" + n.country_code].concat(groups);
    else if (style !== "national") groups = [n.country_code].concat(groups);
    return groups;
  }

  /* Edits that write the leased number over ``text`` (found at ``offset``) in its style:
   * the original's punctuation ("+", brackets, "(0)", spaces, dashes) kept, the digit groups
   * replaced by the leased number's. Same number of groups: each group is replaced in place,
   * so markup between them stays. Else one edit, with the original's separators reused. */
  function edits(text, offset, style) {
    var runs = [], re = /\d+/g, m;
    while ((m = re.exec(text))) runs.push({ start: m.index, end: m.index + m[0].length });
    var groups = groupsFor(style);
    if (runs.length === groups.length) {
      return runs.map(function (run, i) {
        return { start: offset + run.start, end: offset + run.end, text: groups[i] };
      });
    }
    var first = runs[0], last = runs[runs.length - 1];
    var gaps = [];
    for (var i = 1; i < runs.length; i++) gaps.push(text.slice(runs[i - 1].end, runs[i].start));
    var out = text.slice(0, first.start);
    groups.forEach(function (group, k) {
      if (k > 0 && gaps.length) out += gaps[Math.min(k - 1, gaps.length - 1)];
      out += group;
    });
    return [{ start: offset, end: offset + text.length, text: out + text.slice(last.end) }];
  }

  /* The target number inside a candidate, which may have caught neighbouring figures
   * ("Room 12 0151 555 0999 24 hours"): the widest span of whole digit groups that is one. */
  function targetIn(candidate) {
    var runs = [], re = /\d+/g, m;
    while ((m = re.exec(candidate))) runs.push({ start: m.index, end: m.index + m[0].length });
    for (var i = 0; i < runs.length; i++) {
      var from = i === 0 ? 0 : runs[i].start;
      while (i > 0 && from > 0 && /[+(]/.test(candidate.charAt(from - 1))) from--;
      for (var j = runs.length - 1; j >= i; j--) {
        var to = j === runs.length - 1 ? candidate.length : runs[j].end;
        var text = candidate.slice(from, to);
        var style = matchTarget(text, false);
        if (style) return { offset: from, text: text, style: style };
      }
    }
    return null;
  }

  /* Every edit for the target numbers in ``text``. */
  function findEdits(text) {
    var found = [];
    if (!text || text.length < 7) return found;
    CANDIDATE.lastIndex = 0;
    var m;
    while ((m = CANDIDATE.exec(text))) {
      var before = text.charAt(m.index - 1), after = text.charAt(m.index + m[0].length);
      if ((before && WORD.test(before)) || (after && WORD.test(after))) continue;
      var hit = targetIn(m[0]);
      if (hit) found = found.concat(edits(hit.text, m.index + hit.offset, hit.style));
    }
    return found;
  }

  function applyToString(text, list) {
    for (var i = list.length - 1; i >= 0; i--) {
      text = text.slice(0, list[i].start) + list[i].text + text.slice(list[i].end);
    }
    return text;
  }

  /* Apply edits (in the joined text of ``nodes``) to the text nodes, last first so earlier
   * offsets stay true. An edit across nodes goes into the first; the rest lose their part. */
  function applyToNodes(nodes, list) {
    var starts = [], at = 0;
    nodes.forEach(function (node) { starts.push(at); at += node.nodeValue.length; });
    for (var i = list.length - 1; i >= 0; i--) {
      var edit = list[i], placed = false;
      for (var k = 0; k < nodes.length; k++) {
        var node = nodes[k], from = starts[k], to = from + node.nodeValue.length;
        if (to <= edit.start || from >= edit.end) continue;
        var a = Math.max(edit.start, from) - from, b = Math.min(edit.end, to) - from;
        var value = node.nodeValue;
        node.nodeValue = value.slice(0, a) + (placed ? "" : edit.text) + value.slice(b);
        placed = true;
      }
    }
  }

  function blockOf(node) {
    var el = node.parentNode;
    while (el && el.nodeType === 1 && INLINE.test(el.nodeName)) el = el.parentNode;
    return el;
  }

  /* Text nodes under ``root`` in order, in runs that read as one line (same block, no
   * <br> between); each run's numbers are swapped on its joined text. */
  function swapText(root) {
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
      acceptNode: function (node) {
        return node.nodeType === 1 && SKIP.test(node.nodeName) ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_ACCEPT;
      }
    });
    var runs = [], current = [], block = null;
    function close() { if (current.length) runs.push(current); current = []; }
    var node = root.nodeType === 3 ? root : walker.nextNode();
    while (node) {
      if (node.nodeType === 3) {
        var mine = blockOf(node);
        if (mine !== block) { close(); block = mine; }
        current.push(node);
      } else if (!INLINE.test(node.nodeName)) {
        close(); block = null;  // a <br> or a nested block ends the line
      }
      node = root.nodeType === 3 ? null : walker.nextNode();
    }
    close();
    runs.forEach(function (nodes) {
      var joined = nodes.map(function (n) { return n.nodeValue; }).join("");
      var list = findEdits(joined);
      if (list.length) applyToNodes(nodes, list);
    });
  }

  function swapAttributes(el) {
    ATTRIBUTES.forEach(function (name) {
      var value = el.getAttribute(name);
      var list = value ? findEdits(value) : [];
      if (list.length) el.setAttribute(name, applyToString(value, list));
    });
    if (el.nodeName === "A") swapLink(el);
  }

  /* tel: links always get E.164 (RFC 3966 global numbers dial from anywhere). */
  function swapLink(link) {
    var href = link.getAttribute("href") || "";
    if (href.slice(0, 4).toLowerCase() !== "tel:") return;
    var value;
    try { value = decodeURIComponent(href.slice(4)).split(";")[0]; } catch (e) { return; }
    if (!matchTarget(value, true)) return;
    var n = state.session.number;
    link.setAttribute("href", "tel:+" + n.country_code + n.nsn);
  }

  function swapTree(root) {
    if (!state.session || !state.session.number || state.session.targets.length === 0) return;
    if (root.nodeType === 3) {
      var block = blockOf(root);
      root = block && block.nodeType === 1 ? block : root;
    }
    if (root.nodeType !== 1 || SKIP.test(root.nodeName)) {
      if (root.nodeType === 3) swapText(root);
      return;
    }
    var selector = ATTRIBUTES.map(function (a) { return "[" + a + "]"; })
      .concat(["a[href]"]).join(",");
    swapAttributes(root);
    var elements = root.querySelectorAll(selector);
    for (var i = 0; i < elements.length; i++) swapAttributes(elements[i]);
    // Inline content is matched with its whole block, so a number split by the change is seen.
    swapText(INLINE.test(root.nodeName) && blockOf(root) ? blockOf(root) : root);
    if (state.observer) state.observer.takeRecords();  // our own edits need no second look
  }

  function observe() {
    // Late-loaded content and single-page-app navigation both arrive as DOM mutations.
    state.observer = new MutationObserver(function (mutations) {
      mutations.forEach(function (m) {
        if (m.type === "characterData") swapTree(m.target);
        else if (m.type === "attributes") swapAttributes(m.target);
        else m.addedNodes.forEach(swapTree);
      });
    });
    state.observer.observe(document.documentElement, {
      childList: true, subtree: true, characterData: true,
      attributes: true, attributeFilter: ["href"].concat(ATTRIBUTES)
    });
  }

  function heartbeat() {
    if (!state.session || document.visibilityState !== "visible") return;
    api("/v1/sessions/" + state.session.session_id + "/heartbeat", { pool_key: poolKey })
      .catch(function () {});
  }

  function trackForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!state.session || !form || form.nodeName !== "FORM") return;
      var fields = {};
      (state.session.form_fields || []).forEach(function (name) {
        var input = form.elements.namedItem(name);
        if (input && typeof input.value === "string") fields[name] = input.value;
      });
      api("/v1/forms", {
        pool_key: poolKey,
        session_id: state.session.session_id,
        form: form.id || form.getAttribute("name") || form.getAttribute("action") || "form",
        page_url: location.href,
        fields: fields
      }).catch(function () {});
    }, true);
  }

  function warn(error) {
    if (window.console) console.warn(error.message);
  }

  function pageView(page) {
    return api("/v1/sessions", {
      pool_key: poolKey,
      visitor_id: state.visitor,
      page_url: page.url,
      referrer: page.referrer,
      title: page.title
    });
  }

  /* A page's address as page views compare it: a new fragment alone is no new page. */
  function withoutFragment(url) { return url.split("#")[0]; }

  /* A single-page app's route change: the same page view as a load, sent once the burst of
   * history calls is over and the app has had a chance to set the new title (after the next
   * animation frame, and the tasks the app queued before it, such as React's effects). */
  function routeChanged() {
    // One view per burst: it reads the URL when it is sent, so a replaceState right after a
    // pushState is one view, of the URL the app settled on.
    if (state.settling) return;
    state.settling = true;
    if (document.visibilityState === "visible") {
      requestAnimationFrame(function () { setTimeout(settle, 0); });
    } else {
      setTimeout(settle, 0);  // hidden tabs run no animation frames
    }
  }

  function settle() {
    state.settling = false;
    var url = withoutFragment(location.href);
    if (url === state.viewed) return;
    var page = {
      url: location.href,
      // A click inside the site, as a load's document.referrer says, without the query: the
      // server drops it from referrers anyway, and a long one would refuse this view too.
      referrer: state.viewed.split("?")[0],
      title: document.title || null
    };
    state.viewed = url;
    // One at a time, in order, once the visit exists: the journey lists pages as they were seen.
    state.views = state.views.then(function () {
      if (!state.session) return null;  // the first view was refused: no visit to continue
      return pageView(page).then(function (session) { state.session = session; });
    }).catch(warn);
  }

  /* Without a visitor id each route change would start a new visit: such a browser (one that
   * blocks localStorage) is left with the view of its first page. */
  function followRoutes() {
    ["pushState", "replaceState"].forEach(function (name) {
      var original = history[name];
      history[name] = function () {
        var result = original.apply(this, arguments);  // a refused URL throws as it would
        routeChanged();
        return result;
      };
    });
    window.addEventListener("popstate", routeChanged);
  }

  function start() {
    if (state.started || !poolKey) return;
    state.started = true;
    state.visitor = visitorId();
    state.viewed = withoutFragment(location.href);
    state.views = pageView({
      url: location.href,
      referrer: document.referrer || null,
      title: document.title || null
    }).then(function (session) {
      state.session = session;
      swapTree(document.body);
      observe();
      trackForms();
      state.timer = setInterval(heartbeat, session.heartbeat_seconds * 1000);
      document.addEventListener("visibilitychange", heartbeat);
      window.addEventListener("pagehide", function () {
        api("/v1/sessions/" + state.session.session_id + "/end", { pool_key: poolKey })
          .catch(function () {});
      });
      document.dispatchEvent(new CustomEvent("callrouter:swapped", { detail: session }));
    }).catch(warn);
    if (state.visitor) followRoutes();
  }

  function run(command) {
    var name = typeof command === "string" ? command : command && command[0];
    if (name === "consent") start();
  }

  var queued = stub && stub.q && stub.q.length ? stub.q.slice() : [];
  window.callrouter = {
    version: VERSION,
    consent: start,
    session: function () { return state.session; },
    q: { push: run }  // the stub's queue, from now on run at once
  };
  if (script.getAttribute("data-consent") !== "wait") {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
  queued.forEach(run);
})();
