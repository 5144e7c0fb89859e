// Start the server under test once and stop it: absorbs a first build (the
// default SERVER_CMD may compile) and fails fast, with the server's output,
// when it cannot start at all, instead of every test file waiting for it.
"use strict";

const { startServer } = require("./harness");

(async () => {
  const t0 = Date.now();
  let server;
  try {
    server = await startServer();
  } catch (e) {
    console.error(`interop: the server under test did not start:\n${e.message}`);
    process.exit(1);
  }
  const r = await server.stop();
  console.log(`interop: server under test starts (${Date.now() - t0} ms, stopped ${r.graceful ? "gracefully" : "with SIGKILL"})`);
})();
