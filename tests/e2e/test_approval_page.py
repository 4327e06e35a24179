"""The approval page (``/api/approvals``) in headless Chromium, driven by Playwright, as an
approver uses it: signed in through the local host's App Service authentication, the page lists
the rotations waiting for a decision; approve and reject forms decide them; without a principal,
without the anti-forgery token, or twice, nothing is decided.

Chromium is Debian's (``/usr/bin/chromium``, ``scripts/bootstrap.sh``), launched by path: no
browser is downloaded. ``UPDATE_APPROVAL_SCREENSHOT=1`` also writes ``docs/approval-page.png``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from e2e_helpers import (
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    enabled_pending,
    event_grid_event,
    post_events,
    quiet_expiry_scan,
    seed,
    versions_of,
)

from local import principals
from local.principals import APPROVER, ODD_NAME
from local.scenario import hub_call, wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "approval-page.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (scripts/bootstrap.sh installs it)"
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _only_our_rotations(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: test machines and containers often run as root, where Chromium's sandbox
        # refuses to start; the pages it opens here are the hub's own.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: playwright_api.Browser, stack: LocalStack) -> Iterator[playwright_api.Page]:
    """A fresh browser context signed in as the approver."""
    context = browser.new_context(viewport={"width": 1280, "height": 640})
    opened = context.new_page()
    sign_in(opened, stack, APPROVER)
    yield opened
    context.close()


def sign_in(page: playwright_api.Page, stack: LocalStack, principal: str) -> None:
    page.goto(
        f"{stack.hub_url}/.auth/login/local?principal={principal}&post_login_redirect_uri=/api/approvals"
    )
    playwright_api.expect(page.locator("h1")).to_have_text("Rotations waiting for a decision")


def waiting_rotation(stack: LocalStack, vault: str = "spoke1-kv") -> tuple[Seeded, str]:
    """An approval-required secret whose rotation Event Grid started, waiting for a decision."""
    seeded = seed(stack, vault, tags={metadata.APPROVAL: "required"})
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    wait_for(stack, rotation_id, step="approval", until=())
    return seeded, rotation_id


def requested_rotation(stack: LocalStack, principal: str) -> tuple[Seeded, str]:
    """The same, started through the API by a signed-in ``principal``."""
    seeded = seed(stack, "spoke2-kv", tags={metadata.APPROVAL: "required"})
    code, body = hub_call(
        stack,
        "POST",
        "/api/rotations",
        {"vault": seeded.vault, "secret": seeded.name},
        headers=stack.signed_in(principal),
    )
    assert code == 202, body
    wait_for(stack, str(body["id"]), step="approval", until=())
    return seeded, str(body["id"])


def row(page: playwright_api.Page, rotation_id: str) -> playwright_api.Locator:
    return page.locator(f'tr[data-rotation-id="{rotation_id}"]')


def message(page: playwright_api.Page) -> playwright_api.Locator:
    return page.locator(".message")


def test_the_page_lists_the_waiting_rotations_escaped(stack: LocalStack, page: playwright_api.Page) -> None:
    by_event, event_id = waiting_rotation(stack)
    by_person, person_id = requested_rotation(stack, ODD_NAME)
    page.reload()

    listed = row(page, event_id)
    playwright_api.expect(listed).to_be_visible()
    cells = listed.locator("td")
    deadline = wait_for(stack, event_id, step="approval", until=())["status"]["awaitingDecisionUntil"]
    texts = [cells.nth(i).inner_text() for i in range(5)]
    assert texts[:3] == [by_event.vault, by_event.name, "postgresql-login"]
    # Started by the Event Grid event (its id), the deadline in UTC to the minute.
    assert texts[3].startswith("event ")
    assert texts[3].endswith(" (SecretNearExpiry)")
    assert texts[4] == datetime.fromisoformat(deadline).strftime("%Y-%m-%d %H:%M UTC")
    # Who started it, shown as text: the name's HTML became no element.
    started_by = row(page, person_id).locator("td").nth(3)
    assert started_by.inner_text() == f"{principals.name(ODD_NAME)} (manual)"
    assert page.locator("tr script, tr b").count() == 0
    assert row(page, person_id).locator("td").nth(1).inner_text() == by_person.name
    assert page.locator(".who").inner_text() == (
        f"Signed in as {principals.name(APPROVER)} ({principals.object_id(APPROVER)})"
    )

    shot = page.screenshot(full_page=True)
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("UPDATE_APPROVAL_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(shot)

    # Tidy up: both rejected through the page.
    for rotation_id in (event_id, person_id):
        row(page, rotation_id).locator("input[name=reason]").fill("test over")
        row(page, rotation_id).locator("button.reject").click()
        playwright_api.expect(message(page)).to_have_attribute("data-result", "rejected")
        assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"


def test_approve_completes_the_rotation(stack: LocalStack, page: playwright_api.Page) -> None:
    seeded, rotation_id = waiting_rotation(stack)
    old = current_password(stack, seeded)
    page.reload()

    row(page, rotation_id).locator("button.approve").click()

    playwright_api.expect(message(page)).to_have_attribute("data-result", "approved")
    assert message(page).inner_text() == f"Approved: the rotation continues. {rotation_id}"
    playwright_api.expect(row(page, rotation_id)).to_have_count(0)
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    decision = done["output"]["decision"]
    assert (decision["approver"], decision["approver_id"], decision["verified"]) == (
        principals.name(APPROVER),
        principals.object_id(APPROVER),
        True,
    )
    # The vault holds a new version, and it logs in; the old password no longer does.
    assert len(versions_of(stack, seeded)) == 2
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert not stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_reject_with_a_reason_changes_nothing(stack: LocalStack, page: playwright_api.Page) -> None:
    seeded, rotation_id = waiting_rotation(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    page.reload()
    reject = row(page, rotation_id).locator("form.reject-form")

    # The browser will not send a rejection without a reason (the field is required).
    reject.locator("button").click()
    assert page.locator(".message").count() == 0
    reject.locator("input[name=reason]").fill("quarter-end freeze")
    reject.locator("button").click()

    playwright_api.expect(message(page)).to_have_attribute("data-result", "rejected")
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rejected"
    assert done["output"]["decision"]["reason"] == "quarter-end freeze"
    assert done["output"]["decision"]["approver"] == principals.name(APPROVER)
    assert_untouched(stack, seeded, password)
    assert enabled_pending(stack, seeded) == []


def test_without_a_principal_the_page_refuses(stack: LocalStack, browser: playwright_api.Browser) -> None:
    _, rotation_id = waiting_rotation(stack)
    context = browser.new_context()
    try:
        anonymous = context.new_page()
        response = anonymous.goto(f"{stack.hub_url}/api/approvals")
        assert response is not None
        assert response.status == 401
        playwright_api.expect(anonymous.locator("h1")).to_have_text("Sign in to decide approvals")
        assert anonymous.locator("table").count() == 0
        # A form posted without a session is refused too (here with a token it made up itself).
        answer = context.request.post(
            f"{stack.hub_url}/api/approvals",
            form={"csrf": "x" * 43, "id": rotation_id, "decision": "approve"},
            headers={"Cookie": "__Host-approvals-csrf=" + "x" * 43},
            max_redirects=0,
        )
        assert answer.status == 401
    finally:
        context.close()
    still = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in still["status"]
    reject_by_api(stack, rotation_id)


def test_a_post_without_the_anti_forgery_token_is_refused(
    stack: LocalStack, page: playwright_api.Page
) -> None:
    seeded, rotation_id = waiting_rotation(stack)
    password = current_password(stack, seeded)
    page.reload()
    token = row(page, rotation_id).locator("form.approve-form input[name=csrf]").get_attribute("value")
    assert token

    # The same session (its cookies go along), as a forged cross-site form would post: no token,
    # a wrong one, and the right one in the form without the cookie.
    attempts = [
        ({"id": rotation_id, "decision": "approve"}, {}),
        ({"csrf": "y" * len(token), "id": rotation_id, "decision": "approve"}, {}),
        ({"csrf": "é" * len(token), "id": rotation_id, "decision": "approve"}, {}),
        (
            {"csrf": token, "id": rotation_id, "decision": "approve"},
            {"Cookie": stack.signed_in(APPROVER)["Cookie"]},
        ),
    ]
    for form, headers in attempts:
        answer = page.request.post(
            f"{stack.hub_url}/api/approvals", form=form, headers=headers, max_redirects=0
        )
        assert answer.status == 403, form
        assert "anti-forgery token is missing or does not match" in answer.text()

    still = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in still["status"]
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.logs_in(seeded, password)
    # With the token, the same post decides.
    answer = page.request.post(
        f"{stack.hub_url}/api/approvals",
        form={"csrf": token, "id": rotation_id, "decision": "reject", "reason": "token test"},
        max_redirects=0,
    )
    assert answer.status == 303
    assert answer.headers["location"] == f"/api/approvals?result=rejected&id={rotation_id}"
    assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"


def test_a_second_click_says_already_decided(
    stack: LocalStack, browser: playwright_api.Browser, page: playwright_api.Page
) -> None:
    seeded, rotation_id = waiting_rotation(stack)
    page.reload()
    # A second tab of the same session still shows the rotation after the first decided it.
    stale = page.context.new_page()
    stale.goto(f"{stack.hub_url}/api/approvals")
    playwright_api.expect(row(stale, rotation_id)).to_be_visible()

    row(page, rotation_id).locator("button.approve").click()
    playwright_api.expect(message(page)).to_have_attribute("data-result", "approved")
    row(stale, rotation_id).locator("input[name=reason]").fill("changed my mind")
    row(stale, rotation_id).locator("button.reject").click()

    playwright_api.expect(message(stale)).to_have_attribute("data-result", "already-decided")
    assert message(stale).inner_text().startswith("Already decided")
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    assert done["output"]["decision"]["approved"] is True
    assert_consistent(stack, seeded)


def reject_by_api(stack: LocalStack, rotation_id: str) -> None:
    code, body = hub_call(
        stack,
        "POST",
        f"/api/rotations/{rotation_id}/reject",
        {"reason": "test over"},
        headers=stack.signed_in(),
    )
    assert code == 200, body
