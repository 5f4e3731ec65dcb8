"""The whole flow in Chromium, driven by Playwright, with a screenshot per step.

An admin logs in, sets up the company SMTP with OAuth2 through the local
authorization server's consent page, sends a test e-mail, adds a Smart
Connector, runs Test Connector and Finish Test, and finds the new project
with its files. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mailhelpers import PDF_BYTES, message_with_files
from .servers import MAILBOX_PASSWORD, MAILBOX_USER, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, require
from .test_end_to_end import ADMIN, ADMIN_PASSWORD, RunningApp, running_app  # noqa: F401

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
# Without the background-networking switches Chromium keeps trying to reach
# Google's services, which this sandbox refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def app_database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'browser.db'}"


@pytest.fixture
def page(running_app: RunningApp) -> Iterator[object]:
    require(Path(CHROMIUM).exists(), "Chromium is not installed (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        # Only loopback: any other request is a bug in the page.
        context.route(
            re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"),
            lambda route: route.abort(),
        )
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        try:
            yield tab
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_admin_flow_in_browser(page, running_app: RunningApp, mail_stack) -> None:  # type: ignore[no-untyped-def]
    app = running_app
    expect = playwright_api.expect
    mail_stack.empty_folder(MAILBOX_USER)
    mail_stack.sink.clear()

    page.goto(f"{app.url}/login")
    page.get_by_label("E-mail Address").fill(ADMIN)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    shot(page, "01-login")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shot(page, "02-dashboard")

    # Company SMTP with OAuth2, consent on the authorization server's page.
    page.goto(f"{app.url}/configuration/general/settings/email")
    page.get_by_label("OAuth2").check()
    page.get_by_label("SMTP Server").fill(f"127.0.0.1:{mail_stack.dovecot.submission_port}")
    page.get_by_label("E-mail Address").fill(MAILBOX_USER)
    page.get_by_label("Connection Type").select_option("tls")
    page.get_by_label("Provider").select_option("local")
    page.get_by_label("Client Id").fill(OAUTH_CLIENT_ID)
    page.get_by_label("Client Secret").fill(OAUTH_CLIENT_SECRET)
    shot(page, "03-smtp-settings")
    page.get_by_role("button", name="Generate new token").click()
    expect(page.get_by_role("button", name="Allow")).to_be_visible()
    page.get_by_label("Password").fill(MAILBOX_PASSWORD)
    shot(page, "04-consent")
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_text("OAuth2 Token was generated")).to_be_visible()
    expect(page.get_by_text("Your access token is active").first).to_be_visible()
    shot(page, "05-token-generated")
    assert OAUTH_CLIENT_SECRET not in page.content()

    page.get_by_label("Send Test E-mail to").fill("office-manager@example.org")
    page.get_by_role("button", name="Test", exact=True).click()
    expect(page.get_by_text("Test e-mail sent to office-manager@example.org")).to_be_visible()
    shot(page, "06-test-email")
    assert [m.rcpt_tos for m in mail_stack.sink.messages] == [["office-manager@example.org"]]

    # A connector on the same mailbox: the token is shared, no consent again.
    mail_stack.dovecot.deliver(
        MAILBOX_USER,
        message_with_files(
            "Leaflet for translation", [("Leaflet.pdf", PDF_BYTES, "application/pdf")]
        ),
    )
    page.goto(f"{app.url}/configuration/integration/smart-connectors")
    page.get_by_role("link", name="Add Smart Connector").first.click()
    # The script replaces the client select with a search box once loaded.
    page.wait_for_load_state("load")
    page.locator("#client-search").wait_for()
    page.get_by_label("Name", exact=True).fill("Northwind intake")
    client = page.get_by_role("combobox", name="Client")
    client.fill("North")
    page.get_by_role("option", name="Northwind Pharma GmbH").click()
    page.get_by_role("radio", name="OAuth2").check()
    page.get_by_label("Provider").select_option("local")
    # The store sections repeat these labels; the mailbox fields come first.
    page.get_by_label("Host Name").first.fill("127.0.0.1")
    page.get_by_label("Port").first.fill(str(mail_stack.dovecot.imaps_port))
    page.get_by_label("Username").first.fill(MAILBOX_USER)
    # Inactive, so the schedule leaves the e-mail to Test Connector.
    page.get_by_label("Active").uncheck()
    shot(page, "07-add-connector")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your access token is active").first).to_be_visible()
    shot(page, "08-connector")

    # Test Connector shows the e-mail and its file; Finish Test processes it.
    page.get_by_role("button", name="Test Connector").click()
    expect(page.get_by_text("Leaflet for translation").first).to_be_visible()
    expect(page.get_by_text("Leaflet.pdf").first).to_be_visible()
    shot(page, "09-test-connector")
    page.get_by_role("button", name="Finish Test").click()
    expect(page.get_by_text("Finish Test started").first).to_be_visible()

    project_link = page.get_by_role("link", name="Leaflet.pdf")
    for _ in range(60):
        page.goto(f"{app.url}/projects")
        if project_link.count():
            break
        page.wait_for_timeout(500)
    shot(page, "10-projects")
    project_link.first.click()
    expect(page.get_by_text("Northwind Pharma GmbH").first).to_be_visible()
    shot(page, "11-project")
    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile("Leaflet.pdf")).last.click()
    download = download_info.value
    assert Path(download.path()).read_bytes() == PDF_BYTES
    assert download.suggested_filename == "Leaflet.pdf"
