// LIVE ingest against a live server: MOMENTS_TARGET, MOMENTS_TOKEN, MOMENTS_LIVE_STREAM (an MPEG-TS file of
// 4 s per shape, 10 fps) and MOMENTS_LIVE_SCHEDULE (JSON [{start_s, end_s, caption}]), as tests/clients sets them.
// The file is streamed in chunks, held at its middle until the server has committed what came so far.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type Server, type Socket, createServer, connect as tcpConnect } from "node:net";
import { test } from "node:test";

import { type IngestCommitted, type Moments, connect } from "../src/index.js";

const target = process.env.MOMENTS_TARGET as string;
const streamPath = process.env.MOMENTS_LIVE_STREAM as string;
const schedule: { start_s: number; end_s: number; caption: string }[] = JSON.parse(
  process.env.MOMENTS_LIVE_SCHEDULE ?? "[]",
);
const skip = !target || !streamPath ? "set MOMENTS_TARGET and MOMENTS_LIVE_STREAM (tests/clients does)" : false;
const PIECE = 64 * 1024;

async function until(what: string, condition: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The file in 64 KiB pieces; at the middle it waits for `release()` to say go on. */
async function* camera(data: Uint8Array, release: () => boolean, sent: { bytes: number; ended: boolean }) {
  for (let i = 0; i < data.length; i += PIECE) {
    if (i >= data.length / 2) await until("the release of the stream's second half", release);
    yield data.subarray(i, i + PIECE);
    sent.bytes = i + PIECE;
  }
  sent.ended = true;
}

async function expectMoment(client: Moments, videoId: string, caption: string) {
  const slot = schedule.find((s) => s.caption === caption);
  assert.ok(slot, `the stream shows ${caption}`);
  const result = await client.search({ query: { case: "text", value: caption }, topK: 1, filters: { videoIds: [videoId] } });
  const best = result.moments[0];
  assert.ok(best, `a moment for ${caption}`);
  assert.ok(
    best.startS >= slot.start_s - 0.5 && best.startS < slot.end_s,
    `${caption} found at ${best.startS}-${best.endS} s, shown ${slot.start_s}-${slot.end_s} s`,
  );
}

test("a LIVE ingest commits segments while the stream runs, then ends complete and searchable", { skip }, async () => {
  const client = connect({ target });
  const data = readFileSync(streamPath);
  const videoId = `ts-live-${process.pid}`;
  const committed: IngestCommitted[] = [];
  const sent = { bytes: 0, ended: false };
  let beforeEnd = 0;
  try {
    const done = await client.ingestLive(videoId, camera(data, () => committed.length >= 2, sent), {
      segmentS: 2,
      header: { metadata: { lang: { kind: { case: "stringValue", value: "ts" } } } },
      onCommitted: (c, uploadId) => {
        assert.ok(uploadId, "the commit names the upload to resume");
        committed.push(c);
        if (!sent.ended) beforeEnd += 1;
      },
    });
    assert.ok(beforeEnd >= 2, `${beforeEnd} commits came before the stream ended`);
    const media = committed.map((c) => c.mediaS);
    assert.deepEqual(media, [...media].sort((a, b) => a - b));
    assert.equal(Number(committed.at(-1)?.bytes), data.length, "every byte stored");
    assert.equal(done.reconnects, 0);
    assert.equal(done.video?.state, "complete");
    assert.equal(done.frames, 16, "one frame a second of the 16 s stream");
    assert.equal((await client.getVideo({ videoId })).state, "complete");
    await expectMoment(client, videoId, "a red circle"); // committed before the hold
    await expectMoment(client, videoId, "a yellow cross"); // the stream's end
  } finally {
    await client.deleteVideo({ videoId }).catch(() => undefined);
    client.close();
  }
});

/** A TCP relay to the server whose connections can be cut: a link that drops. */
function relay(upstream: string): Promise<{ server: Server; target: string; cut: () => void }> {
  const [host, port] = [upstream.slice(0, upstream.lastIndexOf(":")), Number(upstream.slice(upstream.lastIndexOf(":") + 1))];
  const sockets = new Set<Socket>();
  const server = createServer((down) => {
    const up = tcpConnect(port, host);
    for (const s of [down, up]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    down.pipe(up);
    up.pipe(down);
  });
  const cut = () => {
    for (const s of sockets) s.destroy();
  };
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as { port: number };
      resolve({ server, target: `127.0.0.1:${address.port}`, cut });
    }),
  );
}

test("a dropped connection resumes where the server's commits stand, without losing or repeating a second", { skip }, async () => {
  const link = await relay(target);
  const client = connect({ target: link.target });
  const data = readFileSync(streamPath);
  const videoId = `ts-resume-${process.pid}`;
  let commits = 0;
  let accepted = 0;
  const reconnects: string[] = [];
  try {
    const done = await client.ingestLive(
      videoId,
      // the second half goes once a new connection has resumed the stream
      camera(data, () => accepted >= 2, { bytes: 0, ended: false }),
      {
        segmentS: 2,
        backoffMs: 100,
        onCommitted: () => {
          commits += 1;
          if (!reconnects.length) link.cut(); // the first commit is in: the link drops
        },
        onEvent: (e) => {
          if (e.event.case === "accepted") accepted += 1;
        },
        onReconnect: (r) => reconnects.push(`${r.error.code}: ${r.error.rawMessage} (resume at ${r.offset})`),
      },
    );
    assert.ok(done.reconnects >= 1, "the stream reconnected");
    assert.ok(reconnects.length >= 1 && commits >= 2, `${commits} commits, reconnects: ${reconnects.join("; ")}`);
    assert.equal(done.video?.state, "complete");
    assert.equal(done.video?.sizeBytes, BigInt(data.length), "the stored stream is the file, byte for byte in length");
    assert.equal(done.frames, 16, "each second once: none lost at the break, none repeated");
    await expectMoment(client, videoId, "a red circle");
    await expectMoment(client, videoId, "a green triangle");
  } finally {
    await client.deleteVideo({ videoId }).catch(() => undefined);
    client.close();
    link.cut();
    link.server.close();
  }
});

test("a source that fails breaks the stream; a later call resumes it from an older offset", { skip }, async () => {
  const client = connect({ target });
  const data = readFileSync(streamPath);
  const videoId = `ts-later-${process.pid}`;
  let uploadId = "";
  let stored = 0;
  try {
    async function* failing() {
      for (let i = 0; i < data.length; i += PIECE) {
        if (i >= data.length / 2) {
          await until("a commit", () => stored > 0);
          throw new Error("camera unplugged");
        }
        yield data.subarray(i, i + PIECE);
      }
    }
    await assert.rejects(
      client.ingestLive(videoId, failing(), {
        segmentS: 2,
        onCommitted: (c, id) => {
          uploadId = id;
          stored = Number(c.bytes);
        },
      }),
      /camera unplugged/, // the source's own error, not retried
    );
    let state = "";
    for (let i = 0; i < 100 && state !== "interrupted"; i++) {
      if (i) await new Promise((resolve) => setTimeout(resolve, 100));
      state = (await client.getVideo({ videoId })).state; // "live" until the server sees the stream broken
    }
    assert.equal(state, "interrupted");
    // another process resumes with the whole file from offset 0: the server names its offset, the client
    // skips the bytes it has
    async function* whole() {
      for (let i = 0; i < data.length; i += PIECE) yield data.subarray(i, i + PIECE);
    }
    const done = await client.ingestLive(videoId, whole(), { segmentS: 2, resume: { uploadId, offset: 0 } });
    assert.equal(done.uploadId, uploadId);
    assert.equal(done.video?.state, "complete");
    assert.equal(done.video?.sizeBytes, BigInt(data.length));
    assert.equal(done.frames, 16);
    await expectMoment(client, videoId, "a blue square");
  } finally {
    await client.deleteVideo({ videoId }).catch(() => undefined);
    client.close();
  }
});
