/**
 * A checkpoint store under an S3 prefix (`s3://BUCKET/PREFIX`), through Bun's own S3Client:
 * random reads and writes of the Backend interface, and readers' leases (store/lease.ts). Every request is retried with back-off on transient
 * errors (connection refused or reset, 5xx, throttling); errors that retrying cannot fix
 * (no such key or bucket, access denied, bad credentials) fail at once.
 *
 * Every request has a deadline (an endpoint that accepts connections and never answers would
 * otherwise hold a push forever): `request_timeout_secs`, plus a second per MiB it carries. A
 * request past its deadline counts as a failed attempt and is retried like any other.
 *
 * Credentials never leave this module: they are not in `location`, in error messages or logs.
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { S3Client } from "bun";
import { CairnError, errorMessage } from "../../errors.ts";
import { type Backend, type BackendSpec, missing, type RandomReads, type ReadersHold, tooLarge, type Writes } from "../backend.ts";
import { takeLease } from "../lease.ts";

export interface S3Settings {
  /** s3://BUCKET/PREFIX */
  url: string;
  endpoint?: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  /** Deadline of one request before its transfer allowance (default DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Each request may take this much longer per byte it carries (a slow link is not a dead one). */
const MS_PER_MIB = 1000;

/** Everything an S3Backend is made from: plain data, so a worker can make the same one. */
export type S3SourceSpec = Required<Pick<S3Settings, "url">> & Omit<S3Settings, "url">;

export function isS3Url(location: string): boolean {
  return location.startsWith("s3://");
}

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m || !m[1]) {
    throw new CairnError("E_USAGE", `${url} is not an S3 location`, { hint: "name it as s3://BUCKET/PREFIX" });
  }
  return { bucket: m[1], prefix: m[2]!.replace(/\/+$/, "") };
}

/** Fill what the settings leave out from the usual S3_* / AWS_* environment variables. */
export function resolveS3Settings(s: S3Settings, env: Record<string, string | undefined> = process.env): S3SourceSpec {
  return {
    url: s.url,
    endpoint: s.endpoint ?? env.S3_ENDPOINT ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL,
    region: s.region ?? env.S3_REGION ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION,
    accessKeyId: s.accessKeyId ?? env.S3_ACCESS_KEY_ID ?? env.AWS_ACCESS_KEY_ID,
    secretAccessKey: s.secretAccessKey ?? env.S3_SECRET_ACCESS_KEY ?? env.AWS_SECRET_ACCESS_KEY,
    sessionToken: s.sessionToken ?? env.S3_SESSION_TOKEN ?? env.AWS_SESSION_TOKEN,
    requestTimeoutMs: s.requestTimeoutMs,
  };
}

/** Codes that retrying cannot fix. */
const PERMANENT = new Set([
  "NoSuchKey",
  "NoSuchBucket",
  "AccessDenied",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "InvalidBucketName",
  "ERR_S3_MISSING_CREDENTIALS",
  "ERR_S3_INVALID_ENDPOINT",
  "ERR_S3_INVALID_PATH",
  "ERR_S3_INVALID_SIGNATURE",
]);

/** What a read past the end of an object gives: no bytes. */
const ENDED = new Uint8Array(0);

/** `p`, or a rejection with code ETIMEDOUT once `ms` pass (the request itself is left to end on its own). */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(Object.assign(new Error(`no answer within ${Math.round(ms / 1000)} s`), { code: "ETIMEDOUT" })), ms);
  });
  p.catch(() => {});
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function s3Code(e: unknown): string | undefined {
  const c = (e as { code?: unknown })?.code;
  return typeof c === "string" ? c : undefined;
}

export interface RetryPolicy {
  attempts: number;
  firstDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, firstDelayMs: 200, maxDelayMs: 5_000 };

/** Files larger than this are uploaded in parts. */
export const MULTIPART_THRESHOLD = 16 * 1024 * 1024;
const PART_BYTES = 8 * 1024 * 1024;

export class S3Backend implements Backend, RandomReads, Writes {
  readonly parallelReads = 4;
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;

  /** Told of every failed attempt (timeouts included), for the status of a push that goes on retrying. */
  onAttemptFailed?: (what: string, err: unknown) => void;

  constructor(
    readonly settings: S3SourceSpec,
    readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {
    const { bucket, prefix } = parseS3Url(settings.url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = `s3://${bucket}${prefix ? `/${prefix}` : ""}`;
    this.client = new S3Client({
      bucket,
      endpoint: settings.endpoint,
      region: settings.region,
      accessKeyId: settings.accessKeyId,
      secretAccessKey: settings.secretAccessKey,
      sessionToken: settings.sessionToken,
    });
  }

  get random(): RandomReads {
    return this;
  }

  get writes(): Writes {
    return this;
  }

  /** A reader registers a lease in the prefix (store/lease.ts). */
  get readers(): ReadersHold {
    return { hold: (_timeoutMs, onWarn) => takeLease(this, this.location, { onWarn }) };
  }

  spec(): BackendSpec {
    return { kind: "s3", settings: this.settings };
  }

  private key(path: string): string {
    return this.prefix ? `${this.prefix}/${path}` : path;
  }

  /** Run `op` with its deadline, retrying transient failures (and timeouts) with doubling delays. */
  private async withRetry<T>(what: string, path: string, op: () => Promise<T>, bytes = 0): Promise<T> {
    let delay = this.retry.firstDelayMs;
    const deadline = (this.settings.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS) + Math.ceil((bytes / (1024 * 1024)) * MS_PER_MIB);
    for (let attempt = 1; ; attempt++) {
      try {
        return await withDeadline(op(), deadline);
      } catch (e) {
        const code = s3Code(e);
        if (code === "NoSuchKey") throw missing(this.location, path, e);
        // a range that starts at or past the end: the object is shorter than asked (as a file would be)
        if (code === "InvalidRange") return ENDED as T;
        this.onAttemptFailed?.(`${what} ${this.location}/${path}`, e);
        if ((code && PERMANENT.has(code)) || attempt >= this.retry.attempts) {
          throw new CairnError(
            code && PERMANENT.has(code) ? "E_REMOTE_DENIED" : "E_REMOTE_UNAVAILABLE",
            `${what} ${this.location}/${path} failed${attempt > 1 ? ` after ${attempt} attempts` : ""}: ${code ? `${code}: ` : ""}${errorMessage(e)}`,
            {
              cause: e,
              hint:
                code && PERMANENT.has(code)
                  ? "check the bucket name and the S3_*/AWS_* credentials"
                  : "check that the S3 endpoint is reachable (S3_ENDPOINT / remote.endpoint)",
            },
          );
        }
        await Bun.sleep(delay);
        delay = Math.min(delay * 2, this.retry.maxDelayMs);
      }
    }
  }

  async get(path: string, maxBytes: number): Promise<Uint8Array> {
    // one byte more than allowed: a larger object is refused without fetching it whole
    const data = await this.withRetry("reading", path, () => this.client.file(this.key(path)).slice(0, maxBytes + 1).bytes());
    if (data.length > maxBytes) throw tooLarge(this.location, path, `over ${maxBytes}`, maxBytes);
    return data;
  }

  async readInto(path: string, into: Uint8Array, at: number, length: number, offset: number): Promise<number> {
    const data = await this.getRange(path, offset, length);
    into.set(data.subarray(0, length), at);
    return Math.min(length, data.length);
  }

  async getReusing(path: string, _reuse: Uint8Array, maxBytes: number): Promise<Uint8Array> {
    return this.get(path, maxBytes);
  }

  async getRange(path: string, offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    return this.withRetry("reading", path, () => this.client.file(this.key(path)).slice(offset, offset + length).bytes(), length);
  }

  /**
   * Through a listing, not HEAD: a HEAD reply has no body, so a refused key or a missing
   * bucket would come back as an unknown (and so retried) error.
   */
  async size(path: string): Promise<number | undefined> {
    const key = this.key(path);
    const page = await this.withRetry("checking", path, () => this.client.list({ prefix: key, maxKeys: 1 }));
    const hit = (page.contents ?? []).find((o) => o.key === key);
    return hit ? (hit.size ?? 0) : undefined;
  }

  async list(prefix: string): Promise<string[]> {
    return [...(await this.listSizes(prefix)).keys()].sort();
  }

  /** Sizes of every object under `prefix`, in one listing. */
  async listSizes(prefix: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const base = this.prefix ? `${this.prefix}/` : "";
    let token: string | undefined;
    do {
      const page = await this.withRetry("listing", prefix, () =>
        this.client.list({ prefix: `${base}${prefix}`, maxKeys: 1000, ...(token ? { continuationToken: token } : {}) }),
      );
      for (const o of page.contents ?? []) if (o.key.startsWith(base)) out.set(o.key.slice(base.length), o.size ?? 0);
      token = page.isTruncated ? page.nextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async put(path: string, data: Uint8Array): Promise<void> {
    await this.withRetry("writing", path, () => this.client.write(this.key(path), data), data.length);
  }

  /**
   * Upload a local file. Large files go up in parts, a few at a time, read from disk as they
   * are sent (memory stays at a few parts whatever the file size); a failed upload is retried
   * whole.
   */
  async putFile(path: string, localFile: string): Promise<number> {
    const size = statSync(localFile).size;
    if (size <= MULTIPART_THRESHOLD) {
      const data = new Uint8Array(await Bun.file(localFile).arrayBuffer());
      await this.put(path, data);
      return size;
    }
    await this.withRetry("writing", path, async () => {
      const writer = this.client.file(this.key(path)).writer({ partSize: PART_BYTES, queueSize: 4, retry: 2 });
      const fd = openSync(localFile, "r");
      try {
        const buf = new Uint8Array(PART_BYTES);
        for (let off = 0, part = 1; off < size; part++) {
          const n = readSync(fd, buf, 0, Math.min(PART_BYTES, size - off), off);
          if (n <= 0) throw new CairnError("E_IO", `${localFile} shrank while it was uploaded`);
          writer.write(buf.slice(0, n));
          // let the queue drain every few parts, so memory stays bounded
          if (part % 4 === 0) await writer.flush();
          off += n;
        }
        await writer.end();
      } finally {
        closeSync(fd);
      }
    }, size);
    return size;
  }

  async delete(path: string): Promise<void> {
    try {
      await this.withRetry("deleting", path, () => this.client.delete(this.key(path)));
    } catch (e) {
      if ((e as CairnError).code === "E_STORE_MISSING") return;
      throw e;
    }
  }
}
