/**
 * A Bloom filter of BLAKE3 digests: "perhaps present" or "surely absent", in about 12 bits a
 * digest whatever the digests are. Garbage collection asks it which stored blocks some
 * checkpoint may still need: a false "perhaps" keeps a dead block a while longer, which is
 * safe; a needed block is never called absent. The digests are uniformly random, so the bit
 * positions are words of the digest itself, and nothing is hashed again.
 */

/** Bit positions per digest (words 0..K-1 of it). */
const K = 7;
/** The filter never grows past this, however large the store (a fuller filter keeps more dead blocks). */
const MAX_BITS = 2 ** 31;

const word = (d: Uint8Array, o: number) => (d[o]! | (d[o + 1]! << 8) | (d[o + 2]! << 16) | (d[o + 3]! << 24)) >>> 0;

export class DigestBloom {
  private readonly bits: Uint32Array;
  private readonly mask: number;

  /** A filter for about `count` digests. */
  constructor(count: number) {
    let n = 1 << 16;
    while (n < count * 12 && n < MAX_BITS) n *= 2;
    this.bits = new Uint32Array(n / 32);
    this.mask = n - 1;
  }

  get bytes(): number {
    return this.bits.byteLength;
  }

  /** Add the digest at byte `at` of `buf`. */
  addAt(buf: Uint8Array, at: number): void {
    for (let k = 0; k < K; k++) {
      const b = word(buf, at + 4 * k) & this.mask;
      this.bits[b >>> 5]! |= 1 << (b & 31);
    }
  }

  /** False if the digest at byte `at` of `buf` was surely never added. */
  hasAt(buf: Uint8Array, at: number): boolean {
    for (let k = 0; k < K; k++) {
      const b = word(buf, at + 4 * k) & this.mask;
      if ((this.bits[b >>> 5]! & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}
