// The command-line switches of Debian's Chromium for the scripts of this folder, as the
// workplace's machines need them: no sandbox as root, no calls home.
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

module.exports = { ARGS, EXECUTABLE };
