/**
 * Blobs in SQLite. Writes are queued and committed in groups: every PUT and DELETE that
 * arrives while a commit is being prepared joins one transaction, and each is acknowledged
 * only after that transaction's COMMIT has been fsynced (synchronous=FULL), so an
 * acknowledged write survives kill -9 and power loss while the cost of the fsync is shared.
 */
import type { Database, Statement } from "bun:sqlite";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { WalCheckpointer } from "./wal.ts";

/** Blob ids: 1–256 characters of A-Z a-z 0-9 . _ - ; anything else is refused with 400. */
export const BLOB_ID_RE = /^[A-Za-z0-9._-]{1,256}$/;

export function isValidBlobId(id: string): boolean {
  return BLOB_ID_RE.test(id);
}

/** xxHash3-64 of the content, hex: the blob's ETag and a check on every read. */
export function blobDigest(data: Uint8Array): string {
  return Bun.hash.xxHash3(data).toString(16).padStart(16, "0");
}

export interface BlobMeta {
  id: string;
  size: number;
  digest: string;
  updatedAt: number;
}

export interface Blob extends BlobMeta {
  data: Uint8Array;
}

export interface BlobPage {
  blobs: { id: string; size: number }[];
  /** Pass as `after` to get the next page; null when this page is the last. */
  nextAfter: string | null;
}

type WriteOp =
  | { kind: "put"; id: string; data: Uint8Array; digest: string; done: (r: { created: boolean }) => void; fail: (e: unknown) => void }
  | { kind: "delete"; id: string; done: (r: { existed: boolean }) => void; fail: (e: unknown) => void };

export interface BlobStoreStats {
  commits: number;
  committedOps: number;
  failedCommits: number;
  /** Writes committed but answered 503 because synchronous shipping did not complete in time. */
  unshippedOps: number;
}

/** Upper bounds on one group commit, so that one commit never holds the loop for long. */
const MAX_BATCH_OPS = 1000;
const MAX_BATCH_BYTES = 64 * 1024 * 1024;

/** What the blob store needs of WAL shipping. */
export interface WriteShipping {
  readonly synchronous: boolean;
  /** Before a commit: resolves once the WAL may be started over (what is queued is shipped). */
  beforeWrite(): Promise<void> | undefined;
  /** After each commit, same thread. */
  noteCommit(): void;
  /** Resolves once everything committed so far is shipped; rejects (503) after its timeout. */
  shipped(): Promise<void>;
}

export class BlobStore {
  readonly stats: BlobStoreStats = { commits: 0, committedOps: 0, failedCommits: 0, unshippedOps: 0 };
  private queue: WriteOp[] = [];
  private draining = false;
  private closed = false;
  private idle?: { promise: Promise<void>; resolve: () => void };
  private readonly q: {
    get: Statement<{ size: number; digest: string; updated_at: number; data: Uint8Array }, [string]>;
    head: Statement<{ size: number; digest: string; updated_at: number }, [string]>;
    sizeOf: Statement<{ size: number }, [string]>;
    insert: Statement<unknown, [string, number, string, number, Uint8Array]>;
    update: Statement<unknown, [number, string, number, Uint8Array, string]>;
    del: Statement<{ size: number }, [string]>;
    totals: Statement<{ blob_count: number; blob_bytes: number }, []>;
    addTotals: Statement<unknown, [number, number]>;
    list: Statement<{ id: string; size: number }, [string, string, string, number]>;
  };

  /** Set once the database files were found unlinked or replaced: every write is refused. */
  private refusal?: CairnError;

  constructor(
    private readonly db: Database,
    private readonly wal: WalCheckpointer | undefined,
    private readonly logger: Logger,
    /**
     * Checked before and after each commit (LiveFiles.check): a write committed into a WAL
     * that was unlinked or replaced would be lost, so it is never acknowledged.
     */
    private readonly files?: { check(): void },
    /** Told after every commit (engine/change-tracker.ts: which pages it wrote). */
    private readonly tracker?: { noteCommit(): void },
    /** Told how long each commit took (util/io-pressure.ts: background I/O gives way when commits slow down). */
    private readonly pressure?: { note(ms: number): void; noteWal(bytes: number): void },
    /** WAL shipping (checkpoint/shipper.ts): told of every commit; in synchronous mode, acknowledgements wait for it. */
    private readonly shipping?: WriteShipping,
  ) {
    this.q = {
      get: db.query("SELECT size, digest, updated_at, data FROM blobs WHERE id = ?"),
      head: db.query("SELECT size, digest, updated_at FROM blobs WHERE id = ?"),
      sizeOf: db.query("SELECT size FROM blobs WHERE id = ?"),
      insert: db.query("INSERT INTO blobs (id, size, digest, updated_at, data) VALUES (?, ?, ?, ?, ?)"),
      update: db.query("UPDATE blobs SET size = ?, digest = ?, updated_at = ?, data = ? WHERE id = ?"),
      del: db.query("DELETE FROM blobs WHERE id = ? RETURNING size"),
      totals: db.query("SELECT blob_count, blob_bytes FROM totals WHERE one = 1"),
      addTotals: db.query("UPDATE totals SET blob_count = blob_count + ?, blob_bytes = blob_bytes + ? WHERE one = 1"),
      list: db.query("SELECT id, size FROM blobs WHERE id >= ? AND id < ? AND id > ? ORDER BY id LIMIT ?"),
    };
  }

  get(id: string): Blob | null {
    const row = this.q.get.get(id);
    if (!row) return null;
    const data = row.data;
    if (data.byteLength !== row.size || blobDigest(data) !== row.digest) {
      throw new CairnError("E_BLOB_CORRUPT", `blob ${id} does not match its recorded size and digest`);
    }
    return { id, size: row.size, digest: row.digest, updatedAt: row.updated_at, data };
  }

  head(id: string): BlobMeta | null {
    const row = this.q.head.get(id);
    return row ? { id, size: row.size, digest: row.digest, updatedAt: row.updated_at } : null;
  }

  list(opts: { prefix?: string; after?: string; limit: number }): BlobPage {
    const prefix = opts.prefix ?? "";
    // ids are ASCII below '~', so [prefix, prefix + '~') is exactly the ids with that prefix
    const rows = this.q.list.all(prefix, `${prefix}~`, opts.after ?? "", opts.limit + 1);
    const more = rows.length > opts.limit;
    const blobs = more ? rows.slice(0, opts.limit) : rows;
    return { blobs, nextAfter: more ? blobs[blobs.length - 1]!.id : null };
  }

  totals(): { count: number; bytes: number } {
    const t = this.q.totals.get()!;
    return { count: t.blob_count, bytes: t.blob_bytes };
  }

  /** Store `data` under `id`; resolves once durable. `created` is false if it replaced one. */
  put(id: string, data: Uint8Array): Promise<{ created: boolean }> {
    const digest = blobDigest(data);
    return new Promise((done, fail) => this.enqueue({ kind: "put", id, data, digest, done, fail }));
  }

  /** Delete `id`; resolves once durable. `existed` is false if there was no such blob. */
  delete(id: string): Promise<{ existed: boolean }> {
    return new Promise((done, fail) => this.enqueue({ kind: "delete", id, done, fail }));
  }

  /** Resolves when every write queued so far has been committed (or failed). */
  flushed(): Promise<void> {
    if (!this.draining && this.queue.length === 0) return Promise.resolve();
    if (!this.idle) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.idle = { promise, resolve };
    }
    return this.idle.promise;
  }

  /** Refuse new writes from now on (shutdown); queued ones still commit. */
  close(): void {
    this.closed = true;
  }

  private enqueue(op: WriteOp): void {
    if (this.closed) {
      op.fail(new CairnError("E_SHUTTING_DOWN", "the node is shutting down"));
      return;
    }
    this.queue.push(op);
    if (!this.draining) {
      this.draining = true;
      // setImmediate lets every request already read in this turn of the loop join the batch
      setImmediate(() => void this.drain());
    }
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const barrier = this.wal?.writeBarrier();
        if (barrier) await barrier;
        if (this.shipping) {
          // whether this write starts the WAL over (so that what is queued must be shipped
          // first) is read from the wal-index, and must not race a fold in the worker: one
          // finishing between that check and the commit would let SQLite start the WAL over
          // with transactions unshipped, and after a crash the chain could not be continued.
          // Folds start only on this thread, so from the check to the commit none can begin.
          // (what is queued is shipped at most once per batch: a store that cannot be written
          // to must not hold writes back for ever)
          let shipped = false;
          for (;;) {
            const folding = this.wal?.foldRunning();
            if (folding) {
              await folding;
              continue;
            }
            const shipFirst = shipped ? undefined : this.shipping.beforeWrite();
            if (!shipFirst) break;
            await shipFirst.catch(() => {});
            shipped = true;
          }
        }
        this.commitBatch(this.takeBatch());
        const walBytes = this.wal?.noteCommit();
        // a checkpoint's snapshot holds the WAL unfolded: it stops giving way to commits once the WAL is large
        if (walBytes !== undefined) this.pressure?.noteWal(walBytes);
        // yield between batches so reads and new requests are served
        if (this.queue.length > 0) await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.draining = false;
      const idle = this.idle;
      this.idle = undefined;
      idle?.resolve();
    }
  }

  private takeBatch(): WriteOp[] {
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < MAX_BATCH_OPS) {
      const op = this.queue[n]!;
      bytes += op.kind === "put" ? op.data.byteLength : 0;
      n++;
      if (bytes >= MAX_BATCH_BYTES) break;
    }
    return this.queue.splice(0, n);
  }

  /** Why writes are refused, if they are (the database files were lost under the node). */
  get refused(): string | undefined {
    return this.refusal?.message;
  }

  /** Fail the batch if the database files are not the ones the node writes; true if it was failed. */
  private refuseIfFilesLost(batch: WriteOp[]): boolean {
    try {
      this.files?.check();
      return false;
    } catch (e) {
      const err = e instanceof CairnError ? e : storageError(e);
      if (!this.refusal) {
        this.refusal = err;
        this.logger.error(`${err.message}; ${err.hint ?? ""}`);
      }
      this.stats.failedCommits++;
      for (const op of batch) op.fail(err);
      return true;
    }
  }

  private commitBatch(batch: WriteOp[]): void {
    const results: ({ created: boolean } | { existed: boolean })[] = [];
    const now = Date.now();
    if (this.refuseIfFilesLost(batch)) return;
    const started = performance.now();
    try {
      this.db.transaction(() => {
        let dCount = 0;
        let dBytes = 0;
        for (const op of batch) {
          if (op.kind === "put") {
            const old = this.q.sizeOf.get(op.id);
            if (old) {
              this.q.update.run(op.data.byteLength, op.digest, now, op.data, op.id);
              dBytes += op.data.byteLength - old.size;
              results.push({ created: false });
            } else {
              this.q.insert.run(op.id, op.data.byteLength, op.digest, now, op.data);
              dCount++;
              dBytes += op.data.byteLength;
              results.push({ created: true });
            }
          } else {
            const gone = this.q.del.get(op.id);
            if (gone) {
              dCount--;
              dBytes -= gone.size;
            }
            results.push({ existed: gone !== null });
          }
        }
        if (dCount !== 0 || dBytes !== 0) this.q.addTotals.run(dCount, dBytes);
      }).immediate();
    } catch (e) {
      this.stats.failedCommits++;
      const err = storageError(e);
      this.logger.error(`commit of ${batch.length} write(s) failed: ${err.message}`);
      for (const op of batch) op.fail(err);
      return;
    }
    this.pressure?.note(performance.now() - started);
    this.tracker?.noteCommit();
    this.shipping?.noteCommit();
    // the commit may have gone into a file unlinked a moment ago: then it is not acknowledged
    if (this.refuseIfFilesLost(batch)) return;
    this.stats.commits++;
    this.stats.committedOps += batch.length;
    const ack = () => batch.forEach((op, i) => (op.done as (r: unknown) => void)(results[i]));
    if (this.shipping?.synchronous) {
      // acknowledged only once shipped; the next batch commits meanwhile (and ships with the next shipment)
      this.shipping.shipped().then(ack, (e) => {
        this.stats.unshippedOps += batch.length;
        for (const op of batch) op.fail(e);
      });
    } else ack();
  }
}

/** Map an SQLite failure to a typed error; a full disk gets its own code (HTTP 507). */
export function storageError(e: unknown): CairnError {
  const msg = errorMessage(e);
  const code = (e as { code?: string })?.code ?? "";
  if (code === "SQLITE_FULL" || /database or disk is full/i.test(msg)) {
    return new CairnError("E_DISK_FULL", "the disk is full; the write was not stored", { cause: e });
  }
  return new CairnError("E_STORAGE", `storage error: ${msg}`, { cause: e });
}
