/** Helpers shared by the REST API and the admin socket: JSON replies, typed errors, capped bodies. */
import { CairnError, errorMessage } from "../errors.ts";

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(`${JSON.stringify(body, null, 2)}\n`, {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function errorReply(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: { code, message } }, status, headers);
}


/**
 * The request body bytes all requests together may hold in memory at once. Bytes are counted
 * as they arrive (a stalled client holds only what it sent), and a request that has held more
 * than SMALL_BODY_BYTES may not use the last `reserve` bytes: stalled large uploads cannot
 * starve small requests. Past the limit the request is refused with 503.
 */
export class BodyBudget {
  static readonly SMALL_BODY_BYTES = 1024 * 1024;
  private used = 0;
  readonly reserve: number;

  constructor(readonly limit: number) {
    this.reserve = Math.min(Math.floor(limit / 4), 64 * 1024 * 1024);
  }

  get inUse(): number {
    return this.used;
  }

  /** Take `n` more bytes for a request already holding `held`; false (nothing taken) if over. */
  take(held: number, n: number): boolean {
    const cap = held + n > BodyBudget.SMALL_BODY_BYTES ? this.limit - this.reserve : this.limit;
    if (this.used + n > cap) return false;
    this.used += n;
    return true;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

function overBudget(): CairnError {
  return new CairnError("E_OVERLOADED", "too many request bodies are in flight; try again shortly");
}

/**
 * Read a request body of at most `max` bytes. A declared Content-Length over the limit is
 * refused before any of the body is read; a chunked body is counted as it streams in. With a
 * `budget`, every byte held counts against it until the caller releases `body.byteLength`
 * (once the request is done with it); a body the budget cannot hold is refused with 503.
 */
export async function readBodyCapped(req: Request, max: number, budget?: BodyBudget): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    const n = Number(declared);
    if (!/^\d+$/.test(declared) || !Number.isSafeInteger(n)) {
      throw new CairnError("E_BAD_REQUEST", `invalid Content-Length: ${JSON.stringify(declared)}`);
    }
    if (n > max) throw new CairnError("E_TOO_LARGE", `body of ${n} bytes exceeds the limit of ${max} bytes`);
    // a body that cannot fit now is refused before it is read
    if (budget && !budget.take(0, n)) throw overBudget();
    budget?.release(n);
  }
  if (!req.body) return new Uint8Array(0);
  // a small body with a declared length is copied into one buffer as it comes (no second copy),
  // allocated once the first bytes arrive; a large one is kept as its chunks until it is all
  // there, so that stalled or refused large uploads hold only the bytes they sent, not their
  // declared size; either way the bytes count against the budget as they come
  const declaredLength = declared !== null ? Number(declared) : undefined;
  const length = declaredLength !== undefined && declaredLength <= BodyBudget.SMALL_BODY_BYTES ? declaredLength : undefined;
  let into: Uint8Array | undefined;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  try {
    for (;;) {
      let next: Awaited<ReturnType<typeof reader.read>>;
      try {
        next = await reader.read();
      } catch (e) {
        // a malformed chunked body, or the client went away part-way
        throw new CairnError("E_BAD_REQUEST", `the request body could not be read${errorMessage(e) ? `: ${errorMessage(e)}` : " (malformed chunked encoding, or the connection ended early)"}`, { cause: e });
      }
      if (next.done) break;
      const value = next.value;
      if (total + value.byteLength > max) {
        await reader.cancel().catch(() => {});
        throw new CairnError("E_TOO_LARGE", `body exceeds the limit of ${max} bytes`);
      }
      if (declaredLength !== undefined && total + value.byteLength > declaredLength) {
        await reader.cancel().catch(() => {});
        throw new CairnError("E_BAD_REQUEST", "the request body is longer than its Content-Length");
      }
      if (budget && !budget.take(total, value.byteLength)) {
        await reader.cancel().catch(() => {});
        throw overBudget();
      }
      if (length === undefined) chunks.push(value);
      else (into ??= new Uint8Array(length)).set(value, total);
      total += value.byteLength;
    }
  } catch (e) {
    budget?.release(total);
    throw e;
  }
  if (length !== undefined) return into === undefined ? new Uint8Array(0) : into.subarray(0, total);
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
