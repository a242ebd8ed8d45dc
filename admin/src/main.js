// The page's script: Kinto Admin (the npm package's KintoAdmin component) on #root, offering
// the server of `make serve` at login until another one was used (build.mjs bundles it).
import React from "react";
import { render } from "react-dom";
import KintoAdmin from "kinto-admin";

// Kinto Admin's own list of the servers used, most recent first (lib/store/localStore.js).
const HISTORY_KEY = "kinto-admin-server-history";
if (!localStorage.getItem(HISTORY_KEY)) {
  const server = { server: process.env.KINTO_ADMIN_SERVER, authType: "basicauth" };
  localStorage.setItem(HISTORY_KEY, JSON.stringify([server]));
}

render(React.createElement(KintoAdmin), document.getElementById("root"));
