// What the scripts of this folder share: the command-line switches of Debian's Chromium, as the
// workplace's machines need them (no sandbox as root, no calls home), and how they open a page.
// CHROMIUM names the browser (default /usr/bin/chromium); playwright-core downloads none.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";

/** A page of a new context of `browser`, as the scripts look at it: its viewport, `timeout` for
 * every action, and what it reports as errors (uncaught ones, the console's) pushed to
 * `errors`. */
async function newPage(browser, timeout, errors) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  return page;
}

module.exports = { ARGS, EXECUTABLE, newPage };
