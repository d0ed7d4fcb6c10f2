/**
 * Cloning a node from a checkpoint (restore --new-node-id): N restores of one checkpoint are N
 * nodes of their own, each checkpointing into its own store; the source's store refuses them;
 * a plain restore while the source is alive is warned about.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createCheckpoint, listJson, putAll } from "../helpers/checkpoint.ts";
import { freePort, getJson, pseudoRandomBytes, runCairn, sha256, startNode, startNodeWithConfig, writeConfig } from "../helpers/node.ts";
import { restore } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

describe("restore --new-node-id", () => {
  test("three clones of one checkpoint: three new ids, each serving the source's blobs and checkpointing into its own store; the source's store refuses them", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const source = await startNode(dir);
    const blobs = Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i, 5000 + i) }));
    let sourceId = "";
    const targets = [0, 1, 2].map(() => join(tmpDir(), "db"));
    try {
      sourceId = (await getJson(`${source.url}/v1/status`)).node_id;
      await putAll(source.url, blobs);
      expect(createCheckpoint(source)).toBe(1);
      // a plain restore while the source is alive: allowed, but said
      const plain = restore(store, join(tmpDir(), "db"));
      expect(plain.code).toBe(0);
      expect(plain.stderr).toMatch(new RegExp(`node ${sourceId} wrote to ${store} \\d+ min ago: if it is still running, a node started on this restore has the same identity; use --new-node-id`));
      // three clones
      const ids = new Set<string>();
      for (const [k, t] of targets.entries()) {
        const r = k === 0 ? runCairn(["restore", "--db-checkpoint-path", store, "--db-path", t, "--new-node-id", "--json"]) : restore(store, t, ["--new-node-id"]);
        expect(r.code).toBe(0);
        expect(r.stderr).not.toContain("same identity");
        const id = k === 0 ? JSON.parse(r.stdout).new_node_id : /^New node id: (\S+) \(a clone of node (\S+)\)$/m.exec(r.stdout)?.[1];
        if (k > 0) expect(r.stdout).toContain(`(a clone of node ${sourceId})`);
        expect(id).toMatch(/^[0-9a-f-]{36}$/);
        ids.add(id);
      }
      expect(ids.size).toBe(3);
      expect(ids.has(sourceId)).toBe(false);
    } finally {
      expect(await source.stop()).toBe(0);
    }

    // a clone configured with the source's store: refused at start, as another node
    const c0dir = join(targets[0]!, "..");
    const c0cfg = writeConfig(c0dir, freePort(), `checkpoint_config:\n  db_checkpoint_dir: ${store}\n`);
    const refused = runCairn(["run", "--config", c0cfg], { timeoutMs: 20_000 });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`${store} holds the checkpoints of node ${sourceId}`);

    // each clone with a store of its own: serves the source's blobs, checkpoints as itself
    const seen = new Set<string>();
    for (const t of targets) {
      const home = join(t, "..");
      const port = freePort();
      const node = await startNodeWithConfig(home, writeConfig(home, port, ""), `http://127.0.0.1:${port}`);
      try {
        const id = (await getJson(`${node.url}/v1/status`)).node_id;
        seen.add(id);
        for (const b of blobs.slice(0, 5)) {
          const r = await fetch(`${node.url}/v1/blobs/${b.id}`);
          expect(sha256(await r.arrayBuffer())).toBe(sha256(b.body));
        }
        expect(createCheckpoint(node)).toBe(1);
        expect(listJson(join(home, "checkpoints")).map((c) => c.node_id)).toEqual([id]);
      } finally {
        expect(await node.stop()).toBe(0);
      }
    }
    expect(seen.size).toBe(3);
    expect(listJson(store).map((c) => c.node_id)).toEqual([sourceId]);
  }, 120_000);
});
