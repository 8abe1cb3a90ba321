"""The admin dashboard in real headless Chromium, against the live stack.

An admin signs in, watches a chart render and a count change live, searches for a
ride's jobs, retries a declined payment with edited data, cancels a delayed job and
bulk-retries the failed jobs of a filter; a viewer sees the same pages without a
single action button.

DASHBOARD_SCREENSHOTS=<folder> saves the pages on the way (dashboard.png, the overview;
dashboard-job.png, dashboard-health.png, dashboard-search.png, dashboard-bulk.png) as the
README shows them: `DASHBOARD_SCREENSHOTS=docs pytest tests/integration/test_dashboard_browser.py -k sqlite`.
"""

import os
import re
import secrets
import shutil
import threading

import pytest
from werkzeug.serving import make_server

from devstack.processes import free_port
from rideshare.auth import issue_token
from rideshare.jobs import add_email_job
from tests.integration.test_payments import post_payment

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def live_server(stack):
    """The stack's app served over real HTTP on loopback."""
    port = free_port()
    server = make_server("127.0.0.1", port, stack.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (scripts/run-tests.sh installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


# Every action button of the dashboard's pages.
ACTIONS = ", ".join(
    f"#{name}"
    for name in ("cancel", "snooze", "retry", "retry-edited", "save-data", "delete", "bulk-retry", "bulk-cancel")
)


SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


def shot(page, name: str) -> None:
    """Save the page as <DASHBOARD_SCREENSHOTS>/<name>.png, when that is set."""
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def token(auth_headers, user_id: str, role: str = "user") -> str:
    return auth_headers(user_id, role)["Authorization"].removeprefix("Bearer ")


def sign_in(page, live_server: str, bearer: str) -> None:
    page.goto(f"{live_server}/admin/")
    page.fill("#token", bearer)
    page.click("button[type=submit]")


def create_ride(client, headers, rider: str) -> int:
    body = {"riderId": rider, "driverId": "d-1", "pickup": "Main St", "dropoff": "Airport"}
    response = client.post("/rides", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return response.json["id"]


def declined_payments(client, stack, user: str, n: int) -> list[dict]:
    """n payments of user's rides, each declined: failed payment jobs tagged with owner, ride and payment."""
    headers = {"Authorization": f"Bearer {token_for(stack, user)}"}
    accepted = [
        post_payment(client, headers, create_ride(client, headers, user), paymentMethod="pm_card_chargeCustomerFail")
        for _ in range(n)
    ]
    for payment in accepted:
        assert stack.wait_for_job(payment["jobId"]).state == "failed"
    return accepted


def token_for(stack, user: str, role: str = "user") -> str:
    with stack.app.app_context():
        return issue_token(user, role)


def count_cell(queue: str, state: str) -> str:
    return f'#queues tr[data-queue="{queue}"] [data-count="{state}"]'


def test_an_admin_searches_retries_cancels_and_bulk_retries_while_counts_and_charts_follow(
    app, client, stack, auth_headers, live_server, page
):
    user = f"dash-{secrets.token_hex(3)}"
    first, *others = declined_payments(client, stack, user, 3)
    delayed = add_email_job({"to": "later@example.com", "subject": "Later", "text": "hello"}, delay=600_000)

    page.goto(f"{live_server}/admin/")
    page.fill("#token", token(auth_headers, "42"))
    page.click("button[type=submit]")
    assert "does not carry the admin role" in page.content()

    page.fill("#token", token(auth_headers, "1", "admin"))
    page.click("button[type=submit]")
    assert int(page.inner_text(count_cell("payment", "failed"))) >= 3
    # The charts render: a throughput sparkline per queue, drawn on the server.
    chart = page.locator('[data-chart-queue="email"] svg[data-chart="throughput"]')
    assert chart.get_attribute("data-bars") == "60"
    page.wait_for_selector('#live[data-live="on"]')

    # Live: a job added through the Python API changes the count and, once done, the chart.
    cell = count_cell("email", "completed")
    before = page.inner_text(cell)
    completed_before = int(chart.get_attribute("data-completed"))
    job = add_email_job({"to": "live@example.com", "subject": "Live", "text": "hello"})
    page.wait_for_function(
        f"""() => document.querySelector('{cell}').textContent.trim() !== '{before}'""", timeout=10_000
    )
    assert stack.wait_for_job(job.id).state == "completed"
    page.wait_for_function(
        """(before) => Number(document.querySelector('[data-chart-queue="email"] svg[data-chart="throughput"]')
             .dataset.completed) > before""",
        arg=completed_before,
        timeout=15_000,
    )

    # Search for a ride's jobs: the ride's payment job, found by its ride id.
    ride_id = next(tag.split(":", 1)[1] for tag in stack.job(first["jobId"]).tags if tag.startswith("rideId:"))
    page.fill("#search", ride_id)
    page.press("#search", "Enter")
    rows = page.locator("#job-list tr[data-job]")
    shot(page, "dashboard-search")
    assert first["jobId"] in [rows.nth(i).get_attribute("data-job") for i in range(rows.count())]

    # A job's page: its timeline, then a retry with edited data (the masked method stays masked).
    page.click(f'#job-list a:text-is("{first["jobId"]}")')
    assert page.inner_text("#state") == "failed"
    timeline = page.inner_text("#timeline")
    assert "added to payment" in timeline and "attempt 1 failed" in timeline and "card_declined" in timeline
    assert page.input_value("#field-paymentId") == str(first["paymentId"])
    page.fill("#field-paymentMethod", "not-a-method")
    page.click("#retry-edited")
    assert "must be a Stripe PaymentMethod id" in page.inner_text("#error-paymentMethod")  # per field, nothing done
    assert page.inner_text("#state") == "failed"
    shot(page, "dashboard-job")
    page.fill("#field-paymentMethod", "pm_card_visa")
    page.click("#retry-edited")
    assert "queued again with edited data" in page.inner_text("div.flash")
    # The page follows the job's own events: it completes without a reload.
    page.wait_for_function("() => document.querySelector('#state').textContent === 'completed'", timeout=15_000)
    page.reload()
    assert re.search(r'"status": "succeeded"', page.inner_text("#result"))

    # Cancel a delayed job.
    page.goto(f"{live_server}/admin/ui/jobs/{delayed.id}")
    assert page.inner_text("#state") == "delayed"
    page.fill("#cancel-reason-input", "no longer needed")
    page.click("#cancel")
    assert "cancelled: it will not run" in page.inner_text("div.flash")
    assert page.inner_text("#state") == "cancelled" and "no longer needed" in page.inner_text("#cancel-reason")
    assert stack.job(delayed.id).state == "cancelled"

    # Bulk-retry the failed jobs of a filter: the dry run's count is confirmed first.
    page.goto(f"{live_server}/admin/ui/jobs?queue=payment&owner={user}")
    page.click('.tabs a:has-text("failed")')
    assert page.locator("#job-list tr[data-job]").count() == 2
    page.click("#bulk-retry")
    dialog = page.locator("dialog#bulk-confirm")
    assert dialog.get_attribute("data-matched") == "2"
    assert "Retry 2 jobs" in dialog.inner_text()
    shot(page, "dashboard-bulk")
    assert all(stack.job(p["jobId"]).state == "failed" for p in others)  # nothing done yet
    page.click("#bulk-confirm-yes")
    assert f"2 of 2 jobs matching queue payment, state failed, owner {user} queued again" in page.inner_text(
        "div.flash"
    )
    for payment in others:
        assert stack.wait_for_job(payment["jobId"]).attempts == 2
    if SHOTS:  # some traffic, so the charts have something to draw
        refused = [f"nobody-{i}@example.com" for i in range(4)]
        for to in refused:
            stack.services.smtp.handler.plan(to, "550 5.1.1 no such user")
        sent = [
            add_email_job({"to": to, "subject": "Hi", "text": "hello"}) for to in [*refused, *["a@example.com"] * 20]
        ]
        for job in sent:
            stack.wait_for_job(job.id)
        page.goto(f"{live_server}/admin/ui/health/email")
        shot(page, "dashboard-health")
        page.goto(f"{live_server}/admin/")
        page.wait_for_selector('#live[data-live="on"]')
        shot(page, "dashboard")


def test_a_viewer_sees_every_page_and_no_action_button(app, client, stack, auth_headers, live_server, page):
    to = f"refused-{secrets.token_hex(3)}@example.com"
    stack.services.smtp.handler.plan(to, "550 5.1.1 no such user")
    failed = stack.wait_for_job(add_email_job({"to": to, "subject": "Hi", "text": "hello"}).id)
    assert failed.state == "failed"
    sign_in(page, live_server, token(auth_headers, "9", "viewer"))
    assert page.is_visible("#read-only")
    for path in ["/admin/", f"/admin/ui/jobs/{failed.id}", "/admin/ui/jobs?queue=email&state=failed"]:
        page.goto(live_server + path)
        assert page.locator("main form[method=post]").count() == 0, path
        assert page.locator(ACTIONS).count() == 0, path
    page.goto(f"{live_server}/admin/ui/health/payment?window=24h")
    assert page.locator('svg[data-chart="throughput"]').get_attribute("data-bin-minutes") == "10"
    assert page.get_attribute("body", "data-stream") == "/admin/ui/stream"
