"""HTML for the demo intranet app: plain server-rendered pages, no external assets. Every value is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from gateway.demo.assertion import Identity

APP_NAME = "Acme Intranet"
# Inline, so browsers do not ask for /favicon.ico (and the package needs no image file).
FAVICON = (
    '<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27 viewBox=%270 0 16 16%27%3E'
    '%3Crect width=%2716%27 height=%2716%27 rx=%273%27 fill=%27%23243b53%27/%3E%3C/svg%3E">'
)
NAV = (
    ("/", "Home"),
    ("/form", "Expenses"),
    ("/profile", "Profile"),
    ("/terminal", "Terminal"),
    ("/csp", "CSP check"),
    ("/api/whoami", "API"),
)


def layout(title: str, body: str, *, identity: Identity | None, active: str = "", scripts: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=\"active\"" if href == active else ""}>{escape(label)}</a>' for href, label in NAV
    )
    user = (
        f'<span class="user" title="{escape(identity.sub)}">{escape(identity.display_name)}'
        f' <span class="state state-{escape(identity.ztgate_state or "unknown")}">'
        f"{escape(identity.ztgate_state or 'unknown')}</span></span>"
        if identity
        else ""
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · {APP_NAME}</title>"
        f'<link rel="stylesheet" href="/static/app.css">{FAVICON}</head>\n'
        f'<body><header class="topbar"><a class="brand" href="/">{APP_NAME}</a><nav>{nav}</nav>{user}</header>\n'
        f"<main>\n{body}\n</main>\n"
        '<footer>Internal demo application. Reachable only through the ztgate gateway, which signs every request '
        "with an X-Ztgate-Assertion.</footer>\n"
        f"{scripts}</body></html>\n"
    )


def identity_table(identity: Identity) -> str:
    rows = [
        ("Subject (sub)", identity.sub),
        ("Email", identity.email),
        ("Name", identity.name),
        ("Groups", ", ".join(identity.groups)),
        ("Authentication level (acr)", identity.acr),
        ("Methods (amr)", ", ".join(identity.amr)),
        ("ztgate session state", identity.ztgate_state),
    ]
    cells = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td data-claim="{escape(k)}">{escape(v) or "<em>-</em>"}</td></tr>'
        for k, v in rows
    )
    return f'<table class="claims" id="identity">{cells}</table>'


def home_page(identity: Identity) -> str:
    links = [
        ("/form", "Expense claim", "a multi-page form flow (POST, result page)"),
        ("/profile", "My profile", "a single-page app: history.pushState views, JSON PUT via fetch"),
        ("/terminal", "Web terminal", "a WebSocket terminal with a pretend shell"),
        ("/csp", "CSP check", "a page with a strict nonce-based Content-Security-Policy"),
        ("/api/whoami", "/api/whoami", "the verified assertion claims as JSON"),
        ("/api/items", "/api/items", "a small JSON API (GET, POST, DELETE)"),
        ("/download?size=1048576", "Download 1 MiB", "streamed deterministic bytes"),
        ("/slow?ms=1500", "Slow page", "answers after 1.5 s"),
        ("/big.html?kb=512", "Big page", "512 KB of HTML streamed in chunks"),
    ]
    items = "".join(
        f'<li><a href="{escape(href)}">{escape(label)}</a> <span class="muted">{escape(text)}</span></li>'
        for href, label, text in links
    )
    body = (
        f"<h1>Welcome, {escape(identity.display_name)}</h1>"
        "<p>The gateway vouches for the following identity:</p>"
        f"{identity_table(identity)}"
        f'<h2>Applications</h2><ul class="links">{items}</ul>'
    )
    return layout("Home", body, identity=identity, active="/")


EXPENSE_FIELDS = ("name", "cost_center", "amount", "description")


def expense_form_page(
    identity: Identity, *, nonce: str, values: Mapping[str, str] | None = None, errors: Sequence[str] = ()
) -> str:
    values = values or {}
    value = {f: escape(values.get(f, ""), quote=True) for f in EXPENSE_FIELDS}
    error_box = (
        '<div class="errors" role="alert"><strong>Please fix the following:</strong><ul>'
        + "".join(f"<li>{escape(e)}</li>" for e in errors)
        + "</ul></div>"
        if errors
        else ""
    )
    body = f"""<h1>New expense claim</h1>
{error_box}
<form method="post" action="/form" id="expense-form" class="card" autocomplete="off">
  <label for="name">Your name</label>
  <input id="name" name="name" type="text" maxlength="100" required value="{value['name']}">
  <label for="cost_center">Cost centre</label>
  <input id="cost_center" name="cost_center" type="text" maxlength="20" placeholder="e.g. CC-4100"
         value="{value['cost_center']}">
  <label for="amount">Amount (EUR)</label>
  <input id="amount" name="amount" type="text" inputmode="decimal" maxlength="12" required
         placeholder="123.45" value="{value['amount']}">
  <label for="description">Description</label>
  <textarea id="description" name="description" rows="5" maxlength="2000">{value['description']}</textarea>
  <label for="approval_code">Manager approval code</label>
  <input id="approval_code" name="approval_code" type="password" maxlength="32" required autocomplete="off">
  <fieldset id="lines" class="lines"><legend>Line items (Enter checks a line and opens the next)</legend>
    <input class="line" id="line-0" type="text" maxlength="300" autocomplete="off" spellcheck="false"
           aria-label="line item 1" data-current>
  </fieldset>
  <button type="submit" id="submit">Submit claim</button>
</form>"""
    # A small script so the form page carries a nonce'd script like a real app would (character counter).
    script = (
        f'<script nonce="{nonce}">'
        "(() => { const d = document.getElementById('description');"
        " const c = document.createElement('div'); c.className = 'muted'; c.id = 'description-count';"
        " const upd = () => { c.textContent = d.value.length + ' / 2000 characters'; };"
        " d.after(c); d.addEventListener('input', upd); upd(); })();</script>\n"
        # Line items: Enter "checks" the line (a server-like pause of 0.4-0.9 s) and then a new, focused field
        # appears. The appearing field is what a person reacts to, and what the gateway's sensor marks as a stimulus.
        f'<script nonce="{nonce}">'
        "(() => { const box = document.getElementById('lines'); let n = 0;"
        " box.addEventListener('keydown', e => {"
        "  const f = e.target; if (e.key !== 'Enter' || !f.classList.contains('line')) return;"
        "  e.preventDefault(); if (!f.value.trim() || !f.hasAttribute('data-current')) return;"
        "  f.readOnly = true; f.removeAttribute('data-current');"
        "  setTimeout(() => { n += 1; const next = document.createElement('input');"
        "   next.className = 'line'; next.id = 'line-' + n; next.type = 'text'; next.maxLength = 300;"
        "   next.autocomplete = 'off'; next.spellcheck = false; next.setAttribute('aria-label', 'line item ' + (n + 1));"
        "   next.setAttribute('data-current', ''); box.appendChild(next); next.focus(); },"
        "   400 + Math.random() * 500); }); })();</script>\n"
    )
    return layout("New expense claim", body, identity=identity, active="/form", scripts=script)


def expense_result_page(identity: Identity, *, reference: str, values: Mapping[str, str]) -> str:
    rows = [
        ("Reference", reference),
        ("Name", values["name"]),
        ("Cost centre", values.get("cost_center", "") or "-"),
        ("Amount", f"EUR {values['amount']}"),
        ("Description", values.get("description", "") or "-"),
        ("Approval code", "received (not shown)"),
        ("Submitted by", identity.email or identity.sub),
    ]
    cells = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in rows)
    body = (
        f'<h1 id="result">Expense claim {escape(reference)} submitted</h1>'
        f'<table class="claims">{cells}</table>'
        '<p><a href="/form" id="another">Submit another claim</a> · <a href="/">Back to home</a></p>'
    )
    return layout("Claim submitted", body, identity=identity, active="/form")


def profile_page(identity: Identity, *, nonce: str) -> str:
    body = """<h1>My profile</h1>
<nav class="tabs"><a href="/profile" data-view="view" id="tab-view">Overview</a>
<a href="/profile/edit" data-view="edit" id="tab-edit">Edit</a></nav>
<section id="view-view" class="card" hidden>
  <table class="claims"><tr><th>Display name</th><td id="show-display_name"></td></tr>
  <tr><th>Phone</th><td id="show-phone"></td></tr>
  <tr><th>Department</th><td id="show-department"></td></tr>
  <tr><th>About</th><td id="show-bio"></td></tr></table>
  <p><a href="/profile/edit" data-view="edit" id="edit-link">Edit profile</a></p>
</section>
<section id="view-edit" class="card" hidden>
  <form id="profile-form" autocomplete="off">
    <label for="display_name">Display name</label><input id="display_name" name="display_name" maxlength="200">
    <label for="phone">Phone</label><input id="phone" name="phone" maxlength="200">
    <label for="department">Department</label><input id="department" name="department" maxlength="200">
    <label for="bio">About you</label><textarea id="bio" name="bio" rows="4" maxlength="2000"></textarea>
    <button type="submit" id="save">Save</button> <a href="/profile" data-view="view">Cancel</a>
  </form>
</section>
<p id="profile-status" class="muted" role="status"></p>"""
    scripts = f'<script nonce="{nonce}" src="/static/profile.js"></script>\n'
    return layout("My profile", body, identity=identity, active="/profile", scripts=scripts)


def terminal_page(identity: Identity, *, nonce: str) -> str:
    body = """<h1>Web terminal</h1>
<p class="muted">Connected to a demo shell on the jump host. Click the screen and type; try <code>help</code>.
Status: <span id="term-status">connecting</span></p>
<pre id="screen" class="terminal" tabindex="0" aria-label="terminal"></pre>"""
    scripts = f'<script nonce="{nonce}" src="/static/terminal.js"></script>\n'
    return layout("Web terminal", body, identity=identity, active="/terminal", scripts=scripts)


def csp_policy(nonce: str) -> str:
    return f"script-src 'nonce-{nonce}'; object-src 'none'; base-uri 'none'"


def csp_page(identity: Identity, *, nonce: str) -> str:
    body = """<h1>Content-Security-Policy check</h1>
<p>This page is served with a strict nonce-based CSP. Its nonce'd script writes <code>csp-ok</code> below;
the un-nonced script must stay blocked, so the canary keeps saying <code>blocked</code>.</p>
<div class="card">
  <p>Script status: <strong id="csp-status">csp-pending</strong></p>
  <p>Canary: <strong id="csp-canary">blocked</strong></p>
  <label for="csp-text">A note (to type into)</label>
  <input id="csp-text" name="note" type="text" maxlength="200" autocomplete="off">
</div>"""
    scripts = (
        f'<script nonce="{nonce}">document.getElementById("csp-status").textContent = "csp-ok";</script>\n'
        '<script>document.getElementById("csp-canary").textContent = "csp-violated";</script>\n'
    )
    return layout("CSP check", body, identity=identity, active="/csp", scripts=scripts)


def error_page(status: int, title: str, message: str, *, identity: Identity | None = None) -> str:
    body = (
        f'<h1>{status} · {escape(title)}</h1><p class="errors" id="error-message">{escape(message)}</p>'
        '<p><a href="/">Back to home</a></p>'
    )
    return layout(title, body, identity=identity)
