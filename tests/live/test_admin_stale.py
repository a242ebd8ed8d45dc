"""Kinto Admin's record page, left open while the record's file changes (found by review,
2026-12-05): saving it says "modified meanwhile", as with kinto-attachment.

Uses the build and the browser driver of ``tests/live/test_admin.py`` (Debian's Chromium,
playwright-core), with a page script of its own written beside the driver's.
"""

import json

import pytest
import requests

from ..support.live import ALICE, REQUEST_TIMEOUT, get, running_server
from .test_admin import Steps, admin_driver, admin_origin  # noqa: F401 (fixtures)


pytestmark = pytest.mark.live


#: Signs in, opens the record's page, says "editing" and waits for a line on stdin (meanwhile
#: the test changes the record as another user or tab would), then changes the title, saves,
#: and says what Kinto Admin notified.
EDIT_JS = r"""
const readline = require("node:readline");
const { chromium } = require("playwright-core");
const { ARGS, EXECUTABLE, newPage } = require("./chromium");
const [adminUrl, server, credentials, recordHash] = process.argv.slice(2);
const [user, password] = credentials.split(/:(.*)/s);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function notification(page, text) {
  const success = page.locator(".notifications").getByText(text, { exact: true });
  const failure = page.locator(".notifications .alert-danger");
  await success.or(failure).first().waitFor();
  const ok = !(await failure.count());
  const said = ok ? text : await failure.first().innerText();
  await page.locator(".notifications button.close").first().click();
  return { ok, text: said };
}

async function main() {
  const browser = await chromium.launch({ executablePath: EXECUTABLE, args: ARGS });
  try {
    const page = await newPage(browser, 30_000, []);
    await page.goto(adminUrl);
    await page.locator("#root_server").fill(server);
    await page.getByLabel("Basic Auth").check();
    await page.locator("#root_credentials_username").fill(user);
    await page.locator("#root_credentials_password").fill(password);
    await page.getByRole("button", { name: "Sign in using Basic Auth" }).click();
    const signedIn = await notification(page, "Authenticated.");
    if (!signedIn.ok) throw new Error(signedIn.text);
    await page.goto(adminUrl + "#" + recordHash);
    await page.getByText("Attachment information").waitFor();
    await page.locator("#root_title").waitFor();
    console.log(JSON.stringify({ step: "editing" }));
    await lines.next();
    await page.locator("#root_title").fill("A scan, renamed");
    await page.getByRole("button", { name: "Update record" }).click();
    const saved = await notification(page, "Record attributes updated.");
    console.log(JSON.stringify({ step: "saved", ...saved }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
"""


def _upload(record_url, name, content, title):
    response = requests.post(
        f"{record_url}/attachment",
        files={"attachment": (name, content)},
        data={"data": json.dumps({"title": title})},
        auth=ALICE,
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code in (200, 201), response.text
    return response


def _put(url, body):
    response = requests.put(url, json=body, auth=ALICE, timeout=REQUEST_TIMEOUT)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("meanwhile", ["file replaced", "file deleted"])
def test_saving_a_stale_record_page_says_modified_meanwhile_not_attachment_edit(
    admin_origin,  # noqa: F811
    admin_driver,  # noqa: F811
    tmp_path,
    meanwhile,
):
    """Found by review (2026-12-05).

    A Kinto Admin user opens the page of a record that has a file (``Edit record``) to fix
    its title. Meanwhile a colleague (or the same user in another tab) replaces the record's
    file, or deletes it. The user then changes the title and clicks *Update record*.

    Kinto Admin sends the record it loaded back, ``PUT`` with ``If-Match`` its old
    ``last_modified`` (kinto-admin 1.31.1, ``src/sagas/collection.ts`` ``updateRecord``:
    ``coll.updateRecord({...data, id, last_modified}, {safe: true})``), the old ``attachment``
    included, as the form holds it. Kinto answers a stale ``If-Match`` with 412, which Kinto
    Admin shows as "Resource ... has been modified meanwhile": reload and try again. Mozilla's
    kinto-attachment 8.0.0 does exactly that for this very request (checked by hand in this
    review: ``412 Precondition Failed``, ``Resource was modified meanwhile``, for both the
    replaced and the deleted file).

    Here the attachment check (``listeners._check_record_body``) runs before Kinto's
    precondition check and answers 400 instead: the user, who only edited the title, sees
    "Couldn't update record. Attachment metadata cannot be modified: upload with POST
    {record}/attachment, remove with DELETE {record}/attachment." -- an error that blames
    them for something they did not do, in API terms, and hides the real cause (the record
    changed since the page was loaded), so they do not know that reloading the page fixes it.
    """
    (tmp_path / "server").mkdir()
    with running_server(tmp_path / "server") as server:
        bucket_url = f"{server.url}/buckets/photos"
        collection_url = f"{bucket_url}/collections/scans"
        _put(bucket_url, {"data": {}})
        _put(
            collection_url,
            {
                "data": {
                    "schema": {"type": "object", "properties": {"title": {"type": "string"}}},
                    "uiSchema": {"ui:order": ["title"]},
                    "displayFields": ["title"],
                    "attachment": {"enabled": True, "required": False},
                }
            },
        )
        record_url = f"{collection_url}/records/scan-1"
        _upload(record_url, "scan.png", b"\x89PNG first", "A scan")

        arguments = [
            f"{admin_origin}/",
            server.url + "/",
            ":".join(ALICE),
            "/buckets/photos/collections/scans/records/scan-1/attributes",
        ]
        (admin_driver[0] / "edit_meanwhile.js").write_text(EDIT_JS)
        page = Steps(admin_driver, arguments, tmp_path / "page.log", "edit_meanwhile.js")
        try:
            page.next("editing")
            # Another user (or tab) changes the file while the page is open.
            if meanwhile == "file replaced":
                _upload(record_url, "scan-2.png", b"\x89PNG second", "A scan")
            else:
                response = requests.delete(
                    f"{record_url}/attachment", auth=ALICE, timeout=REQUEST_TIMEOUT
                )
                assert response.status_code == 204, response.text
            page.go_on()
            saved = page.next("saved")
        finally:
            page.close()
        record = get(record_url).json()["data"]

    # Nothing was written over the colleague's change: the page had it wrong.
    assert record["title"] == "A scan", record
    assert not saved["ok"], saved
    # What Kinto Admin shows for Kinto's 412 (kinto-http: "... modified meanwhile").
    assert "modified meanwhile" in saved["text"], saved["text"]
