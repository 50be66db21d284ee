// TLS and mTLS against live servers that tests/clients started with test certificates: MOMENTS_TEST_TLS_TARGET
// (--tls-cert/--tls-key), MOMENTS_TEST_MTLS_TARGET (and --tls-client-ca), MOMENTS_TEST_CA (their CA),
// MOMENTS_TEST_WRONG_CA (another CA), MOMENTS_TEST_CLIENT_CERT/_KEY (signed by their CA); both need MOMENTS_TOKEN.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError, connect } from "../src/index.js";

const e = process.env;
const tlsTarget = e.MOMENTS_TEST_TLS_TARGET as string;
const mtlsTarget = e.MOMENTS_TEST_MTLS_TARGET as string;
const ca = e.MOMENTS_TEST_CA as string;
const skip = !tlsTarget || !mtlsTarget || !ca ? "set MOMENTS_TEST_TLS_TARGET etc. (tests/clients does)" : false;
const token = e.MOMENTS_TOKEN;

function refused(pattern: RegExp, code = Code.Unavailable) {
  return (err: unknown) => {
    assert.ok(err instanceof ConnectError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}

test("TLS: search over TLS with the CA from the options or from MOMENTS_CA_CERT, the token from MOMENTS_TOKEN", { skip }, async () => {
  const client = connect({ target: tlsTarget, token, tls: { caFile: ca } });
  try {
    assert.equal(client.baseUrl, `https://${tlsTarget}`);
    assert.equal((await client.info({})).model?.name, "shapes-demo");
    const result = await client.search({ query: { case: "text", value: "a red circle" }, topK: 3 });
    assert.deepEqual(result.moments, []); // a new, empty library
  } finally {
    client.close();
  }
  // everything from the environment, as the Python CLI reads it
  const fromEnv = connect({ env: { MOMENTS_TARGET: tlsTarget, MOMENTS_CA_CERT: ca, MOMENTS_TOKEN: token } });
  try {
    assert.equal((await fromEnv.info({})).model?.name, "shapes-demo");
  } finally {
    fromEnv.close();
  }
  // the token matters: without it the server says so
  const anonymous = connect({ target: tlsTarget, tls: { caFile: ca }, env: {} });
  try {
    await assert.rejects(anonymous.info({}), refused(/token/i, Code.Unauthenticated));
  } finally {
    anonymous.close();
  }
});

test("TLS: a wrong CA, or the system's roots, fail with an error that names the fix", { skip }, async () => {
  for (const tls of [{ caFile: e.MOMENTS_TEST_WRONG_CA as string }, true]) {
    const client = connect({ target: tlsTarget, token, tls, env: {} });
    try {
      await assert.rejects(client.info({}), refused(/certificate at https:\/\/.* is not trusted.*MOMENTS_CA_CERT/));
    } finally {
      client.close();
    }
  }
  // plaintext to a TLS listener does not get through either
  const plain = connect({ target: tlsTarget, token, tls: false, env: {} });
  try {
    await assert.rejects(plain.info({ }, { timeoutMs: 5_000 }), (err: unknown) => err instanceof ConnectError);
  } finally {
    plain.close();
  }
});

test("mTLS: the client certificate from the options or the environment; none is refused", { skip }, async () => {
  const certFile = e.MOMENTS_TEST_CLIENT_CERT as string;
  const keyFile = e.MOMENTS_TEST_CLIENT_KEY as string;
  const client = connect({ target: mtlsTarget, token, tls: { caFile: ca, certFile, keyFile }, env: {} });
  try {
    assert.equal((await client.info({})).model?.name, "shapes-demo");
  } finally {
    client.close();
  }
  const env = { MOMENTS_CA_CERT: ca, MOMENTS_CLIENT_CERT: certFile, MOMENTS_CLIENT_KEY: keyFile, MOMENTS_TOKEN: token };
  const fromEnv = connect({ target: mtlsTarget, env });
  try {
    const result = await fromEnv.search({ query: { case: "text", value: "a blue square" }, topK: 1 });
    assert.deepEqual(result.moments, []);
  } finally {
    fromEnv.close();
  }
  const noCert = connect({ target: mtlsTarget, token, tls: { caFile: ca }, env: {} });
  try {
    await assert.rejects(noCert.info({}, { timeoutMs: 10_000 }), refused(/client certificate/));
  } finally {
    noCert.close();
  }
});
