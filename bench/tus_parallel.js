// One upload of a file in parallel parts with tus-js-client (`parallelUploads`: partial uploads
// sent at once, then the final one joining them), timed. bench/run.py runs it with NODE_PATH
// naming the tus-js-client of the live tests (tests/support/live.py, ensure_tus_js):
//
//   node bench/tus_parallel.js ENDPOINT FILE PARTS CHUNK_BYTES USER:PASSWORD
//
// It prints the seconds from the upload's start to its success: node's own start-up and
// loading of tus-js-client are not the server's (curl, which the multipart upload is timed
// with, starts in milliseconds).
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, path, parts, chunkSize, credentials] = process.argv.slice(2);
const start = process.hrtime.bigint();
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  headers: { Authorization: "Basic " + Buffer.from(credentials).toString("base64") },
  metadata: { filename: "parallel.bin", filetype: "application/octet-stream" },
  parallelUploads: Number(parts),
  chunkSize: Number(chunkSize),
  retryDelays: null, // A failure is the bench's to see, not to hide.
  onError: (error) => {
    console.error(error);
    process.exit(1);
  },
  onSuccess: () => console.log(Number(process.hrtime.bigint() - start) / 1e9),
});
upload.start();
