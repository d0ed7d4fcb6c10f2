/**
 * Which pages of the database changed since the last checkpoint of the node's store, so that
 * an incremental checkpoint reads only those (checkpoint/create.ts) instead of the whole file.
 *
 * Every page the node writes reaches cairn.db through a WAL frame. Right after each of its
 * commits (same thread: nothing can commit in between) the tracker reads, from the wal-index,
 * the page numbers of the frames added since its last look, all frames from 1 when SQLite
 * restarted the WAL. A restart needs every earlier frame folded into the database file, and the
 * node's own TRUNCATE folds run while its writes wait (engine/wal.ts), so no frame of the node's
 * can leave the WAL unseen. Another program's commits are not followed at all: SQLite counts
 * every commit into the wal-index (`iChange`), and a count that grew by more than the node's
 * own commits means someone else wrote, and tracking is lost.
 *
 * The set lives in memory, a bit per page; a clean stop saves it beside the database
 * (`cairn-changes`) and the next start takes it back only if the database file is the one it
 * was saved with. Continuity is never assumed, only proven: after a crash (no saved set),
 * another writer, a database file changed by anything but the node's own folds (its inode,
 * size, mtime or ctime differ from what the node's last fold left), a restore, another store or
 * a format change, the tracker says why and the checkpoint reads everything.
 */
import { fstatSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { errorMessage } from "../errors.ts";
import { crashPoint, TRACKER_FORGETS_ENV } from "../util/crash-point.ts";
import { fsyncDir, readOwnFile, writeFileAtomic } from "../util/fsx.ts";
import type { LiveFiles } from "./live-files.ts";
import { framePages, readWalIndexHeader } from "./sqlite-files.ts";

export const CHANGES_FILE = "cairn-changes";
const MAGIC = "CAIRNCH1";
const CHANGED_BY_OTHER = "the database file was changed by something other than the node's own WAL folds";

/** What the database file looked like: a change by anything but the node's folds shows here. */
export interface FileMark {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

const sameMark = (a: FileMark, b: FileMark) => a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;

function markOf(st: FileMark): FileMark {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

/** What the tracker last saw of the WAL: the header fields that say which frames are new. */
interface WalPosition {
  salt1: number;
  salt2: number;
  mxFrame: number;
  iChange: number;
}

export interface TrackingStatus {
  /** The store the changes are tracked for, or null. */
  store: string | null;
  since_checkpoint: number | null;
  changed_pages: number;
  /** Why the next checkpoint will read the whole database, or null. */
  lost: string | null;
}

/** The changed pages a checkpoint takes at its pin. */
export interface TakenChanges {
  /** A bit per page (page n is bit n-1), or undefined when continuity is not proven. */
  pages?: Uint8Array;
  /** Why the pages cannot be used (the checkpoint reads everything). */
  fallback?: string;
  /** The checkpoint succeeded as checkpoint `id` of `store`: track from its pin. */
  commit(store: string, id: number): void;
  /** The checkpoint failed: what it took is changed still (merged back). */
  abandon(): void;
}

export class ChangeTracker {
  private bits = new Uint8Array(1024);
  /** Bits set in `bits`. */
  private count = 0;
  /** Where the WAL was at the last look. */
  private seen: WalPosition = { salt1: 0, salt2: 0, mxFrame: 0, iChange: 0 };
  /** Tracking since this checkpoint of this store; undefined until proven. */
  private base?: { store: string; id: number };
  private lost?: string;
  /** The database file as the node's own last fold (or the start) left it. */
  private expected: FileMark;

  private constructor(
    private readonly live: LiveFiles,
    base: { store: string; id: number } | undefined,
    why: string | undefined,
  ) {
    this.base = base;
    this.lost = why;
    this.expected = markOf(fstatSync(live.dbFd));
    const hdr = this.header();
    if (!hdr) this.lose("the WAL index could not be read");
    else {
      // frames already in the WAL at start are changes too (the node's own migrations, or what a crash left)
      this.seen = { salt1: hdr.salt1, salt2: hdr.salt2, mxFrame: 0, iChange: hdr.iChange };
      this.look(0);
    }
  }

  /**
   * Start tracking for the node whose storage folder is `storagePath`, taking back what a clean
   * stop saved if it matches the database file (checked before SQLite opens it: `dbMark`). The
   * saved file is removed at once, so that a crash from now on cannot bring it back.
   */
  static resume(storagePath: string, live: LiveFiles, dbMarkBeforeOpen: FileMark | undefined): ChangeTracker {
    const file = join(storagePath, CHANGES_FILE);
    let saved: { store: string; id: number; mark: FileMark; bits: Uint8Array } | undefined;
    let why = "no record of the changes since the last checkpoint (the node did not stop cleanly, or never checkpointed)";
    try {
      saved = decodeSaved(readOwnFile(file, 1 << 30));
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") why = `the record of changes cannot be read (${errorMessage(e)})`;
    }
    if (saved) {
      try {
        unlinkSync(file);
        fsyncDir(storagePath);
      } catch {
        // it is checked against the database file anyway
      }
      crashPoint("changes:taken-back");
      if (!dbMarkBeforeOpen || !sameMark(saved.mark, dbMarkBeforeOpen)) {
        why = "the database file changed while the node was stopped (a restore, or another program)";
        saved = undefined;
      }
    }
    const t = new ChangeTracker(live, saved ? { store: saved.store, id: saved.id } : undefined, saved ? undefined : why);
    if (saved) t.or(saved.bits);
    return t;
  }

  /** The database file's mark, read by path before SQLite opens it (undefined if there is none). */
  static markBeforeOpen(dbFile: string): FileMark | undefined {
    try {
      return markOf(statSync(dbFile));
    } catch {
      return undefined;
    }
  }

  private header() {
    try {
      return readWalIndexHeader(this.live.shmFd);
    } catch {
      return undefined;
    }
  }

  private set(page: number): void {
    const i = (page - 1) >>> 3;
    if (i >= this.bits.length) {
      let n = this.bits.length;
      while (n <= i) n *= 2;
      const grown = new Uint8Array(n);
      grown.set(this.bits);
      this.bits = grown;
    }
    const bit = 1 << ((page - 1) & 7);
    if ((this.bits[i]! & bit) === 0) {
      this.bits[i]! |= bit;
      this.count++;
    }
  }

  private or(other: Uint8Array): void {
    if (other.length > this.bits.length) {
      const grown = new Uint8Array(other.length);
      grown.set(this.bits);
      this.bits = grown;
    }
    for (let i = 0; i < other.length; i++) {
      const added = other[i]! & ~this.bits[i]!;
      if (added === 0) continue;
      this.bits[i]! |= added;
      for (let v = added; v; v &= v - 1) this.count++;
    }
  }

  /** After each of the node's commits (same thread, nothing in between): the pages of the frames it added. */
  noteCommit(): void {
    this.look(1);
  }

  /**
   * Read the wal-index header and take the pages of the frames added since the last look;
   * `commits` is how many commits of the node's came in between (0 or 1).
   */
  private look(commits: 0 | 1): WalPosition | undefined {
    if (this.lost) return undefined;
    const hdr = this.header();
    if (!hdr) {
      this.lose("the WAL index could not be read");
      return undefined;
    }
    const seen = this.seen;
    const others = ((hdr.iChange - seen.iChange) >>> 0) - commits;
    if (others > 0) {
      this.lose("another program committed to the database (a sqlite3 beside the node?)");
      return undefined;
    }
    let from = seen.mxFrame + 1;
    if (hdr.salt1 !== seen.salt1 || hdr.salt2 !== seen.salt2) {
      // SQLite restarted the WAL: every earlier frame was in the database file, and seen. A
      // restart by the node's own commit leaves that commit's frames from 1; a restart after
      // the commit (another program's checkpoint, between the commit and this look) would have
      // taken frames this tracker never saw.
      if (commits === 1 && hdr.iChange !== seen.iChange && hdr.mxFrame === 0) {
        this.lose("the WAL was reset before the node saw its last commit (another program's checkpoint?)");
        return undefined;
      }
      from = 1;
    } else if (hdr.mxFrame < seen.mxFrame) {
      this.lose("the WAL index went back without a restart");
      return undefined;
    }
    if (hdr.mxFrame >= from) {
      let pages: Uint32Array;
      try {
        pages = framePages(this.live.shmFd, from, hdr.mxFrame);
      } catch (e) {
        this.lose(`the WAL index could not be read (${errorMessage(e)})`);
        return undefined;
      }
      for (const p of pages) {
        if (p === 0) {
          this.lose("the WAL index names no page for a committed frame");
          return undefined;
        }
        this.set(p);
      }
    }
    this.seen = { salt1: hdr.salt1, salt2: hdr.salt2, mxFrame: hdr.mxFrame, iChange: hdr.iChange };
    return this.seen;
  }

  /**
   * Just before each of the node's own folds writes the database file: it must be as the last
   * one left it, else something else wrote it (checked here too, not only at a checkpoint's
   * pin: the fold's noteFold takes the file as it finds it).
   */
  beforeFold(): void {
    if (!sameMark(markOf(fstatSync(this.live.dbFd)), this.expected)) this.lose(CHANGED_BY_OTHER);
  }

  /** After each of the node's own folds of the WAL into the database file (its writes waited for a TRUNCATE). */
  noteFold(): void {
    this.look(0);
    this.expected = markOf(fstatSync(this.live.dbFd));
  }

  private lose(why: string): void {
    this.lost ??= why;
  }

  /** For checkpoint status: since which checkpoint of which store the changes are tracked, how many pages, or why they are not. */
  status(): TrackingStatus {
    this.look(0);
    return {
      store: this.base ? this.base.store.slice(0, this.base.store.lastIndexOf(" ")) : null,
      since_checkpoint: this.base?.id ?? null,
      changed_pages: this.count,
      lost: this.lost ?? (this.base ? null : "no checkpoint since the node started tracking"),
    };
  }

  /**
   * At a checkpoint's pin of `store`, whose newest checkpoint is `prevId` (folds paused, no
   * commit in between): the pages changed since that checkpoint, or why they cannot be used.
   * The tracker starts over from this instant either way; commit() or abandon() settles it.
   * `folding`: a fold of the node's is still running beside the pin; the file is changing under
   * it, so its mark is the one that fold leaves (noteFold), checked when it started (beforeFold).
   */
  take(store: string, prevId: number | undefined, pinned: WalPosition, folding = false): TakenChanges {
    const seen = this.look(0);
    const now = markOf(fstatSync(this.live.dbFd));
    // the image pinned must be what the tracker saw: else a commit came in between (not the node's)
    if (seen && (pinned.salt1 !== seen.salt1 || pinned.salt2 !== seen.salt2 || pinned.mxFrame !== seen.mxFrame || pinned.iChange !== seen.iChange)) {
      this.lose("another program committed to the database at the checkpoint's pin");
    }
    const before = { bits: this.bits, base: this.base, lost: this.lost };
    // what no later checkpoint can mend unless it reads everything
    const unproven = this.lost ?? (folding || sameMark(now, this.expected) ? undefined : CHANGED_BY_OTHER);
    let fallback = unproven;
    if (!fallback && prevId === undefined) fallback = "the store has no checkpoint to build on";
    if (!fallback && (!this.base || this.base.store !== store)) fallback = "the changes are tracked for another store";
    if (!fallback && this.base!.id !== prevId) fallback = `the changes are tracked since checkpoint ${this.base!.id}, and the store's newest is ${prevId}`;
    // from this instant on, the tracker counts the changes since this checkpoint's image: it
    // starts again from the WAL as pinned, whatever came before (a checkpoint that cannot
    // build on the changes reads everything)
    this.bits = new Uint8Array(before.bits.length);
    this.count = 0;
    this.base = undefined;
    this.lost = undefined;
    this.seen = { salt1: pinned.salt1, salt2: pinned.salt2, mxFrame: pinned.mxFrame, iChange: pinned.iChange };
    if (!folding) this.expected = now;
    let settled = false;
    return {
      pages: fallback ? undefined : process.env[TRACKER_FORGETS_ENV] ? new Uint8Array(before.bits.length) : before.bits,
      fallback,
      commit: (s, id) => {
        if (settled) return;
        settled = true;
        this.base = { store: s, id };
      },
      abandon: () => {
        if (settled) return;
        settled = true;
        // no checkpoint was made at the pin: the changes since the last one are what was
        // taken plus what came after, and whatever made this one fall back still holds
        this.or(before.bits);
        this.base = before.base;
        this.lost ??= unproven;
      },
    };
  }

  /**
   * A clean stop, after the final fold and after the node's connection closed: save the set
   * (it is taken back at the next start if the database file is still the one it describes).
   */
  save(storagePath: string, dbFile: string): void {
    this.noteFoldFromPath(dbFile);
    if (this.lost || !this.base) return;
    crashPoint("changes:before-save");
    writeFileAtomic(join(storagePath, CHANGES_FILE), encodeSaved(this.base.store, this.base.id, this.expected, this.bits));
    crashPoint("changes:saved");
  }

  /** The final fold ran on the node's own connection, before the descriptors closed: read the file's mark by path. */
  private noteFoldFromPath(dbFile: string): void {
    try {
      this.expected = markOf(statSync(dbFile));
    } catch {
      this.lose("the database file is gone");
    }
  }
}

/** The saved file: magic, checkpoint id, the database file's mark, the bitmap's and store key's lengths, both, SHA-256 of all before. */
const SAVED_HEAD = 8 + 4 + 8 * 4 + 4 + 4;

function encodeSaved(store: string, id: number, mark: FileMark, bits: Uint8Array): Uint8Array {
  const storeBytes = new TextEncoder().encode(store);
  const head = SAVED_HEAD + storeBytes.length;
  const out = new Uint8Array(head + bits.length + 32);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, id, true);
  [mark.ino, mark.size, mark.mtimeMs, mark.ctimeMs].forEach((v, i) => dv.setFloat64(12 + 8 * i, v, true));
  dv.setUint32(44, bits.length, true);
  dv.setUint32(48, storeBytes.length, true);
  out.set(storeBytes, SAVED_HEAD);
  out.set(bits, head);
  out.set(new Uint8Array(new Bun.CryptoHasher("sha256").update(out.subarray(0, head + bits.length)).digest()), head + bits.length);
  return out;
}

function decodeSaved(data: Uint8Array): { store: string; id: number; mark: FileMark; bits: Uint8Array } {
  const bad = () => new Error("damaged");
  if (data.length < SAVED_HEAD + 32 || new TextDecoder().decode(data.subarray(0, 8)) !== MAGIC) throw bad();
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const bitsLen = dv.getUint32(44, true);
  const storeLen = dv.getUint32(48, true);
  const head = SAVED_HEAD + storeLen;
  if (head + bitsLen + 32 !== data.length) throw bad();
  const sum = new Uint8Array(new Bun.CryptoHasher("sha256").update(data.subarray(0, head + bitsLen)).digest());
  if (!sum.every((b, i) => b === data[head + bitsLen + i])) throw bad();
  const f = (i: number) => dv.getFloat64(12 + 8 * i, true);
  return {
    id: dv.getUint32(8, true),
    mark: { ino: f(0), size: f(1), mtimeMs: f(2), ctimeMs: f(3) },
    store: new TextDecoder().decode(data.subarray(SAVED_HEAD, head)),
    bits: data.slice(head, head + bitsLen),
  };
}
