"""The admin dashboard in real headless Chromium: sign in, see counts, retry a failed job, watch it complete."""

import json
import os
import re
import shutil
import threading

import pytest
from werkzeug.serving import make_server

from devstack.processes import free_port
from tests.integration.test_payments import create_ride, post_payment

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


@pytest.fixture
def page(tmp_path):
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
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def test_sign_in_see_counts_and_retry_a_failed_job_with_edited_data(
    app, client, stack, auth_headers, live_server, page
):
    user = auth_headers("42")
    accepted = post_payment(client, user, create_ride(client, user), paymentMethod="pm_card_chargeCustomerFail")
    assert stack.wait_for_job(accepted["jobId"]).state == "failed"
    admin_token = auth_headers("1", "admin")["Authorization"].removeprefix("Bearer ")

    page.goto(f"{live_server}/admin/")
    page.fill("#token", auth_headers("42")["Authorization"].removeprefix("Bearer "))
    page.click("button[type=submit]")
    assert "does not carry the admin role" in page.content()

    page.fill("#token", admin_token)
    page.click("button[type=submit]")
    payment_row = page.locator('tr[data-queue="payment"]').first
    failed_cell = payment_row.locator('[data-count="failed"]')
    assert int(failed_cell.inner_text()) >= 1
    assert page.locator('tr[data-queue="email"]').count() >= 1

    failed_table = page.locator('table.failed-jobs[data-queue="payment"]')
    row = failed_table.locator("tr", has_text=accepted["jobId"])
    assert "card_declined" in row.inner_text()
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        page.screenshot(path=os.environ["DASHBOARD_SCREENSHOT"], full_page=True)

    row.locator("a").click()
    page.wait_for_selector("#edit-data")
    assert page.inner_text("#state") == "failed"
    shown = json.loads(page.input_value("#edit-data"))
    assert shown == {"paymentId": accepted["paymentId"]}
    page.fill("#edit-data", json.dumps({**shown, "paymentMethod": "pm_card_visa"}))
    page.click("#retry-edited")
    assert "queued again with edited data" in page.inner_text("div.flash")

    stack.wait_for_job(accepted["jobId"], states=("completed",))
    page.reload()
    assert page.inner_text("#state") == "completed"
    assert re.search(r'"status": "succeeded"', page.inner_text("#result"))

    # The counts refresh on their own.
    page.goto(f"{live_server}/admin/")
    before = page.inner_text('tr[data-queue="payment"] [data-count="completed"]')
    post_payment(client, user, create_ride(client, user))
    cell = 'tr[data-queue="payment"] [data-count="completed"]'
    page.wait_for_function(f"""() => document.querySelector('{cell}').textContent !== '{before}'""", timeout=15_000)
