"""The approval page: ``GET /api/approvals`` lists the rotations waiting for a decision, with an
approve and a reject form each; ``POST /api/approvals`` decides and redirects back with a message.

Plain server-rendered HTML (``html.escape`` on everything that comes from a vault, a tag, the
task hub or the request), no script at all. The route is anonymous because a browser carries no
function key: App Service authentication is what protects it in Azure (its principal headers
are trusted only when the platform says it is on, ``starters/principal.py``), and the page
refuses anyone it did not sign in. Decisions go through ``starters/decisions.py``, exactly as the
API's do.

Cross-site request forgery: every form carries a token that must equal the one in a
``__Host-`` cookie (``Secure; HttpOnly; SameSite=Strict; Path=/``), a double-submit that needs no
server-side state or key, so it works on every instance of the app. Another site can neither read
the cookie nor (``__Host-``, ``SameSite=Strict``) make the browser send or overwrite it.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from rotation.settings import Settings, current_settings
from starters.decisions import (
    Refused,
    decide,
    decider_for,
    is_rotation_id,
    rotation_input,
    waiting_for_decision,
)
from starters.principal import Principal, trusted_principal

logger = logging.getLogger(__name__)

bp = df.Blueprint()

CSRF_COOKIE = "__Host-approvals-csrf"
CSRF_FIELD = "csrf"
MAX_FORM = 8 * 1024
SIGN_IN = "/.auth/login/aad"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")

# What the page says after a POST: fixed texts chosen by a code in the redirect, so nothing a
# link could carry is ever shown but an escaped rotation id.
MESSAGES = {
    "approved": ("ok", "Approved: the rotation continues."),
    "rejected": ("ok", "Rejected: the rotation stops and discards its staged value."),
    "sent": ("ok", "Decision sent; the rotation has not recorded it yet. Reload in a moment."),
    "already-decided": ("error", "Already decided: this rotation took a decision before yours."),
    "timed-out": ("error", "Too late: the approval timed out."),
    "not-waiting": ("error", "This rotation is not waiting for a decision."),
    "not-found": ("error", "There is no such rotation."),
    "reason-required": ("error", "A rejection needs a reason."),
    "reason-too-long": ("error", "The reason is longer than 500 characters."),
    "requester": ("error", "You requested this rotation: another approver must approve it."),
    "not-an-approver": ("error", "You are not in ROTATION_APPROVERS: you may not decide."),
    "bad-form": ("error", "The form was incomplete; nothing was decided."),
    "failed": ("error", "The decision could not be sent; nothing was decided. Try again."),
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
.who { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { text-align: left; padding: .5rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; }
td:nth-child(-n+3), td:nth-child(5) { white-space: nowrap; }
code { font-size: .85em; }
form { display: inline-block; margin: 0 .3rem .3rem 0; }
input[type=text] { width: 14rem; }
button { padding: .3rem .8rem; cursor: pointer; }
button.approve { background: #1a7f37; color: #fff; border: 1px solid #116329; }
button.reject { background: #fff; color: #a40e26; border: 1px solid #a40e26; }
.message { padding: .6rem .8rem; border-radius: 4px; margin: 1rem 0; }
.message.ok { background: #dafbe1; border: 1px solid #1a7f37; }
.message.error { background: #ffebe9; border: 1px solid #a40e26; }
.note { color: #6e4b00; font-size: .9em; }
"""
_HEADERS = {
    # No script, no frames, forms post only here: the page needs nothing else.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Waiting:
    """One rotation waiting for a decision, as the page shows it."""

    rotation_id: str
    vault: str
    secret: str
    target_kind: str
    started_by: str
    requested_by_id: str
    deadline: str


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(status: int, title: str, body: str, *, csrf: str | None = None) -> func.HttpResponse:
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
    headers = dict(_HEADERS)
    if csrf is not None:
        headers["Set-Cookie"] = f"{CSRF_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=Strict"
    return func.HttpResponse(
        document, status_code=status, mimetype="text/html", charset="utf-8", headers=headers
    )


def _refusal(settings: Settings, req_path: str) -> func.HttpResponse:
    """401 when App Service authentication is on but nobody signed in; 403 when it is off."""
    if settings.app_service_auth_enabled:
        link = f"{SIGN_IN}?post_login_redirect_uri={urllib.parse.quote(req_path)}"
        return _page(
            401,
            "Sign in to decide approvals",
            "<h1>Sign in to decide approvals</h1><p>This page needs a principal signed in by App "
            f'Service authentication. <a href="{_e(link)}">Sign in</a></p>',
        )
    return _page(
        403,
        "Approvals are not available",
        "<h1>Approvals are not available here</h1><p>App Service authentication is off for this "
        "app, so nobody can be signed in: the approval page refuses every request. Turn App Service "
        "authentication on (see the README).</p>",
    )


def _cookie(req: func.HttpRequest, name: str) -> str | None:
    try:
        jar = SimpleCookie(req.headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _valid_token(token: str | None) -> bool:
    return token is not None and _TOKEN.fullmatch(token) is not None


async def _waiting(client: df.DurableOrchestrationClient) -> list[Waiting]:
    running = await client.get_status_by(
        runtime_status=[OrchestrationRuntimeStatus.Running], instance_id_prefix="rotate_"
    )
    found: list[Waiting] = []
    for listed in running:
        if not waiting_for_decision(listed) or not listed.instance_id:
            continue
        # The list may leave the input out; the requester is in it.
        status = await client.get_status(listed.instance_id, show_input=True)
        if not status or not waiting_for_decision(status):
            continue
        custom = status.custom_status if isinstance(status.custom_status, dict) else {}
        request = rotation_input(status)
        trigger = str(request.get("trigger") or "unknown")
        requested_by = str(request.get("requested_by") or "")
        found.append(
            Waiting(
                rotation_id=listed.instance_id,
                vault=str(custom.get("vault", "")),
                secret=str(custom.get("secret", "")),
                target_kind=str(custom.get("targetKind", "")),
                started_by=f"{requested_by} ({trigger})" if requested_by else trigger,
                requested_by_id=str(request.get("requested_by_id") or "").lower(),
                deadline=_utc(str(custom.get("awaitingDecisionUntil", ""))),
            )
        )
    return sorted(found, key=lambda w: (w.deadline, w.rotation_id))


def _utc(timestamp: str) -> str:
    """``2026-12-06 08:55 UTC`` for an ISO 8601 time; the text itself if it is not one."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _forms(rotation: Waiting, csrf: str, principal: Principal) -> str:
    hidden = (
        f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf)}">'
        f'<input type="hidden" name="id" value="{_e(rotation.rotation_id)}">'
    )
    note = ""
    if rotation.requested_by_id and rotation.requested_by_id == principal.id:
        note = '<div class="note">You requested this rotation: another approver must approve it.</div>'
    return (
        f'<form method="post" class="approve-form">{hidden}'
        '<input type="hidden" name="decision" value="approve">'
        '<button type="submit" class="approve">Approve</button></form>'
        f'<form method="post" class="reject-form">{hidden}'
        '<input type="hidden" name="decision" value="reject">'
        '<input type="text" name="reason" required maxlength="500" placeholder="Reason (required)" '
        'aria-label="Reason for rejecting">'
        f'<button type="submit" class="reject">Reject</button></form>{note}'
    )


def _rows(rotations: Iterable[Waiting], csrf: str, principal: Principal) -> str:
    return "".join(
        f'<tr data-rotation-id="{_e(r.rotation_id)}"><td>{_e(r.vault)}</td><td>{_e(r.secret)}</td>'
        f"<td>{_e(r.target_kind)}</td><td>{_e(r.started_by)}</td><td>{_e(r.deadline)}</td>"
        f"<td>{_forms(r, csrf, principal)}</td></tr>"
        for r in rotations
    )


def _message(req: func.HttpRequest) -> str:
    code = req.params.get("result", "")
    if code not in MESSAGES:
        return ""
    kind, text = MESSAGES[code]
    rotation_id = req.params.get("id", "")
    about = f" <code>{_e(rotation_id)}</code>" if is_rotation_id(rotation_id) else ""
    return f'<div class="message {kind}" role="status" data-result="{_e(code)}">{_e(text)}{about}</div>'


@bp.route(route="approvals", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def approvals_page(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    settings = current_settings()
    path = urllib.parse.urlsplit(req.url).path
    principal = trusted_principal(req.headers, settings)
    if principal is None:
        return _refusal(settings, path)
    existing = _cookie(req, CSRF_COOKIE)
    csrf = existing if existing and _valid_token(existing) else secrets.token_urlsafe(32)
    rotations = await _waiting(client)
    may_decide = not settings.approvers or principal.is_one_of(settings.approvers)
    listing = (
        "<table><thead><tr><th>Vault</th><th>Secret</th><th>Target</th><th>Started by</th>"
        f"<th>Decide before</th><th>Decision</th></tr></thead><tbody>{_rows(rotations, csrf, principal)}"
        "</tbody></table>"
        if rotations
        else '<p class="empty">No rotation is waiting for a decision.</p>'
    )
    note = (
        ""
        if may_decide
        else '<p class="note">You are not in ROTATION_APPROVERS: you can see the rotations, not decide.</p>'
    )
    body = (
        "<h1>Rotations waiting for a decision</h1>"
        f'<p class="who">Signed in as {_e(principal.name)} (<code>{_e(principal.id)}</code>)</p>'
        f"{_message(req)}{note}{listing}"
    )
    return _page(200, "Approvals", body, csrf=csrf)


@bp.route(route="approvals", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def approvals_decide(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    settings = current_settings()
    path = urllib.parse.urlsplit(req.url).path
    raw = req.get_body() or b""
    form = (
        urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
        if len(raw) <= MAX_FORM
        else {}
    )

    def field(name: str) -> str:
        return (form.get(name) or [""])[0].strip()

    cookie = _cookie(req, CSRF_COOKIE)
    token = field(CSRF_FIELD)
    # Both checked for shape first: compare_digest takes ASCII text only.
    if not (_valid_token(cookie) and _valid_token(token) and secrets.compare_digest(cookie or "", token)):
        return _page(
            403,
            "Refused",
            "<h1>Refused</h1><p>The form's anti-forgery token is missing or does not match. Nothing "
            f'was decided. <a href="{_e(path)}">Back to the approvals</a></p>',
        )
    principal = trusted_principal(req.headers, settings)
    if principal is None:
        return _refusal(settings, path)
    rotation_id, verb = field("id"), field("decision")
    code = "bad-form"
    if is_rotation_id(rotation_id) and verb in ("approve", "reject"):
        try:
            decided = await decide(
                client,
                rotation_id,
                approved=verb == "approve",
                decider=decider_for(principal, "", settings),
                reason=field("reason"),
            )
            code = ("approved" if verb == "approve" else "rejected") if decided.recorded else "sent"
        except Refused as refused:
            code = refused.code if refused.code in MESSAGES else "failed"
        except Exception:
            logger.exception("approval page: the decision on %s could not be sent", rotation_id)
            code = "failed"
    query = urllib.parse.urlencode(
        {"result": code, **({"id": rotation_id} if is_rotation_id(rotation_id) else {})}
    )
    return func.HttpResponse(status_code=303, headers={"Location": f"{path}?{query}", **_HEADERS})
