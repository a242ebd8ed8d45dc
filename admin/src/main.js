// The page's script: Kinto Admin (the npm package's KintoAdmin component) on #root, with its
// default settings (lib/reducers/settings.js: any server, 200 records a page).
import "./default-server.js";
import React from "react";
import { render } from "react-dom";
import KintoAdmin from "kinto-admin";

render(React.createElement(KintoAdmin, { settings: {} }), document.getElementById("root"));
