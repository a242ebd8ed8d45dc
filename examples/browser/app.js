// Resumable uploads to Kinto record attachments with Uppy and its tus plugin.
//
// Each file becomes the attachment of a new record: Uppy's tus plugin sends it in chunks to
// {record}/attachment/uploads (kinto_attachment's tus endpoint), and the last chunk makes it
// the record's attachment. The page then reads the record, and lists the collection's records
// with their download links. Settings come from the query string (the form above sets it).
import { Dashboard, Tus, Uppy } from "./node_modules/uppy/dist/uppy.min.mjs";

const DEFAULTS = {
  server: "http://localhost:8888/v1",
  bucket: "website",
  collection: "assets",
  user: "alice",
  password: "passwd",
  chunkSize: String(5 * 1024 * 1024),
};
const settings = { ...DEFAULTS, ...Object.fromEntries(new URLSearchParams(location.search)) };
for (const [name, value] of Object.entries(settings)) {
  const input = document.querySelector(`#settings [name="${name}"]`);
  if (input) input.value = value;
}

const auth = { Authorization: "Basic " + btoa(`${settings.user}:${settings.password}`) };
const bucketUrl = `${settings.server}/buckets/${encodeURIComponent(settings.bucket)}`;
const collectionUrl = `${bucketUrl}/collections/${encodeURIComponent(settings.collection)}`;

function say(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function kinto(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...auth, ...options.headers } });
  if (!response.ok && response.status !== 412) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${options.method || "GET"} ${url}: ${response.status} ${body.message || ""}`);
  }
  return response;
}

// The bucket and the collection, unless they exist (If-None-Match: * answers 412 then).
async function ensureCollection() {
  for (const url of [bucketUrl, collectionUrl]) {
    await kinto(url, { method: "PUT", headers: { "If-None-Match": "*" } });
  }
}

const uppy = new Uppy({ autoProceed: false })
  .use(Dashboard, {
    target: "#uploader",
    inline: true,
    height: 330,
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
  })
  .use(Tus, {
    endpoint: `${collectionUrl}/records`, // Replaced per file below.
    headers: auth,
    chunkSize: Number(settings.chunkSize),
    retryDelays: [0, 1000, 3000, 5000],
    // Only these become Upload-Metadata: filename and filetype (from name and type), and the
    // record's fields as JSON in `data`.
    allowedMetaFields: ["name", "type", "data"],
    // A finished upload answers HEAD as done until it expires: never resume one for a new file.
    removeFingerprintOnSuccess: true,
  });

// Each file goes to a record of its own.
uppy.on("file-added", (file) => {
  const record = crypto.randomUUID();
  uppy.setFileState(file.id, {
    tus: { endpoint: `${collectionUrl}/records/${record}/attachment/uploads` },
  });
  uppy.setFileMeta(file.id, { data: JSON.stringify({ title: file.name }) });
});

uppy.on("upload-success", async (file, response) => {
  // The upload's URL is {record}/attachment/uploads/{id}: a resumed upload keeps its record.
  const recordUrl = response.uploadURL.replace(/\/attachment\/uploads\/[^/]+$/, "");
  const record = (await (await kinto(recordUrl)).json()).data;
  document.getElementById("result").textContent = JSON.stringify(record, null, 2);
  say(`${file.name} is the attachment of record ${record.id}.`);
  await listRecords();
});

uppy.on("upload-error", (file, error) => say(`${file.name}: ${error.message}`, true));

async function listRecords() {
  const url = `${collectionUrl}/records?_sort=-last_modified`;
  const records = (await (await kinto(url)).json()).data.filter((record) => record.attachment);
  const rows = records.map((record) => {
    const row = document.createElement("tr");
    row.dataset.record = record.id;
    const { filename, size, hash, location } = record.attachment;
    for (const text of [record.id, filename, `${size} bytes`, hash.slice(0, 16) + "…"]) {
      row.append(Object.assign(document.createElement("td"), { textContent: text }));
    }
    row.children[3].className = "hash";
    row.children[3].title = hash;
    const links = document.createElement("td");
    // `location` is public wherever the files are served (serve_files with `make serve`).
    const direct = Object.assign(document.createElement("a"), {
      href: location,
      textContent: "location",
    });
    const checked = Object.assign(document.createElement("button"), { textContent: "download" });
    const recordUrl = `${collectionUrl}/records/${record.id}`;
    checked.addEventListener("click", () => download(recordUrl, hash, links));
    links.append(direct, " ", checked);
    row.append(links);
    return row;
  });
  document.getElementById("records").replaceChildren(...rows);
}

// GET {record}/attachment with the user's credentials, as whoever may read the record may;
// the bytes are checked against the record's sha256, then saved under their own name
// (Content-Disposition, which the server exposes to pages of other origins).
async function download(recordUrl, expected, cell) {
  const response = await kinto(`${recordUrl}/attachment`);
  const blob = await response.blob();
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  const hash = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  const disposition = response.headers.get("Content-Disposition") || "";
  const encoded = disposition.match(/filename\*=UTF-8''([^;]+)/)?.[1];
  const filename = encoded ? decodeURIComponent(encoded) : "file";
  const verified = hash === expected;
  const verdict = Object.assign(document.createElement("span"), {
    className: verified ? "verified" : "error",
    textContent: ` ${verified ? "✓" : "✗"} ${filename}: sha256 ${verified ? "verified" : "differs"}`,
  });
  verdict.dataset.sha256 = hash;
  cell.querySelector("span")?.remove();
  cell.append(verdict);
  const link = document.createElement("a");
  Object.assign(link, { href: URL.createObjectURL(blob), download: filename });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

try {
  await ensureCollection();
  await listRecords();
  const where = `${settings.bucket}/${settings.collection}`;
  say(`Connected to ${settings.server} as ${settings.user}: uploads go to ${where}.`);
} catch (error) {
  say(`${error.message} (is the server running? see the README)`, true);
}
// For the page's own console, and for tests driving it.
window.uppy = uppy;
