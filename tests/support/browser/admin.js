// Uses Kinto Admin (admin/, built by admin/build.mjs) in Debian's Chromium as a person would
// (tests/live/test_admin.py runs it): signs in with Basic Auth, creates a bucket and a
// collection with attachments enabled, creates a record with a file, replaces the file,
// deletes the attachment. SCREENSHOT: the record's page with the replaced attachment.
//
//   node admin.js ADMIN_URL SERVER_URL USER:PASSWORD FIRST_FILE SECOND_FILE SCREENSHOT
//
// After each step it prints one JSON line, {"step": NAME, "bucket", "collection"}, and waits
// for a line on its stdin before the next one: meanwhile the test checks the step through the
// API. It ends with {"step": "done", "errors": [...]}: what the page reported as errors
// once signed in.
// A step fails as soon as Kinto Admin says it failed ("Couldn't ...").
const readline = require("node:readline");
const { chromium } = require("playwright-core");
const { ARGS, EXECUTABLE, newPage } = require("./chromium");

const [adminUrl, server, credentials, firstFile, secondFile, screenshot] = process.argv.slice(2);
const [user, password] = credentials.split(/:(.*)/s);
const BUCKET = "photos";
const COLLECTION = "scans";
const TIMEOUT = 60_000;

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Tell the test that `step` is done, and wait until it checked it. */
async function done(step) {
  console.log(JSON.stringify({ step, bucket: BUCKET, collection: COLLECTION }));
  const { done: closed } = await lines.next();
  if (closed) throw new Error(`stdin closed after step ${step}`);
}

/** Wait for Kinto Admin's notification `text`; throw what it says instead if it failed. */
async function notified(page, text) {
  const success = page.locator(".notifications").getByText(text, { exact: true });
  const failure = page.locator(".notifications .alert-danger");
  await success.or(failure).first().waitFor();
  if (await failure.count()) throw new Error(`${text}: ${await failure.first().innerText()}`);
  await page.locator(".notifications button.close").first().click();
}

async function main() {
  const browser = await chromium.launch({ executablePath: EXECUTABLE, args: ARGS });
  const errors = [];
  try {
    const page = await newPage(browser, TIMEOUT, errors);

    await page.goto(adminUrl);
    await page.locator("#root_server").fill(server);
    await page.getByLabel("Basic Auth").check();
    await page.locator("#root_credentials_username").fill(user);
    await page.locator("#root_credentials_password").fill(password);
    // Until now the page asked the server it offers by default (`make serve`'s), which the
    // test does not run: what the page reports counts from here.
    errors.length = 0;
    await page.getByRole("button", { name: "Sign in using Basic Auth" }).click();
    await notified(page, "Authenticated.");
    await done("signed-in");

    await page.getByRole("link", { name: "Create bucket" }).click();
    await page.locator("#root_id").fill(BUCKET);
    await page.getByRole("button", { name: "Create bucket" }).click();
    await notified(page, "Bucket created.");
    await done("bucket");

    await page.locator(`a[href="#/buckets/${BUCKET}/collections/create"]`).click();
    await page.locator("#root_id").fill(COLLECTION);
    await page.getByLabel("Enable file attachment").check();
    await page.getByRole("button", { name: "Create collection" }).click();
    await notified(page, "Collection created.");
    await done("collection");

    await page.getByRole("link", { name: "Create record" }).first().click();
    await page.locator("#root_title").fill("A scan");
    await page.locator("#root___attachment__").setInputFiles(firstFile);
    await page.getByRole("button", { name: "Create record" }).click();
    await notified(page, "Record created.");
    await done("uploaded");

    await page.getByTitle("Edit record").click();
    await page.getByText("Attachment information").waitFor();
    await page.locator("#root___attachment__").setInputFiles(secondFile);
    await page.getByRole("button", { name: "Update record" }).click();
    await notified(page, "Record attributes updated.");
    await done("replaced");

    await page.getByTitle("Edit record").click();
    await page.getByText("Attachment information").waitFor();
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.getByRole("button", { name: "Delete this attachment" }).click();
    await notified(page, "Attachment deleted.");
    await done("deleted");
    console.log(JSON.stringify({ step: "done", errors }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
