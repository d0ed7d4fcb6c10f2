/**
 * Checkpoints as an operator sees them: consistency under a live write load, deduplication,
 * one at a time, the listing format, ownership of a checkpoint directory, the schedule.
 * Checkpoints are turned back into database files with rebuildImage (restore is not built
 * yet) and checked with the stock sqlite3.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  adminAsync,
  admin,
  auditDb,
  checkpointStatus,
  createCheckpoint,
  createCheckpointAsync,
  decimalSize,
  duBytes,
  listJson,
  materialize,
  putAll,
  treeSnapshot,
  verify,
} from "../helpers/checkpoint.ts";
import { getJson, pseudoRandomBytes, runCairn, sha256, startNode } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { fsClockPast, waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(60_000);

describe("checkpoint consistency", () => {
  for (const variant of ["max_background_operations: 2", "max_background_operations: 2\n  compression: zstd\n  sync: false"]) {
    test(`under 4 concurrent writers every checkpoint is transaction-consistent and holds every write acknowledged before it was asked for (${variant.replaceAll("\n  ", ", ")})`, async () => {
      const dir = tmpDir();
      const store = join(dir, "checkpoints");
      // small WAL threshold: the node folds its WAL all the time, so checkpoints meet both a
      // long WAL and WAL checkpoints paused and resumed under them
      const node = await startNode(dir, {
        extraYaml:
          "wal_checkpoint_threshold_bytes: 1048576\nwal_checkpoint_interval_secs: 0.1\n" +
          `checkpoint_config:\n  max_db_checkpoints: 0\n  ${variant}\n`,
      });
      /** Every acknowledged state of every id, in order (one writer owns each id). null: deleted. */
      type Version = { sha: string | null; sentAt: number; ackAt: number };
      const history = new Map<string, Version[]>();
      const errors: string[] = [];
      const record = (id: string, v: Version) => {
        const h = history.get(id) ?? [];
        h.push(v);
        history.set(id, h);
      };
      /** Writes acknowledged after `t`. */
      const acksAfter = (t: number) => [...history.values()].reduce((n, h) => n + h.filter((v) => v.ackAt > t).length, 0);
      try {
        // a few MB to start with
        const t0 = performance.now();
        const prefill = Array.from({ length: 300 }, (_, i) => ({ id: `pre-${i}`, body: pseudoRandomBytes(900_000 + i, 8000) }));
        await putAll(node.url, prefill);
        const t1 = performance.now();
        for (const b of prefill) record(b.id, { sha: sha256(b.body), sentAt: t0, ackAt: t1 });

        let stop = false;
        const writers = Array.from({ length: 4 }, async (_, w) => {
          const mine: string[] = [];
          for (let i = 0; !stop; i++) {
            let id: string;
            let method = "PUT";
            let body: Uint8Array | undefined;
            if (i > 20 && i % 7 === 3) {
              id = mine[(i * 31) % mine.length]!; // overwrite an earlier blob with new content
            } else if (i > 20 && i % 11 === 5) {
              id = mine[(i * 17) % mine.length]!;
              method = "DELETE";
            } else {
              id = `w${w}-${i}`;
              mine.push(id);
            }
            if (method === "PUT") body = pseudoRandomBytes(w * 1_000_000 + i + 1, 200 + ((i * 7919) % 6000));
            const sentAt = performance.now();
            try {
              const r = await fetch(`${node.url}/v1/blobs/${id}`, { method, body });
              const ackAt = performance.now();
              if (method === "PUT" && (r.status === 201 || r.status === 204)) record(id, { sha: sha256(body!), sentAt, ackAt });
              else if (method === "DELETE" && r.status === 204) record(id, { sha: null, sentAt, ackAt });
              else if (method === "DELETE" && r.status === 404) {
                if (history.get(id)?.at(-1)?.sha !== null) errors.push(`DELETE ${id}: 404 but it was stored`);
              } else errors.push(`${method} ${id}: HTTP ${r.status}`);
            } catch (e) {
              errors.push(`${method} ${id}: ${e}`);
              return;
            }
          }
        });

        // the writers get going, and write more between one checkpoint and the next
        const moreWrites = (after: number) =>
          waitFor(() => errors.length > 0 || acksAfter(after) >= 200, { what: "200 more acknowledged writes", detail: () => `${acksAfter(after)} so far` });
        await moreWrites(t1);
        const checkpoints: { id: number; issuedAt: number; doneAt: number }[] = [];
        for (let k = 0; k < 4; k++) {
          const issuedAt = performance.now();
          const id = await createCheckpointAsync(node);
          const doneAt = performance.now();
          checkpoints.push({ id, issuedAt, doneAt });
          await moreWrites(doneAt);
        }
        stop = true;
        await Promise.all(writers);
        expect(errors).toEqual([]);
        expect(checkpoints.map((c) => c.id)).toEqual([1, 2, 3, 4]);

        const listed = listJson(store);
        expect(listed.map((l) => l.id)).toEqual([1, 2, 3, 4]);
        const v = verify(store);
        expect(v.stderr).toBe("");
        expect(v.code).toBe(0);

        let previousCount = 0;
        for (const c of checkpoints) {
          const file = join(dir, `restored-${c.id}.db`);
          const m = await materialize(store, c.id, file);
          const a = auditDb(file);
          expect(a.integrity).toBe("ok");
          // transaction-consistent: the running totals agree with the rows
          expect(a.count).toBe(a.totals.blob_count);
          expect(a.bytes).toBe(a.totals.blob_bytes);
          expect(m.db_totals).toEqual(a.totals);
          expect(listed.find((l) => l.id === c.id)!.blob_count).toBe(a.count);
          expect(listed.find((l) => l.id === c.id)!.size_bytes).toBe(Bun.file(file).size);

          // every id's content must be a state that was acknowledged before the checkpoint was
          // asked for, or a later one whose request was sent before it completed
          const wrong: string[] = [];
          let mustHave = 0;
          for (const [id, versions] of history) {
            let lo = -1; // last version acknowledged before the request
            let hi = -1; // last version sent before the checkpoint completed
            versions.forEach((ver, j) => {
              if (ver.ackAt < c.issuedAt) lo = j;
              if (ver.sentAt < c.doneAt) hi = j;
            });
            const allowed = new Set<string | null>();
            if (lo === -1) allowed.add(null); // it may not exist yet
            for (let j = Math.max(lo, 0); j <= hi; j++) allowed.add(versions[j]!.sha);
            const got = a.blobs.get(id) ?? null;
            if (lo >= 0 && versions[lo]!.sha !== null) mustHave++;
            if (!allowed.has(got)) {
              wrong.push(
                `${id}: ${got === null ? "absent" : "content " + got.slice(0, 8)}; acknowledged before the request: ${lo >= 0 ? (versions[lo]!.sha?.slice(0, 8) ?? "deleted") : "nothing"}`,
              );
            }
          }
          for (const id of a.blobs.keys()) if (!history.has(id)) wrong.push(`${id}: never written`);
          expect(wrong.slice(0, 10)).toEqual([]);
          // the writers really were writing while this checkpoint was taken
          const during = [...history.values()].flat().filter((ver) => ver.ackAt > c.issuedAt && ver.ackAt < c.doneAt).length;
          expect(during).toBeGreaterThan(0);
          // the checkpoints are not trivially empty nor all alike
          expect(mustHave).toBeGreaterThan(previousCount);
          previousCount = mustHave;
        }
      } finally {
        expect(await node.stop()).toBe(0);
      }
    }, 120_000);
  }
});

describe("deduplication", () => {
  test("a second checkpoint of an unchanged database stores almost nothing; a small change stores little", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n" });
    try {
      await putAll(
        node.url,
        Array.from({ length: 500 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) })),
      );
      expect(createCheckpoint(node)).toBe(1);
      const after1 = duBytes(store);
      expect(createCheckpoint(node)).toBe(2);
      const after2 = duBytes(store);
      await putAll(node.url, [{ id: "b7", body: pseudoRandomBytes(77_777, 20_000) }]);
      expect(createCheckpoint(node)).toBe(3);

      const [l1, l2, l3] = listJson(store);
      expect(l1!.size_bytes).toBeGreaterThan(10_000_000);
      expect(l1!.new_bytes).toBeGreaterThanOrEqual(l1!.size_bytes * 0.9);
      expect(l2!.size_bytes).toBe(l1!.size_bytes);
      expect(l2!.new_bytes).toBeLessThan(l2!.size_bytes * 0.01);
      expect(after2 - after1).toBeLessThan(after1 * 0.01);
      expect(l3!.new_bytes).toBeLessThan(l3!.size_bytes * 0.02);

      // checkpoint 2 is the same database as checkpoint 1, byte for byte
      const m1 = join(dir, "m1.db");
      const m2 = join(dir, "m2.db");
      await materialize(store, 1, m1);
      await materialize(store, 2, m2);
      expect(sha256(await Bun.file(m2).bytes())).toBe(sha256(await Bun.file(m1).bytes()));
      const m3 = join(dir, "m3.db");
      await materialize(store, 3, m3);
      const a3 = auditDb(m3);
      expect(a3.integrity).toBe("ok");
      expect(a3.blobs.get("b7")).toBe(sha256(pseudoRandomBytes(77_777, 20_000)));
      expect(a3.blobs.get("b8")).toBe(sha256(pseudoRandomBytes(9, 20_000)));
      expect(verify(store).code).toBe(0);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 90_000);
});

describe("one checkpoint at a time", () => {
  test("a second checkpoint create while one runs or waits fails with exit 1 and 'Backup already in progress'", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    // 4 MB at 250 KB/s: the checkpoint runs for at least 16 s, so it still runs through the
    // refused requests and the cancel below however slow the machine is
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_write_bytes_per_sec: 250000\n" });
    try {
      await putAll(node.url, Array.from({ length: 100 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 40_000) })));
      const started = admin(node, ["checkpoint", "create", "--detach"]);
      expect(started.code).toBe(0);
      expect(started.stdout).toContain(`Checkpoint started into ${store}`);
      expect((await checkpointStatus(node)).running).not.toBeNull();

      for (const extra of [[], ["--detach"], ["--path", join(dir, "elsewhere")]]) {
        const second = await adminAsync(node, ["checkpoint", "create", ...extra]);
        expect(second.code).toBe(1);
        expect(second.stderr).toContain("Backup already in progress");
      }
      expect(existsSync(join(dir, "elsewhere"))).toBe(false);
      const cancel = admin(node, ["checkpoint", "cancel"]);
      expect(cancel.code).toBe(0);

      // also while one is waiting for its --delay-secs
      const delayed = admin(node, ["checkpoint", "create", "--delay-secs", "30", "--detach"]);
      expect(delayed.code).toBe(0);
      const status = await checkpointStatus(node);
      expect(status.running?.state).toBe("waiting");
      const busy = admin(node, ["checkpoint", "create"]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toContain("Backup already in progress");
      expect(admin(node, ["checkpoint", "cancel"]).code).toBe(0);
      const after = await checkpointStatus(node);
      expect(after.running).toBeNull();
      expect(after.cancellations).toBe(2);
      expect(after.successes).toBe(0);
      expect(runCairn(["list-db-checkpoint", store]).stdout).toBe(`No checkpoints found in ${store}\n`);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);
});

describe("list-db-checkpoint", () => {
  test("prints the contract's format, matching --json, byte for byte", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n  max_background_operations: 2\n" });
    try {
      await putAll(node.url, Array.from({ length: 150 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 30_000) })));
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, Array.from({ length: 150 }, (_, i) => ({ id: `c${i}`, body: pseudoRandomBytes(5000 + i, 30_000) })));
      expect(createCheckpoint(node)).toBe(2);

      const listed = listJson(store);
      expect(listed).toHaveLength(2);
      const nodeId = (await getJson(`${node.url}/v1/status`)).node_id;
      for (const l of listed) {
        expect([typeof l.id, typeof l.size_bytes, typeof l.files, typeof l.created, l.node_id]).toEqual(["number", "number", "number", "string", nodeId]);
        // Files: the stored files it needs, all present
        const m = JSON.parse(await Bun.file(join(store, "manifests", `${String(l.id).padStart(10, "0")}.json`)).text());
        expect(l.files).toBe(m.packs.length * 2 + 1);
        for (const p of m.packs as string[]) {
          expect(existsSync(join(store, "packs", p.slice(0, 2), `${p}.pack`))).toBe(true);
          expect(existsSync(join(store, "packs", p.slice(0, 2), `${p}.idx`))).toBe(true);
        }
        expect(l.size_bytes).toBe(m.db_size_bytes);
      }

      const r = runCairn(["list-db-checkpoint", store]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe("");
      const expected =
        `Available checkpoints in ${store}:\n` +
        listed
          .map(
            (l) =>
              `  Backup ID: ${l.id}, Size: ${decimalSize(l.size_bytes)}, Files: ${l.files}, Created: ${new Date(l.created).toISOString().slice(0, 19)}Z\n`,
          )
          .join("");
      expect(r.stdout).toBe(expected);
      for (const line of r.stdout.split("\n").slice(1, -1)) {
        expect(line).toMatch(/^ {2}Backup ID: \d+, Size: \d+\.\d (B|KB|MB|GB|TB), Files: \d+, Created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      }
      // sizes here are a few MB: the unit is MB
      expect(r.stdout).toMatch(/Size: \d\.\d MB/);
      // the Created time is the checkpoint's own, close to now
      expect(Math.abs(Date.parse(listed[1]!.created) - Date.now())).toBeLessThan(60_000);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);

  test("an empty directory says so; a missing one is an error", () => {
    const dir = tmpDir();
    const empty = join(dir, "empty");
    mkdirSync(empty);
    const r = runCairn(["list-db-checkpoint", empty]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`No checkpoints found in ${empty}\n`);
    expect(runCairn(["list-db-checkpoint", empty, "--json"]).stdout.trim()).toBe("[]");
    expect(existsSync(join(empty, "cairn-store.json"))).toBe(false);

    const missing = join(dir, "missing");
    const m = runCairn(["list-db-checkpoint", missing]);
    expect(m.code).toBe(1);
    expect(m.stdout).toBe("");
    expect(m.stderr).toStartWith("error: ");
    expect(m.stderr).toContain(missing);
    expect(existsSync(missing)).toBe(false);
  });

  test("works while the node runs and changes nothing in the store", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir);
    try {
      await putAll(node.url, Array.from({ length: 60 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 30_000) })));
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, [{ id: "b1", body: pseudoRandomBytes(99, 30_000) }]);
      expect(createCheckpoint(node)).toBe(2);
      const before = treeSnapshot(store);
      await fsClockPast(store); // a write now would show in the mtimes
      const text = runCairn(["list-db-checkpoint", store]);
      expect(text.code).toBe(0);
      expect(text.stdout.split("\n")).toHaveLength(4);
      const json = runCairn(["list-db-checkpoint", store, "--json"]);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toHaveLength(2);
      expect(treeSnapshot(store)).toEqual(before);
      // and the node is none the worse
      expect((await fetch(`${node.url}/v1/blobs/b1`)).status).toBe(200);
      expect(createCheckpoint(node)).toBe(3);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);
});

describe("ownership of a checkpoint directory", () => {
  test("another node may not write into it: exit 1 naming the owner, store unchanged", async () => {
    const dirA = tmpDir();
    const dirB = tmpDir();
    const store = join(dirA, "checkpoints");
    const a = await startNode(dirA);
    const b = await startNode(dirB);
    try {
      await putAll(a.url, Array.from({ length: 40 }, (_, i) => ({ id: `a${i}`, body: pseudoRandomBytes(i + 1, 20_000) })));
      await putAll(b.url, Array.from({ length: 40 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1000, 20_000) })));
      expect(createCheckpoint(a)).toBe(1);
      const idA = (await getJson(`${a.url}/v1/status`)).node_id;
      const idB = (await getJson(`${b.url}/v1/status`)).node_id;
      expect(idA).not.toBe(idB);

      // the refused node may take the store's writer lock for a moment (flock on
      // cairn-store.lock) before it reads the owner; everything else must stay untouched
      const notLock = { exclude: (rel: string) => rel === "cairn-store.lock" };
      const before = treeSnapshot(store, notLock);
      await fsClockPast(store); // a write now would show in the mtimes
      const r = admin(b, ["checkpoint", "create", "--path", store]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(idA);
      expect(r.stderr.trim().split("\n")[0]).toStartWith("error: ");
      const detached = admin(b, ["checkpoint", "create", "--path", store, "--detach"]);
      // it may be refused at once or fail inside the node; either way nothing is written
      if (detached.code === 0) await waitFor(async () => (await checkpointStatus(b)).running === null, { what: "the refused checkpoint to end" });
      const sb = await checkpointStatus(b);
      expect(sb.last.outcome).toBe("failed");
      expect(sb.last.error).toContain(idA);
      expect(sb.successes).toBe(0);

      expect(treeSnapshot(store, notLock)).toEqual(before);
      expect(await Bun.file(join(store, "cairn-store.lock")).text()).toBe("");
      const listed = listJson(store);
      expect(listed.map((l) => [l.id, l.node_id])).toEqual([[1, idA]]);
      // the owner carries on
      expect(createCheckpoint(a)).toBe(2);
      expect(verify(store).code).toBe(0);
    } finally {
      expect(await a.stop()).toBe(0);
      expect(await b.stop()).toBe(0);
    }
  }, 60_000);
});

describe("periodic checkpoints", () => {
  for (const interval of ["db_checkpoint_interval_secs: 1", "db_checkpoint_interval:\n    secs: 1\n    nanos: 0"]) {
    test(`every second from the start (${interval.replace(/\n */g, " ")}): at least 2 appear within a few seconds; status shows next_periodic`, async () => {
      const dir = tmpDir();
      const store = join(dir, "checkpoints");
      const node = await startNode(dir, {
        extraYaml: `checkpoint_config:\n  periodic_db_checkpoints: true\n  ${interval}\n  db_checkpoint_startup_delay_secs: 0\n`,
      });
      try {
        await putAll(node.url, Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 10_000) })));
        // "a few seconds" next to the default interval of a day: generous for a busy machine
        await waitFor(() => existsSync(join(store, "manifests")) && listJson(store).length >= 2, { what: "two periodic checkpoints", detail: () => node.logs() });
        const listed = listJson(store);
        expect(listed[0]!.id).toBe(1);
        expect(listed[1]!.id).toBe(2);
        expect(Date.parse(listed[1]!.created) - Date.parse(listed[0]!.created)).toBeGreaterThanOrEqual(900);
        const s = await checkpointStatus(node);
        expect(s.periodic).toBe(true);
        expect(s.successes).toBeGreaterThanOrEqual(2);
        if (s.running === null) {
          expect(typeof s.next_periodic).toBe("string");
          expect(Number.isNaN(Date.parse(s.next_periodic))).toBe(false);
          expect(Date.parse(s.next_periodic)).toBeGreaterThan(Date.parse(listed.at(-1)!.created));
        }
        // whatever the moment, next_periodic is set again once the running one is done
        await waitFor(
          async () => {
            const x = await checkpointStatus(node);
            return x.running === null && typeof x.next_periodic === "string";
          },
          { what: "next_periodic to be set" },
        );
        // the text form names the next time too, between two checkpoints (while one runs, the
        // next comes "after the running one"; with a 1 s interval the next may start any moment)
        const text = await waitFor(
          async () => {
            const t = await adminAsync(node, ["checkpoint", "status"]);
            return t.code !== 0 || t.stdout.startsWith("No checkpoint running.") ? t : undefined;
          },
          { what: "checkpoint status taken between two periodic checkpoints" },
        );
        expect(text.code).toBe(0);
        expect(text.stdout).toMatch(/Periodic: on, next at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/);
      } finally {
        expect(await node.stop()).toBe(0);
      }
    }, 90_000);
  }

  test("while a periodic checkpoint runs, next_periodic is not a time already past", async () => {
    const dir = tmpDir();
    // the data first, on a node without a schedule, so that the first periodic checkpoint holds
    // all of it: ~4 MB at 500 KB/s, a run of at least 8 s
    const filler = await startNode(dir);
    await putAll(filler.url, Array.from({ length: 100 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 40_000) })));
    expect(await filler.stop()).toBe(0);
    const node = await startNode(dir, {
      extraYaml:
        "checkpoint_config:\n  periodic_db_checkpoints: true\n  db_checkpoint_interval_secs: 1\n  db_checkpoint_startup_delay_secs: 0.5\n" +
        "  max_write_bytes_per_sec: 500000\n",
    });
    try {
      const run = await waitFor(
        async () => {
          const r = (await checkpointStatus(node)).running;
          return r?.state === "running" ? r : undefined;
        },
        { what: "a periodic checkpoint to run", detail: () => node.logs() },
      );
      // a whole interval into the run: a next time taken from the tick or the run's start is past by now
      await waitFor(() => Date.now() > Date.parse(run.started) + 1000, { what: "one interval (1 s) since the periodic checkpoint started" });
      const at = Date.now();
      const s = await checkpointStatus(node);
      expect(s.running?.state).toBe("running");
      expect(s.running.trigger).toBe("periodic");
      // null ("after the running one", as checkpoint status puts it) or a time still ahead
      if (s.next_periodic !== null) expect({ next_periodic: s.next_periodic, now: new Date(at).toISOString(), past: Date.parse(s.next_periodic) < at }).toMatchObject({ past: false });
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);
});
