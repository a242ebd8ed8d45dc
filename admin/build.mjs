// Builds Kinto Admin from the npm package `kinto-admin` into build/ with esbuild:
//
//   npm ci && node build.mjs        (what `make admin` runs)
//
// The package ships its TypeScript compiled to lib/ but no bundle (its own build is webpack's,
// from sources that are not published), and lib/ only bundles with three workarounds, each a
// small esbuild plugin or setting below:
// - lib/components/Breadcrumbs/Breadcrumbs.js imports "./style.css", which is not published:
//   that import is an empty stylesheet (the Breadcrumbs look as Bootstrap's);
// - css/styles.css names images as webpack's css-loader did, `url("~bootstrap-icons/...")`
//   for a package's file: `~` is dropped and the rest resolved in node_modules;
// - lib/components/App.js reads process.env (the version shown in the footer), which only a
//   bundler's substitution gives a browser: it is defined, as NODE_ENV for React and Redux.
//
// KINTO_ADMIN_SERVER (default http://localhost:8888/v1/, `make serve`'s) is the server the
// login form offers until another one was used.
import { existsSync, mkdirSync, readFileSync, rmSync, copyFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.join(HERE, "build");
const ADMIN = path.join(HERE, "node_modules", "kinto-admin");
const VERSION = JSON.parse(readFileSync(path.join(ADMIN, "package.json"))).version;
const SERVER = process.env.KINTO_ADMIN_SERVER || "http://localhost:8888/v1/";

const unpublishedStylesheet = {
  name: "unpublished-stylesheet",
  setup(build) {
    build.onResolve({ filter: /\.css$/ }, (args) => {
      const file = path.resolve(args.resolveDir, args.path);
      if (!args.path.startsWith(".") || existsSync(file) || !file.startsWith(ADMIN)) return;
      return { path: file, namespace: "unpublished-stylesheet" };
    });
    build.onLoad({ filter: /.*/, namespace: "unpublished-stylesheet" }, (args) => ({
      contents: `/* ${path.relative(ADMIN, args.path)}: not in the npm package */`,
      loader: "css",
    }));
  },
};

const webpackTildeUrls = {
  name: "webpack-tilde-urls",
  setup(build) {
    build.onResolve({ filter: /^~/ }, (args) =>
      build.resolve(args.path.slice(1), { kind: args.kind, resolveDir: args.resolveDir }),
    );
  },
};

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const result = await esbuild.build({
  entryPoints: [path.join(HERE, "src", "main.js")],
  outdir: OUT,
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  plugins: [unpublishedStylesheet, webpackTildeUrls],
  define: {
    "process.env.NODE_ENV": JSON.stringify("production"),
    "process.env.REACT_APP_VERSION": JSON.stringify(VERSION),
    "process.env.KINTO_ADMIN_VERSION": JSON.stringify(VERSION),
    "process.env.KINTO_ADMIN_SERVER": JSON.stringify(SERVER),
  },
  loader: {
    ".png": "file",
    ".gif": "file",
    ".svg": "file",
    ".woff": "file",
    ".woff2": "file",
    ".ttf": "file",
    ".eot": "file",
  },
  assetNames: "assets/[name]-[hash]",
  logLevel: "warning",
});
if (result.errors.length) process.exit(1);
copyFileSync(path.join(HERE, "index.html"), path.join(OUT, "index.html"));
console.log(`Kinto Admin ${VERSION} built in ${path.relative(process.cwd(), OUT) || "."}/`);
