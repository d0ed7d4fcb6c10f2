/**
 * A real S3-protocol server (s3rver) on 127.0.0.1 for the remote-store tests, with one bucket,
 * its data in the test's own temp dir. stop() takes it down (to inject an outage) and start()
 * brings it back on the same port with the same data.
 */
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import S3rver from "s3rver";
import { freePort } from "./node.ts";

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
  let server: S3rver | undefined;
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
