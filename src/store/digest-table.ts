/**
 * What the store already holds: an open-addressing hash table from block digest to the index
 * of the pack holding it, in one SharedArrayBuffer so that every checkpoint worker reads the
 * same table without copies. Keys are the first 16 bytes of the BLAKE3 digest (a collision
 * needs ~2^64 blocks); 20 bytes a slot at a load factor of at most 1/2.
 *
 * Only the coordinator writes (between checkpoints); workers only read.
 */
const HEADER_WORDS = 4; // capacity, size, reserved, reserved
const KEY_WORDS = 4;

function word(d: Uint8Array, i: number, at = 0): number {
  const o = at + i * 4;
  return (d[o]! | (d[o + 1]! << 8) | (d[o + 2]! << 16) | (d[o + 3]! << 24)) >>> 0;
}

export class DigestTable {
  private readonly header: Uint32Array;
  private readonly keys: Uint32Array;
  /** pack index + 1; 0 marks an empty slot */
  private readonly vals: Uint32Array;
  private readonly mask: number;

  private constructor(readonly buffer: SharedArrayBuffer) {
    this.header = new Uint32Array(buffer, 0, HEADER_WORDS);
    const cap = this.header[0]!;
    this.mask = cap - 1;
    this.keys = new Uint32Array(buffer, HEADER_WORDS * 4, cap * KEY_WORDS);
    this.vals = new Uint32Array(buffer, (HEADER_WORDS + cap * KEY_WORDS) * 4, cap);
  }

  /** A table with room for at least `entries` at load 1/2. */
  static create(entries: number): DigestTable {
    let cap = 1024;
    while (cap < entries * 2) cap *= 2;
    const sab = new SharedArrayBuffer((HEADER_WORDS + cap * (KEY_WORDS + 1)) * 4);
    new Uint32Array(sab, 0, HEADER_WORDS)[0] = cap;
    return new DigestTable(sab);
  }

  static attach(buffer: SharedArrayBuffer): DigestTable {
    return new DigestTable(buffer);
  }

  /** Empty the table, to reuse it; returns it. */
  clear(): DigestTable {
    this.vals.fill(0);
    this.header[1] = 0;
    return this;
  }

  get size(): number {
    return this.header[1]!;
  }

  get capacity(): number {
    return this.mask + 1;
  }

  /** The pack index holding the digest at byte `at` of `buf` (no subarray needed), or -1. */
  getAt(buf: Uint8Array, at: number): number {
    return this.find(word(buf, 0, at), word(buf, 1, at), word(buf, 2, at), word(buf, 3, at));
  }

  /**
   * getAt() for a digest held as 32-bit words (little-endian, as a Uint32Array over the
   * digest bytes reads them on the machines cairn runs on) starting at word `at`: the
   * checkpoint workers' hot path, with no byte assembly.
   */
  getWords(w: Uint32Array, at: number): number {
    return this.find(w[at]!, w[at + 1]!, w[at + 2]!, w[at + 3]!);
  }

  private find(k0: number, k1: number, k2: number, k3: number): number {
    let i = k0 & this.mask;
    for (;;) {
      const v = this.vals[i]!;
      if (v === 0) return -1;
      const o = i * KEY_WORDS;
      if (this.keys[o] === k0 && this.keys[o + 1] === k1 && this.keys[o + 2] === k2 && this.keys[o + 3] === k3) return v - 1;
      i = (i + 1) & this.mask;
    }
  }

  /** set() for a digest held as words (see getWords). */
  setWords(w: Uint32Array, at: number, packIndex: number): DigestTable {
    const table = this.size + 1 > this.capacity / 2 ? this.grown() : this;
    table.insertWords(w[at]!, w[at + 1]!, w[at + 2]!, w[at + 3]!, packIndex);
    return table;
  }

  /**
   * Record that `digest` lives in pack `packIndex` (the first location recorded wins).
   * Returns the table to use from now on: a bigger copy once this one is half full.
   */
  set(digest: Uint8Array, packIndex: number): DigestTable {
    const table = this.size + 1 > this.capacity / 2 ? this.grown() : this;
    table.insert(digest, packIndex);
    return table;
  }

  /**
   * Bulk loading: record the digest at byte `at` of `buf` without growing the table. The
   * caller sized it with create() for everything it will load.
   */
  insertAt(buf: Uint8Array, at: number, packIndex: number): void {
    if (this.size + 1 > this.capacity / 2) throw new Error("DigestTable.insertAt: table is full; size it with create()");
    this.insert(buf, packIndex, at);
  }

  private insert(digest: Uint8Array, packIndex: number, at = 0): void {
    this.insertWords(word(digest, 0, at), word(digest, 1, at), word(digest, 2, at), word(digest, 3, at), packIndex);
  }

  private insertWords(k0: number, k1: number, k2: number, k3: number, packIndex: number): void {
    let i = k0 & this.mask;
    for (;;) {
      const v = this.vals[i]!;
      const o = i * KEY_WORDS;
      if (v === 0) {
        this.keys[o] = k0;
        this.keys[o + 1] = k1;
        this.keys[o + 2] = k2;
        this.keys[o + 3] = k3;
        this.vals[i] = packIndex + 1;
        this.header[1]!++;
        return;
      }
      if (this.keys[o] === k0 && this.keys[o + 1] === k1 && this.keys[o + 2] === k2 && this.keys[o + 3] === k3) return;
      i = (i + 1) & this.mask;
    }
  }

  private grown(): DigestTable {
    const next = DigestTable.create(this.capacity);
    const k = this.keys;
    for (let i = 0; i < this.capacity; i++) {
      const v = this.vals[i]!;
      if (v === 0) continue;
      const o = i * KEY_WORDS;
      next.insertWords(k[o]!, k[o + 1]!, k[o + 2]!, k[o + 3]!, v - 1);
    }
    return next;
  }
}
