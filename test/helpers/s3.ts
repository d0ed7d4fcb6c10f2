/**
 * A real S3-protocol server (s3rver) on 127.0.0.1 for the remote-store tests, with one bucket,
 * its data in the test's own temp dir. stop() takes it down (to inject an outage) and start()
 * brings it back on the same port with the same data.
 */
import crypto from "node:crypto";
import { mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { posix } from "node:path";
import type S3rverClass from "s3rver";
import { freePort } from "./node.ts";

// Two things s3rver takes from Node that Bun does differently, both met only by a listing past
// one page (1000 keys), which then loses keys or fails:
// - it walks the bucket's folders expecting readdirSync's entries sorted (libuv sorts them;
//   Bun gives the directory's own order), and a page's continuation token is its last key;
// - it makes that token with the cipher named "des", an OpenSSL alias Bun's crypto does not
//   know ("Unknown cipher", InternalError); "des-cbc" is the cipher the alias names.
// Both are mended here, before s3rver's store module takes its copy of the walk.
const load = createRequire(import.meta.url);
const s3rverUtils = load("s3rver/lib/utils.js") as { walk: (dir: string, recurse?: (dir: string) => boolean) => Generator<string> };
s3rverUtils.walk = function* walk(dir: string, recurse?: (dir: string) => boolean): Generator<string> {
  for (const name of readdirSync(dir).sort()) {
    const path = posix.join(dir, name);
    if (!statSync(path).isDirectory()) yield path;
    else if (!recurse || recurse(path)) yield* walk(path, recurse);
  }
};
for (const name of ["createCipheriv", "createDecipheriv"] as const) {
  const original = crypto[name] as (algorithm: string, ...rest: unknown[]) => unknown;
  (crypto as unknown as Record<string, unknown>)[name] = (algorithm: string, ...rest: unknown[]) => original(algorithm === "des" ? "des-cbc" : algorithm, ...rest);
}
const S3rver = load("s3rver") as typeof S3rverClass;

export const S3_BUCKET = "cairn-test";

export interface S3Server {
  port: number;
  endpoint: string;
  /** Environment for cairn: endpoint, region and the s3rver credentials. */
  env: Record<string, string>;
  /** Where s3rver keeps the bucket's objects on disk. */
  dir: string;
  url(prefix: string): string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startS3(dir: string): Promise<S3Server> {
  mkdirSync(dir, { recursive: true });
  const port = freePort();
  let server: S3rverClass | undefined;
  const endpoint = `http://127.0.0.1:${port}`;
  const s: S3Server = {
    port,
    endpoint,
    dir,
    env: {
      S3_ENDPOINT: endpoint,
      S3_REGION: "us-east-1",
      S3_ACCESS_KEY_ID: "S3RVER",
      S3_SECRET_ACCESS_KEY: "S3RVER",
    },
    url: (prefix) => `s3://${S3_BUCKET}/${prefix}`,
    async start() {
      server = new S3rver({ port, address: "127.0.0.1", silent: true, directory: dir, configureBuckets: [{ name: S3_BUCKET, configs: [] }] });
      await server.run();
    },
    async stop() {
      await server?.close();
      server = undefined;
    },
  };
  await s.start();
  return s;
}

/** Objects under `prefix` in the server's bucket, with their sizes (read through the server). */
export async function listObjects(s: S3Server, prefix: string): Promise<Map<string, number>> {
  const client = new Bun.S3Client({ endpoint: s.endpoint, bucket: S3_BUCKET, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", region: "us-east-1" });
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await client.list({ prefix, ...(token ? { continuationToken: token } : {}) });
    for (const o of page.contents ?? []) out.set(o.key, o.size ?? 0);
    token = page.isTruncated ? page.nextContinuationToken : undefined;
  } while (token);
  return out;
}

function clientOf(s: S3Server): Bun.S3Client {
  return new Bun.S3Client({ endpoint: s.endpoint, bucket: S3_BUCKET, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", region: "us-east-1" });
}

/** Read one object of the server's bucket. */
export async function getObject(s: S3Server, key: string): Promise<Uint8Array> {
  return clientOf(s).file(key).bytes();
}

/** Write one object into the server's bucket (e.g. a stray file for retention to collect). */
export async function putObject(s: S3Server, key: string, data: Uint8Array | string): Promise<void> {
  await clientOf(s).write(key, data);
}

/**
 * Let s3rver accept another access key (it checks that the key id exists; it does not verify
 * V4 signatures, so the secret itself is never checked by the server).
 */
export function addS3Credentials(accessKeyId: string, secretAccessKey: string): void {
  // the same module instance s3rver's authentication reads its key registry from
  const { DUMMY_ACCOUNT } = createRequire(import.meta.url)("s3rver/lib/models/account.js") as {
    DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void };
  };
  DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey);
}
