"""The few pages ztgate shows people. Plain HTML, no scripts, so no CSP exceptions are needed."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1d2430;margin:0}
main{max-width:26rem;margin:8vh auto;background:#fff;border-radius:10px;padding:2rem 2.2rem;
box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin:.8rem 0 .2rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #c4c9d2;
border-radius:6px;font-size:1rem}button,.button{margin-top:1.2rem;padding:.6rem 1.2rem;border:0;border-radius:6px;
background:#2456d6;color:#fff;font-size:1rem;cursor:pointer;text-decoration:none;display:inline-block}
.error{background:#fde8e8;color:#9b1c1c;padding:.6rem .8rem;border-radius:6px}
.muted{color:#5b6575;font-size:.9rem}.brand{font-weight:700;color:#2456d6;letter-spacing:.04em}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><div class=brand>ztgate</div><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def login(*, next_url: str, csrf: str, error: str = "", providers: list[tuple[str, str]] = (),
          directory: bool = True) -> str:
    parts = []
    if error:
        parts.append(f"<p class=error role=alert>{escape(error)}</p>")
    if directory:
        parts.append(
            "<form method=post action='/.ztgate/login' autocomplete=off>"
            f"<input type=hidden name=csrf value='{escape(csrf)}'>"
            f"<input type=hidden name=next value='{escape(next_url)}'>"
            "<label for=username>Username</label><input id=username name=username type=text required autofocus>"
            "<label for=password>Password</label><input id=password name=password type=password required>"
            "<label for=otp>One-time code</label>"
            "<input id=otp name=otp type=text inputmode=numeric pattern='[0-9]{6}' maxlength=6 required>"
            "<button type=submit>Sign in</button></form>"
        )
    for name, label in providers:
        parts.append(
            f"<p><a class=button href='/.ztgate/oidc/{quote(name, safe='')}/start?next={quote(next_url, safe='')}'>"
            f"Sign in with {escape(label)}</a></p>"
        )
    return page("Sign in", "".join(parts))


def mfa(*, next_url: str, csrf: str, reason: str, error: str = "", webauthn: bool = False) -> str:
    body = [
        "<p>To continue, confirm it is you.</p>",
        f"<p class=muted>{escape(reason)}</p>" if reason else "",
        f"<p class=error role=alert>{escape(error)}</p>" if error else "",
        "<form method=post action='/.ztgate/mfa' autocomplete=off>",
        f"<input type=hidden name=csrf value='{escape(csrf)}'><input type=hidden name=next value='{escape(next_url)}'>",
        "<label for=otp>One-time code from your authenticator</label>",
        "<input id=otp name=otp type=text inputmode=numeric pattern='[0-9]{6}' maxlength=6 required autofocus>",
        "<button type=submit>Verify</button></form>",
    ]
    if webauthn:
        body.append("<p class=muted>Or use your <a href='/.ztgate/mfa/webauthn?next="
                    f"{escape(quote(next_url, safe=''))}'>security key</a>.</p>")
    return page("Verify it's you", "".join(body))


def terminated(reason: str = "") -> str:
    return page(
        "Session ended",
        "<p>Your session was ended by your organisation's access policy.</p>"
        + (f"<p class=muted>{escape(reason)}</p>" if reason else "")
        + "<p>If you think this is a mistake, contact your security team.</p>"
        "<a class=button href='/.ztgate/login'>Sign in again</a>",
    )


def forbidden(reason: str) -> str:
    return page("Not allowed right now",
                f"<p>This action is restricted for your session.</p><p class=muted>{escape(reason)}</p>")


def locked(until_text: str) -> str:
    return page("Account locked", f"<p>Sign-in is locked until {escape(until_text)}.</p>")


def message(title: str, text: str) -> str:
    return page(title, f"<p>{escape(text)}</p>")
