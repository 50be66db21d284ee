// LIVE ingest (IngestMode LIVE): stream container bytes that arrive over time (MPEG-TS, Matroska, fragmented
// MP4) as one video that the server commits every `segmentS` seconds, searchable at each commit. After a
// dropped connection the stream resumes where the server stands (resume_upload_id + the committed offset):
// the bytes read from the source since the last commit are kept until the server commits them, and resent.
import { Code, ConnectError } from "@connectrpc/connect";

import type { MomentsClient } from "./connect.js";
import {
  type IngestCommitted,
  type IngestDone,
  type IngestEvent,
  IngestMode,
} from "./gen/moments/v1/moments_pb.js";
import { CHUNK_SIZE, END_REQUEST, type HeaderInit, type RequestInit } from "./ingest.js";

export interface LiveIngestOptions {
  /** The rest of the header: metadata, sampling, replace, thumbnails, filename. */
  header?: Pick<Extract<HeaderInit, { $typeName?: undefined }>, "filename" | "metadata" | "sampling" | "replace" | "thumbnails">;
  /** Seconds of video per committed segment (0 or left out: the server's default, Info.limits.liveSegmentS). */
  segmentS?: number;
  /** Continue a stream that an earlier call (or process) started: the source yields its bytes from `offset`. */
  resume?: { uploadId: string; offset: number | bigint };
  /** Each commit: the bytes stored and the media time searchable so far, with the id to resume with. */
  onCommitted?: (committed: IngestCommitted, uploadId: string) => void;
  /** Every event (accepted, progress, committed, done) of every connection. */
  onEvent?: (event: IngestEvent) => void;
  /** A reconnect about to happen after `error`, in `delayMs`, resuming at byte `offset`. */
  onReconnect?: (info: { attempt: number; delayMs: number; error: ConnectError; offset: number }) => void;
  /** Reconnects in a row without a commit between them before giving up (default 5; 0: never reconnect). */
  retries?: number;
  /** First wait before reconnecting, doubled each time up to `maxBackoffMs` (defaults 500 and 10 000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  chunkSize?: number;
  /** Deadline of each connection (default none: a live stream may never end). */
  timeoutMs?: number;
  /** Aborting ends the stream as broken: what was committed stays, the video is "interrupted". */
  signal?: AbortSignal;
}

export interface LiveIngestResult extends IngestDone {
  /** The id the stream was resumable with. */
  uploadId: string;
  /** Connections made after the first. */
  reconnects: number;
}

// Codes after which the link, not the request, is what failed: worth another connection. A connection that
// drops closes its streams as CANCELED (when the caller's signal did not abort, that is the link).
const TRANSIENT = new Set([Code.Canceled, Code.Unavailable, Code.Internal, Code.Unknown, Code.Aborted]);

/** The bytes read from the source and not yet committed, by their offset in the whole stream. */
class Retained {
  private chunks: Uint8Array[] = [];
  start: number;
  end: number;

  constructor(start: number) {
    this.start = this.end = start;
  }

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.end += chunk.length;
  }

  /** Drop the chunks that lie wholly before `offset` (committed by the server). */
  trim(offset: number): void {
    while (this.chunks.length && this.start + this.chunks[0].length <= offset) {
      this.start += (this.chunks.shift() as Uint8Array).length;
    }
  }

  /** The bytes from `offset` to the end of the chunk holding it; undefined when none are read yet. */
  at(offset: number): Uint8Array | undefined {
    let pos = this.start;
    for (const chunk of this.chunks) {
      if (offset < pos + chunk.length) return chunk.subarray(offset - pos);
      pos += chunk.length;
    }
    return undefined;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Stream `source` as the LIVE video `videoId` until the source ends; resolves with the final video (state
 * "complete") once the server has committed the last segment. A dropped connection is resumed with backoff
 * where the server's commits stand; an error of the request itself (INVALID_ARGUMENT, ALREADY_EXISTS...) or
 * of the source rejects at once.
 */
export async function ingestLive(
  client: MomentsClient,
  videoId: string,
  source: AsyncIterable<Uint8Array>,
  options: LiveIngestOptions = {},
): Promise<LiveIngestResult> {
  const chunkSize = options.chunkSize ?? CHUNK_SIZE;
  const retries = options.retries ?? 5;
  const streamStart = Number(options.resume?.offset ?? 0);
  const retained = new Retained(streamStart);
  const reader = source[Symbol.asyncIterator]();
  let ended = false;
  let sourceFailed: { error: unknown } | undefined;
  let pulling: Promise<void> | undefined;

  // One read of the source at a time, shared by the connections: a read that a dropped connection was
  // waiting for lands in `retained` for the next one.
  const pull = (): Promise<void> =>
    (pulling ??= (async () => {
      try {
        const next = await reader.next();
        if (next.done) ended = true;
        else
          for (let i = 0; i < next.value.length; i += chunkSize)
            retained.push(next.value.subarray(i, Math.min(i + chunkSize, next.value.length)));
      } catch (error) {
        sourceFailed = { error };
        ended = true;
      } finally {
        pulling = undefined;
      }
    })());

  async function* requests(header: HeaderInit, from: number, open: { live: boolean }): AsyncGenerator<RequestInit> {
    yield { payload: { case: "header", value: header } };
    let pos = from;
    while (open.live) {
      const piece = retained.at(pos);
      if (piece) {
        pos += piece.length;
        yield { payload: { case: "chunk", value: piece } };
      } else if (sourceFailed) {
        throw sourceFailed.error; // ends the call as broken: the video is "interrupted", not "complete"
      } else if (ended) {
        yield END_REQUEST; // a clean end: the server commits the rest and marks the video "complete"
        return;
      } else {
        await pull();
      }
    }
  }

  let uploadId = options.resume?.uploadId ?? "";
  let committed = streamStart; // what the server is known to have stored
  let resumeAt: { uploadId: string; offset: number } | undefined = options.resume
    ? { uploadId, offset: streamStart }
    : undefined;
  let failures = 0;
  let reconnects = 0;

  for (;;) {
    const header: HeaderInit = {
      filename: "live",
      ...options.header,
      videoId,
      mode: IngestMode.LIVE,
      segmentS: options.segmentS ?? 0,
      sendsEnd: true, // a connection that ends without END_REQUEST is broken: "interrupted", never "complete"
    };
    if (resumeAt) {
      header.resumeUploadId = resumeAt.uploadId;
      header.resumeOffset = BigInt(resumeAt.offset);
      header.replace = false; // a resumed stream continues its own video
    }
    const open = { live: true };
    let done: IngestDone | undefined;
    try {
      const events = client.ingest(requests(header, resumeAt?.offset ?? streamStart, open), {
        timeoutMs: options.timeoutMs ?? 0,
        signal: options.signal,
      });
      for await (const event of events) {
        options.onEvent?.(event);
        const e = event.event;
        if (e.case === "accepted") {
          uploadId = e.value.uploadId;
        } else if (e.case === "committed") {
          committed = Number(e.value.bytes);
          retained.trim(committed);
          failures = 0;
          options.onCommitted?.(e.value, uploadId);
        } else if (e.case === "done") {
          done = e.value;
        }
      }
    } catch (err) {
      open.live = false;
      if (sourceFailed) throw sourceFailed.error;
      const error = ConnectError.from(err);
      if (options.signal?.aborted) throw error;
      // the server stored more than the last commit we heard of: it names the offset to resume from
      const named = /resume from offset (\d+)/.exec(error.rawMessage);
      if (resumeAt && error.code === Code.FailedPrecondition && named) {
        const offset = Number(named[1]);
        if (offset !== resumeAt.offset && offset >= retained.start) {
          while (retained.end < offset && !ended) await pull(); // a caller's resume from an older offset
          const failed = sourceFailed as { error: unknown } | undefined; // set by pull()
          if (failed) throw failed.error;
          if (offset <= retained.end) {
            retained.trim(offset);
            committed = offset;
            resumeAt = { uploadId: resumeAt.uploadId, offset };
            continue;
          }
        }
      }
      // nothing of the stream was committed, so there is nothing to resume: start it again from its first byte
      if (resumeAt && !options.resume && error.code === Code.NotFound && retained.start === 0) {
        resumeAt = undefined;
        continue;
      }
      if (!TRANSIENT.has(error.code) || failures >= retries) throw error;
      const delayMs = Math.min((options.backoffMs ?? 500) * 2 ** failures, options.maxBackoffMs ?? 10_000);
      failures += 1;
      reconnects += 1;
      // with an upload id, resume even when no commit was heard of: the server says where it stands
      resumeAt = uploadId ? { uploadId, offset: committed } : undefined;
      options.onReconnect?.({ attempt: failures, delayMs, error, offset: resumeAt?.offset ?? 0 });
      await sleep(delayMs, options.signal);
      continue;
    } finally {
      open.live = false;
    }
    if (!done) throw new ConnectError("the live ingest stream ended without a done event", Code.DataLoss);
    return Object.assign(done, { uploadId, reconnects });
  }
}
