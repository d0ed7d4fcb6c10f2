/**
 * The transactions committed to the database, frame by frame, as the WAL holds them: what WAL
 * shipping sends to the store (checkpoint/shipper.ts).
 *
 * Right after each of the node's commits (same thread: nothing of the node's can commit in
 * between), `look()` reads the wal-index header and the frames added since the last look, from
 * the node's own descriptor of the -wal file, and cuts them into transactions at their commit
 * frames. Frames of another program's commits (a sqlite3 beside the node) come along in order
 * and are shipped too; their commit time is when the node saw them. The node's own frames
 * cannot leave the WAL unseen: SQLite starts the WAL over only at the start of a write after
 * every frame is folded in, the node's next write comes after this look, and its TRUNCATE folds
 * run while its writes wait. Frames can be lost only to another program that starts the WAL
 * over after its own commits; the count of commits in the wal-index (`iChange`) shows that, and
 * the capture says it is broken (the log has a gap; a new chain starts).
 */
import { readSync } from "node:fs";
import { errorMessage } from "../errors.ts";
import type { LiveFiles } from "./live-files.ts";
import { readWalIndexHeader, type WalIndexHeader } from "./sqlite-files.ts";

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;

/** Where in the WAL the capture stands. */
export interface WalMark {
  salt1: number;
  salt2: number;
  /** The last frame read (a commit frame), 0 for none. */
  frame: number;
  /** The WAL was empty: whatever generation SQLite begins next (new salts) continues from here. */
  empty?: boolean;
}

export interface CapturedTxn {
  commitMs: number;
  /** Database size in pages after the commit. */
  dbPages: number;
  pages: { pgno: number; data: Uint8Array }[];
  /** Bytes of page images. */
  bytes: number;
  /** The WAL position right after this transaction. */
  wal: WalMark;
}

export class WalCapture {
  private seen: { salt1: number; salt2: number; mxFrame: number; iChange: number };
  private broken?: string;

  private constructor(
    private readonly live: LiveFiles,
    hdr: WalIndexHeader,
    from: number,
  ) {
    this.seen = { salt1: hdr.salt1, salt2: hdr.salt2, mxFrame: from, iChange: hdr.iChange };
  }

  /**
   * Start capturing: after what is in the WAL now (`continueAfter` undefined), or after
   * `continueAfter` when the WAL still holds that position (the same WAL, its frame there a
   * commit): then what follows it is captured by the first look. Returns the capture and
   * whether it continues.
   */
  static start(live: LiveFiles, continueAfter?: WalMark): { capture: WalCapture; continued: boolean } {
    const hdr = readWalIndexHeader(live.shmFd);
    if (continueAfter && WalCapture.holds(live, hdr, continueAfter)) return { capture: new WalCapture(live, hdr, continueAfter.frame), continued: true };
    return { capture: new WalCapture(live, hdr, hdr.mxFrame), continued: false };
  }

  /** True if the WAL described by `hdr` still holds position `m` (same salts, and frame m.frame a commit of them). */
  private static holds(live: LiveFiles, hdr: WalIndexHeader, m: WalMark): boolean {
    if (m.empty && m.frame === 0) return true;
    if (hdr.salt1 !== m.salt1 || hdr.salt2 !== m.salt2 || hdr.mxFrame < m.frame) return false;
    if (m.frame === 0) return true;
    const head = new Uint8Array(FRAME_HEADER_BYTES);
    try {
      if (readSync(live.walFd, head, 0, FRAME_HEADER_BYTES, WAL_HEADER_BYTES + (m.frame - 1) * (FRAME_HEADER_BYTES + hdr.pageSize)) !== FRAME_HEADER_BYTES) return false;
    } catch {
      return false;
    }
    const dv = new DataView(head.buffer);
    return dv.getUint32(4, false) !== 0 && dv.getUint32(8, false) === m.salt1 && dv.getUint32(12, false) === m.salt2;
  }

  /** Why the capture can no longer follow the WAL, if it cannot. */
  get brokenBecause(): string | undefined {
    return this.broken;
  }

  /** Where the capture stands. */
  mark(): WalMark {
    return { salt1: this.seen.salt1, salt2: this.seen.salt2, frame: this.seen.mxFrame, ...(this.seen.mxFrame === 0 ? { empty: true } : {}) };
  }

  /**
   * The transactions committed since the last look; `ownCommits` is how many of the node's own
   * came in between (0 or 1), and `commitMs` the time of the last one. Empty once broken.
   */
  look(ownCommits: 0 | 1, commitMs: number): CapturedTxn[] {
    if (this.broken) return [];
    let hdr: WalIndexHeader;
    try {
      hdr = readWalIndexHeader(this.live.shmFd);
    } catch (e) {
      this.broken = `the WAL index could not be read (${errorMessage(e)})`;
      return [];
    }
    const seen = this.seen;
    const others = ((hdr.iChange - seen.iChange) >>> 0) - ownCommits;
    let from = seen.mxFrame + 1;
    if (hdr.salt1 !== seen.salt1 || hdr.salt2 !== seen.salt2) {
      // SQLite started the WAL over: fine when the node's own commit did it (every earlier frame
      // was read); not when another program committed too, as its frames may be gone unread
      if (others > 0) {
        this.broken = "another program committed to the database and the WAL was started over before the node read its frames";
        return [];
      }
      from = 1;
    } else if (hdr.mxFrame < seen.mxFrame) {
      this.broken = "the WAL index went back without a restart";
      return [];
    }
    const out: CapturedTxn[] = [];
    if (hdr.mxFrame >= from) {
      try {
        this.readFrames(hdr, from, commitMs, out);
      } catch (e) {
        this.broken = `the WAL could not be read (${errorMessage(e)})`;
        return [];
      }
    }
    this.seen = { salt1: hdr.salt1, salt2: hdr.salt2, mxFrame: hdr.mxFrame, iChange: hdr.iChange };
    return out;
  }

  private readFrames(hdr: WalIndexHeader, from: number, commitMs: number, out: CapturedTxn[]): void {
    const frameBytes = FRAME_HEADER_BYTES + hdr.pageSize;
    const n = hdr.mxFrame - from + 1;
    const buf = new Uint8Array(n * frameBytes);
    const got = readSync(this.live.walFd, buf, 0, buf.length, WAL_HEADER_BYTES + (from - 1) * frameBytes);
    if (got !== buf.length) throw new Error(`the WAL ends before frame ${hdr.mxFrame}`);
    const dv = new DataView(buf.buffer);
    let pages: CapturedTxn["pages"] = [];
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const at = i * frameBytes;
      if (dv.getUint32(at + 8, false) !== hdr.salt1 || dv.getUint32(at + 12, false) !== hdr.salt2) throw new Error(`frame ${from + i} is not of this WAL`);
      const pgno = dv.getUint32(at, false);
      const commit = dv.getUint32(at + 4, false);
      pages.push({ pgno, data: buf.subarray(at + FRAME_HEADER_BYTES, at + frameBytes) });
      bytes += hdr.pageSize;
      if (commit !== 0) {
        out.push({ commitMs, dbPages: commit, pages, bytes, wal: { salt1: hdr.salt1, salt2: hdr.salt2, frame: from + i } });
        pages = [];
        bytes = 0;
      }
    }
    if (pages.length > 0) throw new Error(`frame ${hdr.mxFrame} is not a commit`);
  }
}
