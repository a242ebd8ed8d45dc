// Drives examples/browser in Debian's Chromium as a user would (tests/live/test_browser.py runs it):
// pick a file, start the upload, pause it half-way, resume it, wait for the record, download
// the attachment with the page's button, fetch its `location`, and take a screenshot.
//
//   node drive.js PAGE_URL FILE SCREENSHOT
//
// CHROMIUM names the browser (chromium.js); playwright-core downloads none.
// Prints one JSON object: what the page showed, for the test to check against the server.
const { chromium } = require("playwright-core");
const { ARGS, EXECUTABLE, newPage } = require("./chromium");

const [pageUrl, file, screenshot] = process.argv.slice(2);
const TIMEOUT = 60_000;

function progress(page) {
  return page.evaluate(() => {
    const [file] = Object.values(window.uppy.getState().files);
    return { sent: file.progress.bytesUploaded, paused: Boolean(file.isPaused) };
  });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    args: ARGS,
  });
  const errors = [];
  try {
    const page = await newPage(browser, TIMEOUT, errors);

    await page.goto(pageUrl);
    await page.getByText("Connected to").waitFor();
    await page.locator("#uploader input[type=file]").first().setInputFiles(file);
    await page.getByRole("button", { name: /^Upload 1 file/ }).click();

    // Pause once a few chunks are in, as a user clicking the status bar's button.
    await page.waitForFunction(() => {
      const [file] = Object.values(window.uppy.getState().files);
      return file.progress.bytesUploaded > 0;
    });
    await page.getByRole("button", { name: "Pause", exact: true }).click();
    const paused = await progress(page);
    await page.waitForTimeout(1500);
    const stillPaused = await progress(page);
    await page.getByRole("button", { name: "Resume", exact: true }).click();

    await page.locator("#result", { hasText: '"hash"' }).waitFor();
    const record = JSON.parse(await page.locator("#result").textContent());
    const row = page.locator(`#records tr[data-record="${record.id}"]`);
    await row.getByRole("button", { name: "download" }).click();
    const verdict = row.locator("span[data-sha256]");
    await verdict.waitFor();
    const downloaded = {
      sha256: await verdict.getAttribute("data-sha256"),
      verdict: await verdict.textContent(),
    };
    // A `location` served by the server itself (serve_files), fetched from this page's origin.
    const fetched = await page.evaluate(async (url) => {
      const response = await fetch(url);
      const digest = await crypto.subtle.digest("SHA-256", await response.arrayBuffer());
      const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"));
      return {
        status: response.status,
        sha256: hex.join(""),
        disposition: response.headers.get("Content-Disposition"),
      };
    }, record.attachment.location);

    await page.screenshot({ path: screenshot, fullPage: true });
    const status = await page.locator("#status").textContent();
    console.log(
      JSON.stringify({ record, paused, stillPaused, downloaded, fetched, status, errors }),
    );
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
