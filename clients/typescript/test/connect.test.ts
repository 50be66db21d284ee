// How connect() reads its options and the environment (no server needed).
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { isLoopback, resolveOptions } from "../src/index.js";

const dir = mkdtempSync(join(tmpdir(), "moments-connect-"));
const pemFile = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

test("plaintext only when asked or for loopback; TLS with the system's roots elsewhere", () => {
  assert.equal(resolveOptions({ target: "127.0.0.1:50051", env: {} }).baseUrl, "http://127.0.0.1:50051");
  assert.equal(resolveOptions({ target: "localhost:1", env: {} }).tls, undefined);
  assert.equal(resolveOptions({ target: "[::1]:1", env: {} }).baseUrl, "http://[::1]:1");
  const remote = resolveOptions({ target: "moments.example.com:443", env: {} });
  assert.equal(remote.baseUrl, "https://moments.example.com:443");
  assert.deepEqual(remote.tls, { ca: undefined, cert: undefined, key: undefined, servername: undefined });
  assert.equal(resolveOptions({ target: "10.0.0.5:50051", tls: false, env: {} }).baseUrl, "http://10.0.0.5:50051");
  assert.equal(resolveOptions({ target: "http://10.0.0.5:50051", env: {} }).tls, undefined);
  assert.equal(resolveOptions({ target: "127.0.0.1:9", tls: true, env: {} }).baseUrl, "https://127.0.0.1:9");
  assert.equal(resolveOptions({ target: "https://127.0.0.1:9", env: {} }).baseUrl, "https://127.0.0.1:9");
  assert.throws(() => resolveOptions({ target: "http://h:1", tls: true, env: {} }), /says http:\/\//);
  assert.throws(() => resolveOptions({ target: "nohostport", env: {} }), /not host:port/);
  assert.ok(isLoopback("127.3.4.5") && isLoopback("LOCALHOST") && !isLoopback("128.0.0.1") && !isLoopback("::2"));
});

test("target, token, timeout and certificates from the environment (the Python CLI's names)", () => {
  const ca = pemFile("ca.pem", "CA");
  const cert = pemFile("client.pem", "CERT");
  const key = pemFile("client.key", "KEY");
  const env = {
    MOMENTS_TARGET: "127.0.0.1:7000",
    MOMENTS_TOKEN: "t0k",
    MOMENTS_TIMEOUT: "2.5",
    MOMENTS_CA_CERT: ca,
    MOMENTS_CLIENT_CERT: cert,
    MOMENTS_CLIENT_KEY: key,
  };
  const r = resolveOptions({ env });
  // a CA makes a loopback target TLS too
  assert.equal(r.baseUrl, "https://127.0.0.1:7000");
  assert.equal(r.token, "t0k");
  assert.equal(r.timeoutMs, 2500);
  assert.equal(r.tls?.ca?.toString(), "CA");
  assert.equal(r.tls?.cert?.toString(), "CERT");
  assert.equal(r.tls?.key?.toString(), "KEY");
  // options win over the environment
  const o = resolveOptions({ env, target: "127.0.0.1:1", token: "other", tls: { ca: "MINE" }, timeoutMs: 5 });
  assert.deepEqual([o.baseUrl, o.token, o.timeoutMs, o.tls?.ca?.toString()], ["https://127.0.0.1:1", "other", 5, "MINE"]);
  assert.equal(resolveOptions({ env, tls: false }).tls, undefined);
  assert.throws(() => resolveOptions({ env: { MOMENTS_CLIENT_CERT: cert }, target: "h:1" }), /needs its key/);
  assert.throws(() => resolveOptions({ env: { MOMENTS_CA_CERT: join(dir, "missing.pem") } }), /cannot read the CA bundle/);
});
