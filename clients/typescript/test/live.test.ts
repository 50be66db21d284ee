// Against a live server: MOMENTS_TARGET (host:port), MOMENTS_SAMPLE_VIDEO (a video file) and
// MOMENTS_SAMPLE_SCHEDULE (JSON [{start_s, end_s, caption}], what is on screen when), as tests/clients sets them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError, createMomentsClient, ingestFile } from "../src/index.js";

const target = process.env.MOMENTS_TARGET;
const videoPath = process.env.MOMENTS_SAMPLE_VIDEO;
const schedule: { start_s: number; end_s: number; caption: string }[] = JSON.parse(
  process.env.MOMENTS_SAMPLE_SCHEDULE ?? "[]",
);
const skip = !target || !videoPath ? "set MOMENTS_TARGET and MOMENTS_SAMPLE_VIDEO (tests/clients does)" : false;

test("ingest a generated video by stream, then find its red circle", { skip }, async () => {
  const client = createMomentsClient(target as string, { token: process.env.MOMENTS_TOKEN });
  const videoId = `ts-sample-${process.pid}`;
  let progress = 0;
  const done = await ingestFile(client, videoPath as string, { videoId, metadata: { lang: { kind: { case: "stringValue", value: "ts" } } } }, {
    onEvent: (e) => {
      if (e.event.case === "progress") progress += 1;
    },
  });
  try {
    assert.equal(done.video?.videoId, videoId);
    assert.ok(done.frames > 0, "frames stored");
    assert.ok(progress > 0, "progress events");

    const red = schedule.find((s) => s.caption === "a red circle");
    assert.ok(red, "the sample video shows a red circle");
    const result = await client.search({
      query: { case: "text", value: "a red circle" },
      topK: 3,
      filters: { videoIds: [videoId] },
    });
    assert.ok(result.moments.length > 0, "moments found");
    const best = result.moments[0];
    assert.equal(best.videoId, videoId);
    assert.ok(
      best.bestFrameS >= red.start_s - 0.5 && best.bestFrameS <= red.end_s + 0.5,
      `best frame ${best.bestFrameS} s lies in the red circle's ${red.start_s}-${red.end_s} s`,
    );
    assert.equal(best.metadata.lang?.kind.value, "ts");

    await assert.rejects(client.getVideo({ videoId: `${videoId}-missing` }), (e: unknown) => {
      assert.ok(e instanceof ConnectError);
      assert.equal(e.code, Code.NotFound);
      return true;
    });
  } finally {
    await client.deleteVideo({ videoId });
  }
});
