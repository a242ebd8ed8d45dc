// Opens pages in Debian's Chromium and runs fetch() calls from them, as a page's script would
// (tests/live/test_live_pages.py runs it): what a web page can make a browser send, and read.
//
//   node fetch.js PLAN_JSON
//
// PLAN_JSON: {"resolve": {"name": "127.0.0.1"}, "args": [...], "pages": [{"url": ..., "fetches": [{"url",
// "method", "body", "headers", "mode"}]}]}. Each page is a blank document that the browser
// takes for the one at "url" (its origin is that of "url"; no server is asked for it), as the
// site that served it would. Names in "resolve" resolve to that address: what DNS rebinding
// achieves once the page is loaded. Prints one JSON list per page: each fetch's status,
// response type (``opaque`` for no-cors) and text when the page may read it, or its error.
// "args": more command-line switches of Chromium.
const { chromium } = require("playwright-core");
const { ARGS, EXECUTABLE } = require("./chromium");

const TIMEOUT = 30_000;

function pageFetch(call) {
  return fetch(call.url, {
    method: call.method || "GET",
    body: call.body,
    headers: call.headers || {},
    mode: call.mode || "cors",
  }).then(
    async (response) => ({
      status: response.status,
      type: response.type,
      text: response.type === "opaque" ? null : await response.text(),
    }),
    (error) => ({ error: String(error) }),
  );
}

async function main() {
  const plan = JSON.parse(process.argv[2]);
  const rules = Object.entries(plan.resolve || {}).map(([name, address]) => `MAP ${name} ${address}`);
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    args: [...ARGS, `--host-resolver-rules=${rules.join(",")}`, ...(plan.args || [])],
  });
  try {
    const results = [];
    for (const { url, fetches } of plan.pages) {
      const page = await browser.newPage();
      page.setDefaultTimeout(TIMEOUT);
      await page.route(url, (route) =>
        route.fulfill({ contentType: "text/html", body: "<!doctype html><title>A page</title>" }),
      );
      await page.goto(url);
      // While a route is set, Playwright answers CORS preflights itself: the page's requests
      // must meet the browser's own rules, and the server.
      await page.unrouteAll();
      const done = [];
      for (const call of fetches) done.push(await page.evaluate(pageFetch, call));
      results.push(done);
      await page.close();
    }
    console.log(JSON.stringify(results));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
