/**
 * Reading a store whose files come in stored order (an archive, see archive/export.ts for the
 * layout): the store info and the manifest come first, then pack by pack each index before its
 * pack, every segment before its blocks, in database order. So a reader rebuilds the image
 * front to back while it checks each index, each segment against the manifest and each block
 * against its segment, holding one segment at a time.
 */
import { CairnError, errorMessage } from "../errors.ts";
import type { StreamEntry, StreamReads } from "./backend.ts";
import { decodeManifest, decodeStoreInfo, type IncludedFile, includedPath, indexPath, type Manifest, MANIFEST_NAME_RE, MAX_MANIFEST_BYTES, MAX_STORE_INFO_BYTES, packPath, SEGMENT_ENTRY_BYTES, STORE_FILE, type StoreInfo } from "./format.ts";
import { MAX_INCLUDED_STORED_BYTES } from "./included.ts";
import { toHex } from "./hash.ts";
import { LOG_DIR, MAX_SEGMENT_BYTES, segmentOf } from "./log.ts";

const CHAIN_PATH_RE = /^log\/[0-9a-f]{16}\/chain\.json$/;
import { type KeyFile, openStoreKeys, openStored, type StoreKeys } from "./crypto.ts";
import { BLOCK_KIND_DATA, BLOCK_KIND_SEGMENT, decodeBlock, decodeIndexFile, entryKind, equalBytes, MAX_INDEX_BYTES, PACK_HEADER_BYTES, PACK_MAGIC, readIndexEntry } from "./pack.ts";

/** What the stream gives each data block: its number in the image, and its bytes. */
export type BlockSink = (block: number, data: Uint8Array) => void | Promise<void>;

export class StreamReader {
  private head?: { info: StoreInfo; manifest: Manifest };
  /** An encrypted archive's keys, opened from `keyFiles` when its store info is read. */
  keys?: StoreKeys;

  constructor(
    readonly location: string,
    private readonly stream: StreamReads,
    private readonly keyFiles: KeyFile[] = [],
  ) {}

  private damaged(why: string, cause?: unknown): CairnError {
    return new CairnError("E_STORE_DAMAGED", `${this.location}: ${why}`, { cause, hint: "the archive is truncated or damaged; export it again" });
  }

  /** A whole entry, of at most `maxBytes` (the format's limit for what it holds): never more is allocated. */
  private async readWhole(e: StreamEntry, maxBytes: number): Promise<Uint8Array> {
    if (e.size > maxBytes) throw this.damaged(`${e.path} is ${e.size} bytes, more than such a file can be (${maxBytes})`);
    const data = await e.read(e.size);
    if (data.length !== e.size) throw this.damaged(`${e.path} is cut short (truncated archive)`);
    return data;
  }

  /** Read the store info and the manifest (the first two entries): all that listing needs. */
  private async readHead(it: AsyncGenerator<StreamEntry>): Promise<{ info: StoreInfo; manifest: Manifest }> {
    const notExport = () =>
      new CairnError("E_NOT_A_STORE", `${this.location} is not a checkpoint archive written by cairn export-db-checkpoint`, {
        hint: "extract it and give the folder instead",
      });
    let next = await it.next();
    if (next.done) throw this.damaged("the archive is empty or cut short");
    if (next.value.path !== STORE_FILE) throw notExport();
    const info = decodeStoreInfo(await this.readWhole(next.value, MAX_STORE_INFO_BYTES), `${this.location}:${STORE_FILE}`);
    if (info.encryption && !this.keys) this.keys = openStoreKeys(info.encryption, this.keyFiles, this.location);
    next = await it.next();
    if (next.done) throw this.damaged("the archive ends before its manifest (truncated)");
    const mm = /^manifests\/(.+)$/.exec(next.value.path);
    if (!mm || !MANIFEST_NAME_RE.test(mm[1]!)) throw notExport();
    const name = `${this.location}:${next.value.path}`;
    const manifest = decodeManifest(openStored(await this.readWhole(next.value, MAX_MANIFEST_BYTES), next.value.path, name, this.keys), name);
    return { info, manifest };
  }

  private async ensureHead(): Promise<{ info: StoreInfo; manifest: Manifest }> {
    if (!this.head) {
      const it = this.stream.entries();
      try {
        this.head = await this.readHead(it);
      } finally {
        await it.return(undefined);
      }
    }
    return this.head;
  }

  async info(): Promise<StoreInfo> {
    return (await this.ensureHead()).info;
  }

  async exists(): Promise<boolean> {
    await this.ensureHead();
    return true;
  }

  async manifestIds(): Promise<number[]> {
    return [(await this.ensureHead()).manifest.id];
  }

  async manifest(id: number): Promise<Manifest> {
    const { manifest } = await this.ensureHead();
    if (manifest.id !== id) throw new CairnError("E_STORE_MISSING", `${this.location} holds checkpoint ${manifest.id}, not ${id}`);
    return manifest;
  }

  /**
   * Stream the whole archive: check every index, pack, segment and block, and hand each data
   * block to `sink` in database order.
   */
  async streamBlocks(
    sink: BlockSink,
    opts: {
      signal?: AbortSignal;
      onLogFile?: (path: string, data: Uint8Array) => void | Promise<void>;
      /** Each carried file's stored object (as stored: open it with openIncluded), in the manifest's order. */
      onIncludedFile?: (f: IncludedFile, stored: Uint8Array) => void | Promise<void>;
    } = {},
  ): Promise<Manifest> {
    await this.stream.checkWhole?.();
    const it = this.stream.entries();
    try {
      const { manifest: m } = await this.readHead(it);
      let nextSegment = 0;
      let segment: Uint8Array | undefined;
      let segmentPos = 0;
      let segmentLen = 0;
      for (let p = 0; p < m.packs.length; p++) {
        const packId = m.packs[p]!;
        let e = await it.next();
        if (e.done) throw this.damaged(`ends before ${indexPath(packId)} (truncated)`);
        if (e.value.path !== indexPath(packId)) throw this.damaged(`expected ${indexPath(packId)}, found ${e.value.path}`);
        const idx = decodeIndexFile(await this.readWhole(e.value, MAX_INDEX_BYTES), `${this.location}:${indexPath(packId)}`, indexPath(packId), this.keys);
        e = await it.next();
        if (e.done) throw this.damaged(`ends before ${packPath(packId)} (truncated)`);
        if (e.value.path !== packPath(packId)) throw this.damaged(`expected ${packPath(packId)}, found ${e.value.path}`);
        const pack = e.value;
        const name = `${this.location}:${packPath(packId)}`;
        if (pack.size !== idx.packBytes) throw this.damaged(`${packPath(packId)} is ${pack.size} bytes, its index says ${idx.packBytes}`);
        const magic = await pack.read(PACK_HEADER_BYTES);
        if (new TextDecoder().decode(magic) !== PACK_MAGIC) throw this.damaged(`${packPath(packId)} is not a pack (bad magic)`);
        let offset = PACK_HEADER_BYTES;
        for (let i = 0; i < idx.count; i++) {
          if (opts.signal?.aborted) throw new CairnError("E_INTERRUPTED", "interrupted");
          const entry = readIndexEntry(idx, i);
          if (entry.offset !== offset) throw this.damaged(`${packPath(packId)} is not in stream order (entry ${i})`);
          const stored = await pack.read(entry.storedLength);
          if (stored.length !== entry.storedLength) throw this.damaged(`${packPath(packId)} is cut short at offset ${offset} (truncated archive)`);
          offset += entry.storedLength;
          const kind = entryKind(entry.flags);
          if (kind === BLOCK_KIND_SEGMENT) {
            if (segment && segmentPos !== segmentLen) throw this.damaged(`segment ${nextSegment - 1} is missing blocks`);
            if (nextSegment >= m.segments.length || toHex(entry.digest) !== m.segments[nextSegment]) {
              throw this.damaged(`segment ${nextSegment} is not the one the manifest names`);
            }
            segment = decodeBlock(stored, entry, name, this.keys).slice();
            segmentLen = Math.min(m.segment_blocks, m.block_count - nextSegment * m.segment_blocks);
            if (segment.length !== segmentLen * SEGMENT_ENTRY_BYTES) throw this.damaged(`segment ${nextSegment} has the wrong length`);
            segmentPos = 0;
            nextSegment++;
          } else if (kind === BLOCK_KIND_DATA) {
            if (!segment || segmentPos >= segmentLen) throw this.damaged(`a block at offset ${entry.offset} of ${packPath(packId)} has no segment`);
            const block = (nextSegment - 1) * m.segment_blocks + segmentPos;
            const want = segment.subarray(segmentPos * SEGMENT_ENTRY_BYTES, segmentPos * SEGMENT_ENTRY_BYTES + 32);
            if (!equalBytes(entry.digest, want)) throw this.damaged(`block ${block} is not the one its segment names`);
            segmentPos++;
            await sink(block, decodeBlock(stored, entry, name, this.keys));
          } else throw this.damaged(`unknown block kind ${kind} in ${packPath(packId)}`);
        }
        if (!(await pack.atEnd())) throw this.damaged(`${packPath(packId)} has bytes its index does not name`);
      }
      if (nextSegment !== m.segments.length || segmentPos !== segmentLen) throw this.damaged(`holds ${nextSegment} of ${m.segments.length} segments (truncated)`);
      // the tar must end cleanly too: a cut archive fails here even after the last block
      // then the carried files, in the manifest's order (each checked by whoever opens it)
      let rest = await it.next();
      for (const f of m.files ?? []) {
        if (rest.done || rest.value.path !== includedPath(f.name)) throw this.damaged(`expected the carried file ${f.path} (${includedPath(f.name)}), found ${rest.done ? "the end" : rest.value.path}`);
        await opts.onIncludedFile?.(f, await this.readWhole(rest.value, MAX_INCLUDED_STORED_BYTES));
        rest = await it.next();
      }
      // then the shipped log after the checkpoint (archive/export.ts), if any: checked when applied
      while (!rest.done && rest.value.path.startsWith(`${LOG_DIR}/`) && (segmentOf(rest.value.path) || CHAIN_PATH_RE.test(rest.value.path))) {
        const data = await this.readWhole(rest.value, MAX_SEGMENT_BYTES);
        await opts.onLogFile?.(rest.value.path, data);
        rest = await it.next();
      }
      if (!rest.done) throw this.damaged(`unexpected entry ${rest.value.path} after the last pack`);
      return m;
    } catch (e) {
      if (e instanceof CairnError) throw e;
      throw this.damaged(`cannot be read: ${errorMessage(e)} (truncated or damaged)`, e);
    } finally {
      await it.return(undefined);
    }
  }
}
