/* callrouter swap script: shows each visitor a tracking number leased to their visit.
 *
 *   <script src="https://calls.example.com/v1/swap.js" data-pool="pk_..." async></script>
 *
 * Options (attributes of the script tag):
 *   data-pool     the pool's public key (required)
 *   data-consent  "wait": do nothing until the page calls window.callrouter.consent()
 *
 * No dependencies, no cookies: a first-party visitor id in localStorage lets the same visitor
 * get the same number back while their lease lives.
 */
(function () {
  "use strict";
  var VERSION = "1";
  var script = document.currentScript;
  if (!script || window.callrouter) return;
  var poolKey = script.getAttribute("data-pool");
  var base = new URL(script.src).origin;
  var state = { session: null, started: false, timer: null };
  var CANDIDATE = /(?:\+|00)?\(?\d[\d\s().\-\u00a0\/]{5,}\d/g;

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

  /* How a written number relates to a target: "intl" (+44 151..., 0044 151...), "national"
   * (0151 555..., 151 555...), or null when it is some other number. */
  function styleOf(text, target) {
    var d = digits(text);
    var full = target.country_code + target.nsn;
    var trimmed = text.replace(/^\s+/, "");
    if (trimmed.charAt(0) === "+") {
      if (d === full) return "intl";
      // "+44 (0)151 ...": the trunk prefix kept in brackets, a common UK and DE spelling.
      return target.trunk_prefix && d === target.country_code + target.trunk_prefix + target.nsn
        ? "intl-trunk" : null;
    }
    if (d === "00" + full) return "intl";
    if (d === target.nsn || d === target.trunk_prefix + target.nsn) return "national";
    if (d === full) return "intl-bare";
    return null;
  }

  /* The leased number written the way the original was: digit for digit over the original's
   * punctuation when the lengths agree, else the leased number's own display format. */
  function rewrite(text, match) {
    var n = state.session.number;
    var style = match.style;
    var wanted;
    if (style === "national") {
      var hadTrunk = digits(text).length > match.target.nsn.length && n.trunk_prefix;
      wanted = (hadTrunk ? n.trunk_prefix : "") + n.nsn;
    } else if (style === "intl-trunk") {
      wanted = n.country_code + n.trunk_prefix + n.nsn;
    } else {
      wanted = (digits(text).indexOf("00") === 0 && text.indexOf("+") < 0 ? "00" : "") +
        n.country_code + n.nsn;
    }
    if (digits(text).length !== wanted.length) {
      return style === "national" ? n.national : n.international;
    }
    var i = 0;
    return text.replace(/\d/g, function () { return wanted.charAt(i++); });
  }

  function matchTarget(text) {
    var targets = state.session.targets;
    for (var i = 0; i < targets.length; i++) {
      var style = styleOf(text, targets[i]);
      if (style) return { style: style, target: targets[i] };
    }
    return null;
  }

  function swapText(node) {
    var text = node.nodeValue;
    if (!text || text.length < 7) return;
    var changed = text.replace(CANDIDATE, function (found) {
      var match = matchTarget(found);
      return match ? rewrite(found, match) : found;
    });
    if (changed !== text) node.nodeValue = changed;
  }

  function swapLink(link) {
    var href = link.getAttribute("href") || "";
    if (href.slice(0, 4).toLowerCase() !== "tel:") return;
    var value = decodeURIComponent(href.slice(4)).split(";")[0];
    var match = matchTarget(value);
    if (!match) return;
    var n = state.session.number;
    link.setAttribute("href", "tel:" + (match.style === "national"
      ? digits(rewrite(value, match)) : "+" + n.country_code + n.nsn));
  }

  function swapTree(root) {
    if (!state.session || !state.session.number || state.session.targets.length === 0) return;
    if (root.nodeType === 3) { swapText(root); return; }
    if (root.nodeType !== 1 || /^(SCRIPT|STYLE|TEXTAREA|INPUT)$/.test(root.nodeName)) return;
    if (root.nodeName === "A") swapLink(root);
    var links = root.querySelectorAll ? root.querySelectorAll("a[href^='tel:'], a[href^='TEL:']") : [];
    for (var i = 0; i < links.length; i++) swapLink(links[i]);
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      acceptNode: function (node) {
        var parent = node.parentNode && node.parentNode.nodeName;
        return /^(SCRIPT|STYLE|TEXTAREA)$/.test(parent) ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_ACCEPT;
      }
    });
    var nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    nodes.forEach(swapText);
  }

  function observe() {
    // Late-loaded content and single-page-app navigation both arrive as DOM mutations.
    new MutationObserver(function (mutations) {
      mutations.forEach(function (m) {
        if (m.type === "characterData") swapText(m.target);
        else if (m.type === "attributes") swapLink(m.target);
        else m.addedNodes.forEach(swapTree);
      });
    }).observe(document.documentElement, {
      childList: true, subtree: true, characterData: true,
      attributes: true, attributeFilter: ["href"]
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

  function start() {
    if (state.started || !poolKey) return;
    state.started = true;
    api("/v1/sessions", {
      pool_key: poolKey,
      visitor_id: visitorId(),
      page_url: location.href,
      referrer: document.referrer || null
    }).then(function (session) {
      state.session = session;
      swapTree(document.body);
      observe();
      trackForms();
      state.timer = setInterval(heartbeat, session.heartbeat_seconds * 1000);
      document.addEventListener("visibilitychange", heartbeat);
      window.addEventListener("pagehide", function () {
        api("/v1/sessions/" + session.session_id + "/end", { pool_key: poolKey })
          .catch(function () {});
      });
      document.dispatchEvent(new CustomEvent("callrouter:swapped", { detail: session }));
    }).catch(function (error) {
      if (window.console) console.warn(error.message);
    });
  }

  window.callrouter = {
    version: VERSION,
    consent: start,
    session: function () { return state.session; }
  };
  if (script.getAttribute("data-consent") !== "wait") {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
