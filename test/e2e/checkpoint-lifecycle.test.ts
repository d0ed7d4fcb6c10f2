/**
 * The life of checkpoints inside a running node: cancelling one, the task timeout, shutdown
 * during one, and retention with garbage collection over repeated checkpoints. Slow
 * checkpoints are made with the write rate limit (checkpoint_config.max_write_bytes_per_sec).
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  admin,
  adminAsync,
  auditDb,
  checkpointStatus,
  createCheckpoint,
  deleteAll,
  duBytes,
  filesUnder,
  leftovers,
  listJson,
  materialize,
  putAll,
  verify,
} from "../helpers/checkpoint.ts";
import { pseudoRandomBytes, runCairn, sha256, startNode } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();

const blobs = (prefix: string, n: number, size: number, seed: number) =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, body: pseudoRandomBytes(seed + i, size) }));

/**
 * How long a checkpoint that must write `bytes` takes at least under the write rate limit
 * (the limit only ever slows it down, so a busy machine makes it longer, never shorter).
 */
const leastMs = (bytes: number, bytesPerSec: number) => (bytes / bytesPerSec) * 1000;

/** Thread ids of the node's threads named "Worker" (its WAL worker and its checkpoint workers), from /proc. */
function workerThreadIds(pid: number): Set<string> {
  const ids = new Set<string>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim() === "Worker") ids.add(tid);
    } catch {
      // that thread ended meanwhile
    }
  }
  return ids;
}

describe("cancel, timeout, shutdown", () => {
  test("checkpoint cancel stops a running checkpoint for real: nothing listed, nothing left in tmp/ or packs/; the next one succeeds", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const rate = 1_000_000;
    const node = await startNode(dir, { extraYaml: `checkpoint_config:\n  max_write_bytes_per_sec: ${rate}\n` });
    try {
      // the node's own Worker threads before any checkpoint: its WAL worker
      const nodeWorkers = workerThreadIds(node.proc.pid);
      await putAll(node.url, blobs("a", 20, 20_000, 1));
      expect(createCheckpoint(node)).toBe(1);
      // 12 MB more: the next checkpoint writes for at least 12 s at 1 MB/s
      const big = blobs("b", 300, 40_000, 1000);
      const mustRunMs = leastMs(300 * 40_000, rate);
      await putAll(node.url, big);
      const packsBefore = filesUnder(store, "packs");
      const manifestsBefore = filesUnder(store, "manifests");

      const t0 = performance.now();
      const started = admin(node, ["checkpoint", "create", "--detach"]);
      expect(started.code).toBe(0);
      // it is really under way: running, and writing its pack into tmp/
      await waitFor(() => filesUnder(store, "tmp").length > 0, { what: "the checkpoint to write into tmp/", detail: () => node.logs() });
      const checkpointWorkers = [...workerThreadIds(node.proc.pid)].filter((tid) => !nodeWorkers.has(tid));
      expect(checkpointWorkers.length).toBeGreaterThan(0);
      const running = await checkpointStatus(node);
      expect(running.running?.state).toBe("running");
      // meanwhile list and verify see only the complete checkpoint
      expect(listJson(store).map((l) => l.id)).toEqual([1]);
      const v = verify(store);
      expect(v.code).toBe(0);
      expect(v.stdout).toStartWith("Checkpoint 1: OK");
      expect((await checkpointStatus(node)).running?.state).toBe("running");

      const cancel = admin(node, ["checkpoint", "cancel"]);
      expect(cancel.code).toBe(0);
      expect(cancel.stdout).toBe(`Checkpoint into ${store} cancelled; nothing of it was kept\n`);
      // stopped, not waited out: done before the checkpoint could have finished on its own
      expect(performance.now() - t0).toBeLessThan(mustRunMs);

      const s = await checkpointStatus(node);
      expect(s.running).toBeNull();
      expect(s.last.outcome).toBe("cancelled");
      expect(s.cancellations).toBe(1);
      expect(s.successes).toBe(1);
      const text = admin(node, ["checkpoint", "status"]);
      expect(text.stdout).toStartWith("No checkpoint running.\nLast: cancelled at ");
      expect(text.stdout).toContain("Since start: 1 succeeded, 0 failed, 1 cancelled");
      expect(listJson(store).map((l) => l.id)).toEqual([1]);
      expect(filesUnder(store, "tmp")).toEqual([]);
      expect(filesUnder(store, "packs")).toEqual(packsBefore);
      expect(filesUnder(store, "manifests")).toEqual(manifestsBefore);
      // the workers really stopped: their threads end, and nothing more appears afterwards
      await waitFor(() => checkpointWorkers.every((tid) => !existsSync(`/proc/${node.proc.pid}/task/${tid}`)), {
        what: `the cancelled checkpoint's worker threads (${checkpointWorkers.join(", ")}) to end`,
      });
      expect(filesUnder(store, "tmp")).toEqual([]);
      expect(filesUnder(store, "packs")).toEqual(packsBefore);
      // a cancel with nothing running says so
      expect(admin(node, ["checkpoint", "cancel"]).stdout).toBe("No checkpoint is running\n");

      expect(createCheckpoint(node)).toBe(2);
      expect(listJson(store).map((l) => l.id)).toEqual([1, 2]);
      expect(verify(store).code).toBe(0);
      const file = join(dir, "m2.db");
      await materialize(store, 2, file);
      const a = auditDb(file);
      expect(a.integrity).toBe("ok");
      expect(a.count).toBe(320);
      expect(a.blobs.get("b299")).toBe(sha256(big[299]!.body));
      expect(await leftovers(store)).toEqual([]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 120_000);

  test("a cancel that arrives once the checkpoint is complete (while retention runs) does not claim that nothing was kept", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    // garbage collection waits at a pause point, so the cancel surely arrives while retention
    // runs, after the manifest, however slow the machine is to start the command
    const releaseFile = join(dir, "release-pause");
    const node = await startNode(dir, {
      extraYaml: "checkpoint_config:\n  max_db_checkpoints: 1\n",
      env: { CAIRN_TEST_PAUSE_POINT: "gc:collecting", CAIRN_TEST_PAUSE_RELEASE_FILE: releaseFile },
    });
    const pauses = () => node.logs().split("cairn: test pause point gc:collecting reached").length - 1;
    try {
      writeFileSync(releaseFile, "");
      await putAll(node.url, blobs("b", 200, 50_000, 1));
      expect(createCheckpoint(node)).toBe(1);
      // its retention (which collects too) done, past the pause point, before the pause is armed
      await waitFor(async () => (await checkpointStatus(node)).running === null, { what: "checkpoint 1's retention to end" });
      unlinkSync(releaseFile);
      const before = pauses();
      // most of it rewritten: retention removes checkpoint 1 and garbage-collects its packs
      await putAll(node.url, blobs("b", 150, 50_000, 100_000));
      expect(admin(node, ["checkpoint", "create", "--detach"]).code).toBe(0);
      await waitFor(() => pauses() > before, { what: "retention's garbage collection to start", timeoutMs: 60_000, detail: () => node.logs() });
      expect(existsSync(join(store, "manifests", `${String(2).padStart(10, "0")}.json`))).toBe(true);
      const cancel = adminAsync(node, ["checkpoint", "cancel"]);
      // once the node has the cancel (it says so), retention goes on
      await waitFor(() => node.logs().includes("cancel asked while checkpoint 2 applies retention"), { what: "the node to receive the cancel", timeoutMs: 30_000 });
      writeFileSync(releaseFile, "");
      const c = await cancel;
      expect(c.code).toBe(0);
      await waitFor(async () => (await checkpointStatus(node)).running === null, { what: "the checkpoint to end", timeoutMs: 60_000 });
      // the checkpoint is complete, kept and reported a success...
      const s = await checkpointStatus(node);
      expect(s.last.outcome).toBe("success");
      expect(s.last.result.id).toBe(2);
      expect(listJson(store).map((l) => l.id)).toEqual([2]);
      expect(verify(store).code).toBe(0);
      // ...so the operator is told so, not that it was cancelled and nothing was kept
      expect(c.stdout).toBe(`Checkpoint 2 into ${store} had already completed; nothing was cancelled\n`);
    } finally {
      writeFileSync(releaseFile, "");
      expect(await node.stop()).toBe(0);
    }
  }, 120_000);

  test("the task timeout stops a slow checkpoint: result failed, nothing listed, nothing left", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const rate = 250_000;
    const node = await startNode(dir, {
      extraYaml: `checkpoint_config:\n  max_write_bytes_per_sec: ${rate}\n  db_checkpoint_task_timeout_secs: 1\n`,
    });
    try {
      // 6 MB: at least 24 s at 250 KB/s, 24 times the timeout
      await putAll(node.url, blobs("b", 150, 40_000, 1));
      const mustRunMs = leastMs(150 * 40_000, rate);
      const t0 = performance.now();
      const r = admin(node, ["checkpoint", "create"]);
      const took = performance.now() - t0;
      expect(r.code).toBe(1);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain("took longer than 1 s");
      // stopped by the timeout, not run to its end: well before the end it could have reached
      expect(took).toBeLessThan(mustRunMs / 2);
      const s = await checkpointStatus(node);
      expect(s.running).toBeNull();
      expect(s.last.outcome).toBe("failed");
      expect(s.failures).toBe(1);
      expect(s.successes).toBe(0);
      const list = runCairn(["list-db-checkpoint", store]);
      expect(list.code).toBe(0);
      expect(list.stdout).toBe(`No checkpoints found in ${store}\n`);
      expect(filesUnder(store, "tmp")).toEqual([]);
      expect(filesUnder(store, "packs")).toEqual([]);
      expect(filesUnder(store, "manifests")).toEqual([]);
      expect((await fetch(`${node.url}/v1/blobs/b3`)).status).toBe(200);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 30_000);

  test("SIGTERM during a checkpoint: the node exits 0 and leaves no partial checkpoint", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const rate = 250_000;
    const node = await startNode(dir, { extraYaml: `checkpoint_config:\n  max_write_bytes_per_sec: ${rate}\n` });
    // 6 MB: the checkpoint runs for at least 24 s at 250 KB/s
    await putAll(node.url, blobs("b", 150, 40_000, 1));
    const mustRunMs = leastMs(150 * 40_000, rate);
    expect(admin(node, ["checkpoint", "create", "--detach"]).code).toBe(0);
    await waitFor(() => filesUnder(store, "tmp").length > 0, { what: "the checkpoint to write into tmp/", detail: () => node.logs() });
    const t0 = performance.now();
    expect(await node.stop("SIGTERM")).toBe(0);
    // the checkpoint was cancelled for the shutdown, not waited out
    expect(performance.now() - t0).toBeLessThan(mustRunMs / 2);
    expect(runCairn(["list-db-checkpoint", store]).stdout).toBe(`No checkpoints found in ${store}\n`);
    expect(filesUnder(store, "tmp")).toEqual([]);
    expect(filesUnder(store, "packs")).toEqual([]);
  }, 30_000);
});

describe("retention and garbage collection", () => {
  test("after garbage collection rewrote the pack holding the previous checkpoint's segments, the next checkpoints build on it and restore exactly", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 1\n" });
    const state = new Map<string, string>();
    const put = async (list: { id: string; body: Uint8Array }[]) => {
      await putAll(node.url, list);
      for (const b of list) state.set(b.id, sha256(b.body));
    };
    try {
      await put(blobs("b", 800, 50_000, 1));
      expect(createCheckpoint(node)).toBe(1);
      // most of the database rewritten: checkpoint 1's pack is mostly dead once it is removed,
      // and is rewritten; checkpoint 2 keeps the segments of the untouched tail in it
      await put(blobs("b", 560, 50_000, 100_000));
      expect(createCheckpoint(node)).toBe(2);
      await waitFor(() => /garbage collection: \d+ pack\(s\) removed, [1-9]\d* rewritten/.test(node.logs()), { what: "a pack rewritten by garbage collection", detail: () => node.logs() });
      // now the tail changes: its segments are read back from where garbage collection put them
      for (let step = 3; step <= 4; step++) {
        await put(Array.from({ length: 60 }, (_, i) => ({ id: `b${560 + ((i * 4 + step) % 240)}`, body: pseudoRandomBytes(step * 1_000_000 + i, 50_000) })));
        expect(createCheckpoint(node)).toBe(step);
      }
      expect(node.logs()).not.toContain("failed");
      expect(node.logs()).not.toContain("locates the previous one again");
      expect(verify(store).code).toBe(0);
      const file = join(dir, "m4.db");
      await materialize(store, 4, file);
      const a = auditDb(file);
      expect(a.integrity).toBe("ok");
      expect(a.blobs).toEqual(state);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 120_000);

  test("max_db_checkpoints: 2 over 6 checkpoints with churn: the newest 2 kept with their ids, the store stays bounded, both verify and restore", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 2\n" });
    const state = new Map<string, string>();
    const states: Map<string, string>[] = [];
    const sizes: { step: number; store: number; db: number }[] = [];
    try {
      const first = blobs("b", 250, 25_000, 1);
      await putAll(node.url, first);
      for (const b of first) state.set(b.id, sha256(b.body));
      let fresh = 0;
      for (let step = 1; step <= 6; step++) {
        if (step > 1) {
          // rewrite about a third of the blobs, delete a few, add a few
          const ids = [...state.keys()];
          const rewrite = ids.filter((_, i) => (i + step) % 3 === 0).map((id, i) => ({ id, body: pseudoRandomBytes(step * 100_000 + i, 25_000) }));
          await putAll(node.url, rewrite);
          for (const b of rewrite) state.set(b.id, sha256(b.body));
          const gone = ids.filter((_, i) => (i + step) % 17 === 0 && !rewrite.some((r) => r.id === ids[i]));
          await deleteAll(node.url, gone);
          for (const id of gone) state.delete(id);
          const added = blobs(`n${step}-`, 12, 25_000, 500_000 + step * 1000);
          fresh += added.length;
          await putAll(node.url, added);
          for (const b of added) state.set(b.id, sha256(b.body));
        }
        expect(createCheckpoint(node)).toBe(step);
        states[step] = new Map(state);
        const listed = listJson(store);
        expect(listed.map((l) => l.id)).toEqual(step === 1 ? [1] : [step - 1, step]);
        sizes.push({ step, store: duBytes(store), db: listed.at(-1)!.size_bytes });
      }
      expect(fresh).toBe(60);
      // the store does not grow without bound: after 6 rounds of churn it holds less than
      // three database images
      for (const x of sizes) expect({ ...x, bounded: x.store < 3 * x.db }).toMatchObject({ bounded: true });
      expect(await leftovers(store)).toEqual([]);

      const v = verify(store);
      expect(v.code).toBe(0);
      expect(v.stdout).toContain("Checkpoint 5: OK");
      expect(v.stdout).toContain("Checkpoint 6: OK");
      for (const id of [5, 6]) {
        const file = join(dir, `m${id}.db`);
        await materialize(store, id, file);
        const a = auditDb(file);
        expect(a.integrity).toBe("ok");
        expect(a.blobs).toEqual(states[id]!);
        expect(a.totals).toEqual({ blob_count: a.count, blob_bytes: a.bytes });
      }
      // numbering goes on after the node restarts: never reused
      expect(await node.stop()).toBe(0);
      const again = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 2\n" });
      try {
        expect(createCheckpoint(again)).toBe(7);
        expect(listJson(store).map((l) => l.id)).toEqual([6, 7]);
      } finally {
        expect(await again.stop()).toBe(0);
      }
    } finally {
      if (node.proc.exitCode === null) await node.stop();
    }
  }, 90_000);
});
