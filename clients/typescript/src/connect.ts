// The connection: a gRPC transport over HTTP/2 (TLS or plaintext), a deadline on every call, keepalive pings for
// long ingest streams and an optional bearer token. Settings come from the options, else from the environment
// variables the Python CLI reads (MOMENTS_TARGET, MOMENTS_TOKEN, MOMENTS_CA_CERT, MOMENTS_CLIENT_CERT,
// MOMENTS_CLIENT_KEY, MOMENTS_TIMEOUT).
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

import { type Client, Code, ConnectError, type Interceptor, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import { type IngestDone, type IngestEvent, VideoSearch } from "./gen/moments/v1/moments_pb.js";
import { type HeaderInit, ingestFile } from "./ingest.js";
import { type LiveIngestOptions, type LiveIngestResult, ingestLive } from "./live.js";

export type MomentsClient = Client<typeof VideoSearch>;

export const DEFAULT_TARGET = "127.0.0.1:50051";

/** Certificates as PEM text or bytes, or PEM files. Any of them left out is taken from the environment. */
export interface TlsOptions {
  /** CA bundle the server's certificate must chain to (default: the system's roots; env MOMENTS_CA_CERT). */
  ca?: string | Uint8Array;
  caFile?: string;
  /** Client certificate and its key, for servers that require one (mTLS; env MOMENTS_CLIENT_CERT/_KEY). */
  cert?: string | Uint8Array;
  certFile?: string;
  key?: string | Uint8Array;
  keyFile?: string;
  /** The name the server's certificate must carry when it differs from the target's host. */
  serverName?: string;
}

export interface ConnectOptions {
  /** `host:port` or an `http://` / `https://` URL (env MOMENTS_TARGET; default 127.0.0.1:50051). */
  target?: string;
  /** Sent as `authorization: Bearer <token>` on every call (env MOMENTS_TOKEN). */
  token?: string;
  /**
   * `true`: TLS with the system's roots; an object: TLS with these certificates; `false`: plaintext.
   * Left out: TLS when MOMENTS_CA_CERT or MOMENTS_CLIENT_CERT is set or the target is not a loopback address,
   * plaintext for loopback targets (127.0.0.0/8, ::1, localhost) as the server allows plaintext only there.
   */
  tls?: boolean | TlsOptions;
  /** Deadline of each call unless the call passes its own `timeoutMs` (env MOMENTS_TIMEOUT in seconds; 30 s). */
  timeoutMs?: number;
  /** Where the MOMENTS_* defaults are read from (default `process.env`). */
  env?: Record<string, string | undefined>;
}

/** What `connect` makes of its options and the environment (exported for tests and diagnostics). */
export interface Resolved {
  baseUrl: string;
  token?: string;
  timeoutMs: number;
  /** Undefined for plaintext. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string };
}

/** `localhost`, 127.0.0.0/8 and ::1: the addresses the server serves plaintext on without --allow-insecure. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost") || h === "::1") return true;
  return isIP(h) === 4 && h.startsWith("127.");
}

function pem(value: string | Uint8Array | undefined, file: string | undefined, what: string): Buffer | undefined {
  if (value !== undefined) return Buffer.from(value);
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read the ${what} ${file}: ${(e as Error).message}`);
  }
}

export function resolveOptions(options: ConnectOptions = {}): Resolved {
  const env = options.env ?? process.env;
  const target = options.target ?? env.MOMENTS_TARGET ?? DEFAULT_TARGET;
  const token = options.token ?? (env.MOMENTS_TOKEN || undefined);
  const envTimeout = env.MOMENTS_TIMEOUT ? Number(env.MOMENTS_TIMEOUT) * 1000 : undefined;
  const timeoutMs = options.timeoutMs ?? (envTimeout !== undefined && envTimeout > 0 ? envTimeout : 30_000);
  const given = typeof options.tls === "object" ? options.tls : {};
  const caFile = given.caFile ?? (env.MOMENTS_CA_CERT || undefined);
  const certFile = given.certFile ?? (env.MOMENTS_CLIENT_CERT || undefined);
  const keyFile = given.keyFile ?? (env.MOMENTS_CLIENT_KEY || undefined);

  const scheme = /^(https?):\/\//i.exec(target)?.[1]?.toLowerCase();
  const url = new URL(scheme ? target : `http://${target}`);
  if (!url.port && !scheme) throw new Error(`target ${JSON.stringify(target)} is not host:port`);
  let secure: boolean;
  if (options.tls === false) secure = false;
  else if (options.tls !== undefined) secure = true;
  else if (scheme) secure = scheme === "https";
  else secure = Boolean(caFile || certFile || given.ca || given.cert) || !isLoopback(url.hostname);
  if (scheme === "http" && secure && options.tls !== undefined)
    throw new Error(`target ${target} says http:// (plaintext) but tls is set`);
  if (scheme === "https" && !secure) throw new Error(`target ${target} says https:// but tls is false`);
  const baseUrl = `${secure ? "https" : "http"}://${url.host}`;
  if (!secure) return { baseUrl, token, timeoutMs };

  const cert = pem(given.cert, certFile, "client certificate");
  const key = pem(given.key, keyFile, "client key");
  if (Boolean(cert) !== Boolean(key))
    throw new Error("a client certificate needs its key and a key its certificate (certFile + keyFile)");
  return {
    baseUrl,
    token,
    timeoutMs,
    tls: { ca: pem(given.ca, caFile, "CA bundle"), cert, key, servername: given.serverName },
  };
}

// Node's names for a server certificate that is not trusted, and for a handshake the server refused.
const UNTRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

// How a call ends when its connection failed (rather than the server answering with a status).
const LINK_CODES = new Set([Code.Canceled, Code.Unavailable, Code.Internal, Code.Unknown]);

function nodeCode(e: unknown): string | undefined {
  for (let c: unknown = e, i = 0; c && i < 5; c = (c as { cause?: unknown }).cause, i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/**
 * A TLS failure as an error that says what to fix; any other error as it is. `sessionError` is the HTTP/2
 * connection's own error: a server that refuses the client's certificate (TLS 1.3) closes the connection after
 * the handshake, and the call only sees its stream cancelled.
 */
export function explainTlsError(e: unknown, baseUrl: string, sessionError?: unknown): unknown {
  if (!(e instanceof ConnectError)) return e;
  const code = nodeCode(e.cause) ?? nodeCode(sessionError);
  if (!code) return e;
  let hint: string | undefined;
  if (UNTRUSTED.has(code))
    hint =
      `the server's certificate at ${baseUrl} is not trusted (${code}: ${e.rawMessage}): ` +
      "give the CA that signed it (tls.caFile or MOMENTS_CA_CERT), or check the target's host name";
  else if (/CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|BAD_CERTIFICATE|UNKNOWN_CA/.test(code))
    hint =
      `the server at ${baseUrl} refused the TLS handshake (${code}): it may require a client certificate its ` +
      "CA accepts (tls.certFile + tls.keyFile, or MOMENTS_CLIENT_CERT + MOMENTS_CLIENT_KEY)";
  else if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "EPROTO")
    hint = `${baseUrl} does not speak TLS (${code}): connect with tls: false if it serves plaintext`;
  return hint ? new ConnectError(hint, Code.Unavailable, undefined, undefined, e.cause ?? sessionError) : e;
}

export interface Moments extends MomentsClient {
  /** The URL the calls go to (`https://` when TLS is on). */
  readonly baseUrl: string;
  /** Upload a file and wait until the video is searchable (see ingest.ts). */
  ingestFile(
    path: string,
    header: HeaderInit,
    options?: { onEvent?: (event: IngestEvent) => void; timeoutMs?: number },
  ): Promise<IngestDone>;
  /** Stream a live source until it ends, resuming after dropped connections (see live.ts). */
  ingestLive(videoId: string, source: AsyncIterable<Uint8Array>, options?: LiveIngestOptions): Promise<LiveIngestResult>;
  /** Close the HTTP/2 connection (calls in flight fail). */
  close(): void;
}

/**
 * A client for a Moments server: the generated client's methods (search, ingest, getVideo...) on one
 * HTTP/2 connection. See ConnectOptions for TLS, tokens and their environment variables.
 */
export function connect(options: ConnectOptions = {}): Moments {
  const r = resolveOptions(options);
  const interceptors: Interceptor[] = [];
  if (r.token) {
    const header = `Bearer ${r.token}`;
    interceptors.push((next) => async (req) => {
      req.header.set("authorization", header);
      return await next(req);
    });
  }
  // the HTTP/2 connection's error may come a moment after the call's (see explainTlsError)
  const sessionManager = new Http2SessionManager(
    r.baseUrl,
    { pingIntervalMs: 30_000, pingTimeoutMs: 20_000 }, // the server accepts pings every 10 s
    r.tls ? { ...r.tls } : {},
  );
  const explain = async (e: unknown, signal: AbortSignal, beforeResponse: boolean) => {
    if (!(e instanceof ConnectError) || nodeCode(e.cause)) return explainTlsError(e, r.baseUrl);
    if (!LINK_CODES.has(e.code)) return e; // the server's own answer
    let closed = false;
    for (let i = 0; i < 10 && !closed; i++) {
      await new Promise((resolve) => setTimeout(resolve, i && 5));
      closed = sessionManager.state() === "closed" || sessionManager.state() === "error";
    }
    const explained = explainTlsError(e, r.baseUrl, sessionManager.error());
    if (explained !== e || !r.tls || r.tls.cert || !beforeResponse) return explained;
    // A server that requires a client certificate and got none closes the connection right after the
    // handshake without an alert that Node reports: the call sees its stream cancelled before any response,
    // and the connection closed.
    if (e.code === Code.Canceled && !signal.aborted && closed && /stream closed/.test(e.rawMessage))
      return new ConnectError(
        `the server at ${r.baseUrl} closed the connection after the TLS handshake: it may require a client ` +
          "certificate (tls.certFile + tls.keyFile, or MOMENTS_CLIENT_CERT + MOMENTS_CLIENT_KEY)",
        Code.Unavailable,
      );
    return e;
  };
  if (r.tls) {
    interceptors.push((next) => async (req) => {
      try {
        const res = await next(req);
        if (!res.stream) return res;
        const messages = res.message;
        return {
          ...res,
          message: (async function* () {
            try {
              yield* messages;
            } catch (e) {
              throw await explain(e, req.signal, false);
            }
          })(),
        };
      } catch (e) {
        throw await explain(e, req.signal, true);
      }
    });
  }
  const transport = createGrpcTransport({
    baseUrl: r.baseUrl,
    interceptors,
    defaultTimeoutMs: r.timeoutMs,
    sessionManager,
  });
  const client = createClient(VideoSearch, transport);
  return Object.assign(client, {
    baseUrl: r.baseUrl,
    ingestFile: (path: string, header: HeaderInit, opts?: Parameters<typeof ingestFile>[3]) =>
      ingestFile(client, path, header, opts),
    ingestLive: (videoId: string, source: AsyncIterable<Uint8Array>, opts?: LiveIngestOptions) =>
      ingestLive(client, videoId, source, opts),
    close: () => sessionManager.abort(),
  });
}

/** A client for `host:port` (or a full `http(s)://` URL): `connect({ target, ...options })`. */
export function createMomentsClient(target: string, options: Omit<ConnectOptions, "target"> = {}): Moments {
  return connect({ ...options, target });
}
