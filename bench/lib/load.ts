/**
 * The load generator: `concurrency` async workers in this process share one counter of
 * requests, so exactly `concurrency` requests are in flight until the count (or the time cap)
 * runs out. Each request's latency is measured around the whole call, body included.
 */

export interface LoadOptions {
  /** How many requests to make (indices 0..count-1). */
  count: number;
  concurrency: number;
  /** Stop starting new requests after this long; in-flight ones still finish. */
  timeCapMs: number;
  /** Optional: stop starting new requests once this returns true (polled before each request). */
  stop?: () => boolean;
  /** Make request `i`; resolve when it has fully succeeded, throw (with a reason) if not. */
  request: (i: number) => Promise<void>;
}

export interface LoadResult {
  /** Requests started. */
  attempted: number;
  /** Indices of the requests that succeeded. */
  okIndices: number[];
  failed: number;
  /** The first failure's reason, for the report. */
  firstFailure?: string;
  /** Wall time from the first request's start to the last one's end. */
  elapsedMs: number;
  /** Latency of every successful request, in ms. */
  latenciesMs: number[];
  /** Whether the time cap cut the cell short. */
  capped: boolean;
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const { count, concurrency, timeCapMs, request, stop } = opts;
  const okIndices: number[] = [];
  const latenciesMs: number[] = [];
  let next = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  let capped = false;
  const start = performance.now();
  const deadline = start + timeCapMs;

  const worker = async (): Promise<void> => {
    for (;;) {
      if (next >= count || stop?.()) return;
      if (performance.now() > deadline) {
        capped = true;
        return;
      }
      const i = next++;
      const t0 = performance.now();
      try {
        await request(i);
        latenciesMs.push(performance.now() - t0);
        okIndices.push(i);
      } catch (e) {
        failed++;
        firstFailure ??= e instanceof Error ? e.message : String(e);
      }
    }
  };

  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  const elapsedMs = performance.now() - start;
  okIndices.sort((a, b) => a - b);
  return { attempted: next, okIndices, failed, firstFailure, elapsedMs, latenciesMs, capped };
}

/** PUT one blob (with a bearer token if given); throws unless the node answers 201 or 204. */
export async function putBlob(url: string, id: string, body: Uint8Array, token?: string): Promise<void> {
  const res = await fetch(`${url}/v1/blobs/${id}`, { method: "PUT", body, headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (res.status === 201 || res.status === 204) {
    await res.arrayBuffer();
    return;
  }
  throw new Error(`PUT ${id}: HTTP ${res.status} ${(await res.text()).slice(0, 200).trim()}`);
}
