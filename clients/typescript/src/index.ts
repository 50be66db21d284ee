// A thin layer over the generated client (src/gen, from `buf generate`): a transport speaking gRPC over HTTP/2
// with a deadline on every call, keepalive pings for long ingest streams and an optional bearer token, plus a
// helper that streams a file to Ingest in 256 KiB chunks.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { basename } from "node:path";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  type IngestDone,
  type IngestEvent,
  type IngestHeaderSchema,
  type IngestRequestSchema,
  VideoSearch,
} from "./gen/moments/v1/moments_pb.js";

export * from "./gen/moments/v1/moments_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

export type MomentsClient = Client<typeof VideoSearch>;

export interface MomentsClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** https instead of plaintext HTTP/2 (a target with a scheme wins). */
  tls?: boolean;
  /** Deadline of each call unless the call passes its own `timeoutMs` (default 30 s). */
  timeoutMs?: number;
}

export const CHUNK_SIZE = 256 * 1024;

/** A client for `host:port` (or a full `http(s)://` URL). */
export function createMomentsClient(target: string, options: MomentsClientOptions = {}): MomentsClient {
  const baseUrl = /^https?:\/\//.test(target) ? target : `${options.tls ? "https" : "http"}://${target}`;
  const interceptors: Interceptor[] = [];
  const token = options.token;
  if (token) {
    interceptors.push((next) => async (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return await next(req);
    });
  }
  const transport = createGrpcTransport({
    baseUrl,
    interceptors,
    defaultTimeoutMs: options.timeoutMs ?? 30_000,
    // the server accepts pings every 10 s; a link that does not answer within 20 s is dead
    pingIntervalMs: 30_000,
    pingTimeoutMs: 20_000,
  });
  return createClient(VideoSearch, transport);
}

type HeaderInit = MessageInitShape<typeof IngestHeaderSchema>;
type RequestInit = MessageInitShape<typeof IngestRequestSchema>;

/** The Ingest request stream for a file: the header (filename and size filled in), then its bytes. */
export async function* ingestRequests(path: string, header: HeaderInit, chunkSize = CHUNK_SIZE): AsyncGenerator<RequestInit> {
  const size = (await stat(path)).size;
  yield { payload: { case: "header", value: { filename: basename(path), sizeBytes: BigInt(size), ...header } } };
  for await (const chunk of createReadStream(path, { highWaterMark: chunkSize })) {
    yield { payload: { case: "chunk", value: chunk as Buffer } };
  }
}

/** Upload a file and wait until the video is searchable; `onEvent` sees accepted/progress/done events. */
export async function ingestFile(
  client: MomentsClient,
  path: string,
  header: HeaderInit,
  options: { onEvent?: (event: IngestEvent) => void; timeoutMs?: number } = {},
): Promise<IngestDone> {
  let done: IngestDone | undefined;
  const events = client.ingest(ingestRequests(path, header), { timeoutMs: options.timeoutMs ?? 3_600_000 });
  for await (const event of events) {
    options.onEvent?.(event);
    if (event.event.case === "done") done = event.event.value;
  }
  if (!done) throw new Error("the ingest stream ended without a done event");
  return done;
}
