// The Moments TypeScript client: the generated messages and service (src/gen, from `buf generate`), a
// connection with TLS and tokens (connect.ts), file uploads (ingest.ts) and live streams (live.ts).
export * from "./gen/moments/v1/moments_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
export {
  type ConnectOptions,
  DEFAULT_TARGET,
  type Moments,
  type MomentsClient,
  type Resolved,
  type TlsOptions,
  connect,
  createMomentsClient,
  explainTlsError,
  isLoopback,
  resolveOptions,
} from "./connect.js";
export { CHUNK_SIZE, END_REQUEST, type HeaderInit, type RequestInit, ingestFile, ingestRequests } from "./ingest.js";
export { type LiveIngestOptions, type LiveIngestResult, ingestLive } from "./live.js";
