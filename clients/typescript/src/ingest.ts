// File uploads: the Ingest request stream for a file (header, then 256 KiB chunks) and a helper that waits for
// the video to be searchable.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { basename } from "node:path";

import type { MessageInitShape } from "@bufbuild/protobuf";

import type { MomentsClient } from "./connect.js";
import type { IngestDone, IngestEvent, IngestHeaderSchema, IngestRequestSchema } from "./gen/moments/v1/moments_pb.js";

export const CHUNK_SIZE = 256 * 1024;

export type HeaderInit = MessageInitShape<typeof IngestHeaderSchema>;
export type RequestInit = MessageInitShape<typeof IngestRequestSchema>;

/**
 * The last request of a stream whose source has ended (IngestRequest.end): the server takes the stream for
 * complete by it, not by the end of the requests, which a broken call gives too. Never sent on a cut stream.
 * A stream that sends it says so in its header (sendsEnd): then one that ends without it is broken, never complete.
 */
export const END_REQUEST: RequestInit = { payload: { case: "end", value: {} } };

/**
 * The Ingest request stream for a file: the header (filename and size filled in, sendsEnd set), its bytes,
 * END_REQUEST.
 */
export async function* ingestRequests(path: string, header: HeaderInit, chunkSize = CHUNK_SIZE): AsyncGenerator<RequestInit> {
  const size = (await stat(path)).size;
  yield {
    payload: { case: "header", value: { filename: basename(path), sizeBytes: BigInt(size), ...header, sendsEnd: true } },
  };
  for await (const chunk of createReadStream(path, { highWaterMark: chunkSize })) {
    yield { payload: { case: "chunk", value: chunk as Buffer } };
  }
  yield END_REQUEST;
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
