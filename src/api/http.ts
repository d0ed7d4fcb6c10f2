/** Helpers shared by the REST API and the admin socket: JSON replies, typed errors, capped bodies. */
import { CairnError } from "../errors.ts";

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(`${JSON.stringify(body, null, 2)}\n`, {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

export function errorReply(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: { code, message } }, status, headers);
}

/** The HTTP status for a typed domain error. */
export function statusFor(e: CairnError): number {
  switch (e.code) {
    case "E_DISK_FULL":
      return 507;
    case "E_SHUTTING_DOWN":
    case "E_DB_FILES_LOST":
      return 503;
    case "E_BAD_REQUEST":
      return 400;
    case "E_TOO_LARGE":
      return 413;
    case "E_CONFLICT":
    case "E_BUSY":
      return 409;
    case "E_NOT_FOUND":
      return 404;
    default:
      return 500;
  }
}

/**
 * Read a request body of at most `max` bytes. A declared Content-Length over the limit is
 * refused before any of the body is read; a chunked body is counted as it streams in.
 */
export async function readBodyCapped(req: Request, max: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    const n = Number(declared);
    if (!/^\d+$/.test(declared) || !Number.isSafeInteger(n)) {
      throw new CairnError("E_BAD_REQUEST", `invalid Content-Length: ${JSON.stringify(declared)}`);
    }
    if (n > max) throw new CairnError("E_TOO_LARGE", `body of ${n} bytes exceeds the limit of ${max} bytes`);
  }
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw new CairnError("E_TOO_LARGE", `body exceeds the limit of ${max} bytes`);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
