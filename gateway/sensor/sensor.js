/* ztgate browser sensor.
 *
 * Reports WHEN the user pressed keys, moved or clicked, and WHEN the page changed, never WHAT was typed: a key is
 * reduced here, in the browser, to a coarse class (the same table as scoring/keys.py); `KeyboardEvent.key` and field
 * values are never read. Wire format and limits: gateway/sensor/protocol.py.
 *
 * Injected by the gateway as
 *   <script src="/.ztgate/sensor.js" data-ztgate-token="..." nonce="..." async></script>
 * The token (per page, bound to the session) rides in the tag so the script itself stays cacheable and works under a
 * strict nonce-based CSP (no inline code, no eval).
 */
(function () {
  "use strict";
  var doc = document;
  var script = doc.currentScript;
  var GUARD = typeof Symbol === "function" ? Symbol.for("ztgate.sensor") : "__ztgateSensor";
  if (!script || window[GUARD]) return;
  var TOKEN = script.getAttribute("data-ztgate-token");
  if (!TOKEN) return;
  window[GUARD] = 1;

  var perf = window.performance;
  var ENDPOINT = script.getAttribute("data-ztgate-endpoint") || "/.ztgate/sensor";
  var QUERY = "?token=" + encodeURIComponent(TOKEN);
  var WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + ENDPOINT + QUERY;
  var BEACON_URL = ENDPOINT + "/beacon" + QUERY;
  var ORIGIN = round(perf.timeOrigin || perf.timing.navigationStart);
  var FLUSH_MS = 250, FLUSH_EVENTS = 50, MAX_PER_MESSAGE = 200, MAX_BUFFER = 2000, MOVE_MS = 15;
  var WS = typeof WebSocket === "function" ? WebSocket : null;

  /* <keyclass> the same table as scoring/keys.py (tests/sensor/test_keytable.py keeps them equal) */
  var ZONES = ["", "qwert", "asdfg", "zxcvb", "yuiop", "hjkl", "nm"];
  var CODES = {
    Space: 7, Enter: 8, NumpadEnter: 8, Backspace: 9, Delete: 9, Tab: 14,
    ShiftLeft: 10, ShiftRight: 10, ControlLeft: 10, ControlRight: 10, AltLeft: 10, AltRight: 10,
    MetaLeft: 10, MetaRight: 10, CapsLock: 10,
    ArrowLeft: 13, ArrowRight: 13, ArrowUp: 13, ArrowDown: 13, Home: 13, End: 13, PageUp: 13, PageDown: 13,
    Minus: 12, Equal: 12, BracketLeft: 12, BracketRight: 12, Backslash: 12, Semicolon: 12, Quote: 12,
    Backquote: 12, Comma: 12, Period: 12, Slash: 12, IntlBackslash: 12,
    Escape: 15
  };
  function keyClass(code) {
    if (code.length === 4 && code.slice(0, 3) === "Key") {
      var letter = code.charAt(3).toLowerCase();
      for (var zone = 1; zone < ZONES.length; zone++) if (ZONES[zone].indexOf(letter) >= 0) return zone;
      return 0;
    }
    if (code.slice(0, 5) === "Digit" || /^Numpad[0-9]+$/.test(code)) return 11;
    if (code.slice(0, 6) === "Numpad") return 12;
    if (/^F[0-9]+$/.test(code)) return 15;
    return Object.prototype.hasOwnProperty.call(CODES, code) ? CODES[code] : 0;
  }
  /* </keyclass> */

  var buffer = [], seq = 0, dropped = 0, untrusted = 0, timer = 0;
  var ws = null, failures = 0, backoff = 500, leaving = false, stopped = false;

  function round(t) {
    return Math.round(t * 10) / 10;
  }
  // event.timeStamp is the input's own time (on X: the server's event time), not when our handler ran.
  function stamp(e) {
    var t = e.timeStamp;
    if (!(t > 0)) return round(perf.now());
    return round(t > 1e12 ? t - ORIGIN : t); // very old engines used epoch ms
  }
  function push(ev) {
    if (buffer.length >= MAX_BUFFER) {
      buffer.shift();
      dropped++;
    }
    buffer.push(ev);
    if (buffer.length >= FLUSH_EVENTS) flush();
    else if (!timer) timer = setTimeout(flush, FLUSH_MS);
  }
  function mark(stimulus, t, value) {
    push(value ? [7, round(t), stimulus, value] : [7, round(t), stimulus]);
  }
  function nextMessage() {
    var msg = { v: 1, s: ++seq, o: ORIGIN, e: buffer.splice(0, MAX_PER_MESSAGE) };
    if (dropped) msg.d = dropped;
    if (untrusted) msg.u = untrusted;
    dropped = untrusted = 0;
    return msg;
  }
  function flush() {
    if (timer) clearTimeout(timer);
    timer = 0;
    if (ws && ws.readyState === 1 && !leaving) {
      while (buffer.length) ws.send(JSON.stringify(nextMessage()));
    } else if (!WS || failures >= 3 || leaving) {
      sendBeacons();
    } // else: keep buffering (bounded) until the socket opens; onopen flushes
  }
  function sendBeacons() {
    while (buffer.length && navigator.sendBeacon) {
      var msg = nextMessage();
      if (!navigator.sendBeacon(BEACON_URL, JSON.stringify(msg))) {
        // over the beacon quota: put it back unsent, sequence number included
        buffer = msg.e.concat(buffer);
        dropped += msg.d || 0;
        untrusted += msg.u || 0;
        seq--;
        return;
      }
    }
  }

  function connect() {
    if (!WS || leaving || stopped || ws) return;
    var sock;
    try {
      sock = new WS(WS_URL);
    } catch (err) {
      failures++;
      return retry();
    }
    ws = sock;
    sock.onopen = function () {
      failures = 0;
      backoff = 500;
      flush();
    };
    sock.onmessage = function (m) {
      var data;
      try {
        data = JSON.parse(m.data);
      } catch (err) {
        return;
      }
      // application RTT: answer at once, before anything else
      if (data && typeof data.ping === "number") sock.send(JSON.stringify({ pong: data.ping, t: perf.now() }));
    };
    sock.onclose = function (e) {
      if (ws === sock) ws = null;
      if (e.code === 1008 || (e.code >= 4400 && e.code < 4500)) stopped = true; // refused: do not hammer
      if (!leaving && !stopped) {
        failures++;
        retry();
      }
    };
  }
  function retry() {
    setTimeout(connect, backoff * (0.75 + Math.random() / 2));
    backoff = Math.min(backoff * 2, 30000);
    if (buffer.length && failures >= 3) flush();
  }

  function on(target, type, handler, capture) {
    target.addEventListener(type, handler, { capture: !!capture, passive: true });
  }

  // Keys: class and time only. Inside secret fields only the class of Enter/Backspace/Tab survives.
  // e.target is retargeted to the shadow host for fields inside web components: the key's real target is the first
  // node of its composed path. A closed shadow root hides even that, so a custom element that is itself the target
  // may hold a password field: it is treated as one. A field counts as secret by its type, or by an autocomplete
  // hint a "show password" toggle leaves in place (current-password, new-password, one-time-code).
  function secret(e) {
    var path = e.composedPath ? e.composedPath() : [];
    var el = path.length ? path[0] : e.target;
    if (!el || !el.tagName) return false;
    if (el.type === "password") return true;
    if (/password|one-time-code/.test(el.autocomplete || "")) return true;
    return el.tagName.indexOf("-") > 0 && !el.shadowRoot;
  }
  function onKey(kind) {
    return function (e) {
      if (!e.isTrusted) return void untrusted++;
      if (e.repeat) return; // autorepeat is the machine, not the person
      var cls = keyClass(e.code || "");
      if (cls !== 8 && cls !== 9 && cls !== 14 && secret(e)) cls = 0;
      push([kind, stamp(e), cls]);
    };
  }
  on(window, "keydown", onKey(1), true);
  on(window, "keyup", onKey(2), true);

  var lastMove = -1e9, lastWheel = -1e9, wheelDelta = 0;
  function xy(e) {
    return [Math.round(e.clientX), Math.round(e.clientY)];
  }
  on(window, "pointermove", function (e) {
    if (!e.isTrusted) return void untrusted++;
    var t = stamp(e);
    if (t - lastMove < MOVE_MS) return; // pointer moves are capped at ~66/s: shape, not volume
    lastMove = t;
    push([3, t].concat(xy(e)));
  }, true);
  function onButton(kind) {
    return function (e) {
      if (!e.isTrusted) return void untrusted++;
      var b = e.button; // same bit order as MouseEvent.buttons
      push([kind, stamp(e)].concat(xy(e), [b === 1 ? 4 : b === 2 ? 2 : b >= 0 && b < 8 ? 1 << b : 0]));
    };
  }
  on(window, "pointerdown", onButton(4), true);
  on(window, "pointerup", onButton(5), true);
  on(window, "wheel", function (e) {
    if (!e.isTrusted) return void untrusted++;
    var t = stamp(e);
    wheelDelta += e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 800 : 1);
    if (t - lastWheel < MOVE_MS) return;
    lastWheel = t;
    push([6, t].concat(xy(e), [Math.round(wheelDelta)]));
    wheelDelta = 0;
  }, true);

  on(window, "focus", function (e) {
    if (e.target === window) push([10, stamp(e), 1]);
  });
  on(window, "blur", function (e) {
    if (e.target === window) push([10, stamp(e), 2]);
  });
  on(doc, "visibilitychange", function (e) {
    var hidden = doc.visibilityState === "hidden";
    push([10, stamp(e), hidden ? 4 : 3]);
    if (hidden) flush();
  });

  // Stimuli: things that appear on screen and that a person reacts to.
  // PAGE_READY value: 0 = document load, 1 = same-document (SPA) navigation, 2 = restored from the back/forward cache.
  var observer = typeof MutationObserver === "function" ? new MutationObserver(onMutations) : null;
  var mutationPending = false;
  var FIELDS = "input,select,textarea,button,[contenteditable]";

  function nearFocus(node) {
    var focused = doc.activeElement;
    if (!focused || focused === doc.body || focused.contains(node)) return false;
    var area = focused.closest && focused.closest("form");
    if (!area) {
      area = focused;
      for (var i = 0; i < 3 && area.parentElement; i++) area = area.parentElement;
    }
    return area.contains(node);
  }
  function hasField(node) {
    return node.nodeType === 1 && (node.matches(FIELDS) || !!node.querySelector(FIELDS));
  }
  function onMutations(records) {
    if (mutationPending) return;
    for (var i = 0; i < records.length && i < 50; i++) {
      var rec = records[i], stimulus = 0;
      if (rec.type === "attributes") {
        if (rec.attributeName === "open" && rec.target.tagName === "DIALOG" && rec.target.open) stimulus = 4;
        else if (rec.attributeName === "hidden" && !rec.target.hidden && (hasField(rec.target) || nearFocus(rec.target)))
          stimulus = 5;
      } else {
        for (var j = 0; j < rec.addedNodes.length && j < 20 && !stimulus; j++) {
          var node = rec.addedNodes[j];
          if (node.nodeType === 1 && (hasField(node) || nearFocus(node))) stimulus = 5;
        }
      }
      if (stimulus) {
        mutationPending = true;
        // the next frame is when it can first be seen
        requestAnimationFrame(function (t) {
          mutationPending = false;
          mark(stimulus, t);
        });
        return;
      }
    }
  }
  function pageReady(t) {
    mark(1, t);
    if (observer)
      observer.observe(doc.documentElement, {
        childList: true, subtree: true, attributes: true, attributeFilter: ["open", "hidden"]
      });
  }
  if (doc.readyState === "loading") {
    doc.addEventListener("DOMContentLoaded", function (e) {
      pageReady(stamp(e));
    });
  } else {
    var nav = perf.getEntriesByType && perf.getEntriesByType("navigation")[0];
    pageReady((nav && nav.domContentLoadedEventEnd) || perf.now());
  }

  function softNavigation() {
    requestAnimationFrame(function (t) {
      mark(1, t, 1);
    });
  }
  var pushState = history.pushState;
  history.pushState = function () {
    var result = pushState.apply(this, arguments);
    softNavigation();
    return result;
  };
  on(window, "popstate", softNavigation);

  ["alert", "confirm", "prompt"].forEach(function (name) {
    var original = window[name];
    if (typeof original !== "function") return;
    window[name] = function () {
      mark(4, perf.now());
      flush(); // the dialog blocks this thread: send the mark first
      return original.apply(this, arguments);
    };
  });

  // a submission may navigate away: send what was typed before the request leaves
  on(window, "submit", flush, true);

  on(window, "pagehide", function () {
    leaving = true;
    flush(); // beacons: they outlive the page
    if (ws) ws.close(1000);
  });
  on(window, "pageshow", function (e) {
    if (!e.persisted) return;
    leaving = false;
    mark(1, stamp(e), 2);
    connect();
  });

  connect();
})();
