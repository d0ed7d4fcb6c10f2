/**
 * Retention by age on a real store: `prune-db-checkpoint` shows (--dry-run) and applies a
 * policy to checkpoints spread over a year, refuses to apply one beside the running node that
 * owns the store, and a second node configured with the same store is refused.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { LocalStore } from "../../src/store/dir/writer.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { createCheckpoint, listJson, putAll, verify } from "../helpers/checkpoint.ts";
import { freePort, pseudoRandomBytes, runCairn, startNode, writeConfig } from "../helpers/node.ts";
import { restore } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** When each checkpoint "was" taken: a year of them, most recent at the end. */
const CREATED = [
  "2025-12-01T10:00:00.000Z",
  "2026-01-15T10:00:00.000Z",
  "2026-02-10T10:00:00.000Z",
  "2026-03-01T10:00:00.000Z",
  "2026-11-29T10:00:00.000Z",
  "2026-11-30T09:00:00.000Z",
  "2026-11-30T18:00:00.000Z",
  "2026-12-01T08:00:00.000Z",
];

describe("prune-db-checkpoint", () => {
  test("a year of checkpoints: --dry-run says what is kept and why, changes nothing; applied, the survivors verify and restore; refused beside the running node", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n" });
    let nodeId = "";
    try {
      for (let i = 0; i < CREATED.length; i++) {
        await putAll(node.url, Array.from({ length: 4 }, (_, k) => ({ id: `c${i}-${k}`, body: pseudoRandomBytes(i * 10 + k, 20_000) })));
        expect(createCheckpoint(node)).toBe(i + 1);
      }
      nodeId = listJson(store)[0]!.node_id;
      // beside the running node: a dry run is fine, applying is refused (the node applies its own policy)
      expect(runCairn(["prune-db-checkpoint", store, "--keep-last", "1", "--dry-run"]).code).toBe(0);
      const busy = runCairn(["prune-db-checkpoint", store, "--keep-last", "1"]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(/^error: a running node \(pid \d+\) owns .*; its own retention applies its policy after each checkpoint/);
      expect(listJson(store)).toHaveLength(8);
      // and a second node configured with the same store does not start (it is another node's)
      const other = tmpDir();
      const cfg = writeConfig(other, freePort(), `checkpoint_config:\n  db_checkpoint_dir: ${store}\n`);
      const second = runCairn(["run", "--config", cfg], { timeoutMs: 20_000 });
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`${store} holds the checkpoints of node ${nodeId}`);
    } finally {
      expect(await node.stop()).toBe(0);
    }

    // the checkpoints' creation times spread over a year (the manifests rewritten as the node writes them)
    const local = LocalStore.openForWrite(store, nodeId, quiet);
    try {
      const reader = new StoreReader(new DirBackend(store));
      for (let id = 1; id <= CREATED.length; id++) {
        const { checksum: _, ...m } = await reader.manifest(id);
        await local.writeManifest({ ...m, created: CREATED[id - 1]! });
      }
    } finally {
      local.release();
    }

    // keep_daily 2, keep_monthly 3: days 12-01 (8) and 11-30 (7); months 2026-12 (8), 2026-11 (7), 2026-03 (4)
    const policy = ["--keep-daily", "2", "--keep-monthly", "3"];
    const dry = runCairn(["prune-db-checkpoint", store, ...policy, "--dry-run", "--json"]);
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout);
    expect(plan.policy).toBe("keep_daily 2, keep_monthly 3");
    expect(plan.dry_run).toBe(true);
    expect(plan.removed).toEqual([1, 2, 3, 5, 6]);
    expect(plan.checkpoints.filter((c: { keep: boolean }) => c.keep).map((c: { id: number; reasons: string[] }) => [c.id, c.reasons])).toEqual([
      [4, ["monthly 2026-03"]],
      [7, ["daily 2026-11-30", "monthly 2026-11"]],
      [8, ["daily 2026-12-01", "monthly 2026-12"]],
    ]);
    expect(listJson(store)).toHaveLength(8);
    const text = runCairn(["prune-db-checkpoint", store, ...policy, "--dry-run"]);
    expect(text.stdout).toContain("Checkpoint 7, Created: 2026-11-30T18:00:00.000Z: keep (daily 2026-11-30, monthly 2026-11)");
    expect(text.stdout).toContain("Checkpoint 6, Created: 2026-11-30T09:00:00.000Z: would remove");
    expect(text.stdout).toContain("Would remove 5 checkpoint(s): 1, 2, 3, 5, 6 (dry run: nothing was changed)");

    const applied = runCairn(["prune-db-checkpoint", store, ...policy]);
    expect(applied.stderr).toBe("");
    expect(applied.code).toBe(0);
    expect(applied.stdout).toMatch(/Removed 5 checkpoint\(s\): 1, 2, 3, 5, 6; freed \d/);
    expect(listJson(store).map((c) => c.id)).toEqual([4, 7, 8]);
    expect(verify(store).code).toBe(0);
    const target = join(tmpDir(), "db");
    const r = restore(store, target, ["--checkpoint-id", "4"]);
    expect(r.code).toBe(0);
    // the same policy again removes nothing
    expect(runCairn(["prune-db-checkpoint", store, ...policy]).stdout).toContain("Nothing to remove");
    // the policy from a node config: max_db_checkpoints alone is keep_last
    const cfgDir = tmpDir();
    const cfg = writeConfig(cfgDir, freePort(), "checkpoint_config:\n  max_db_checkpoints: 2\n");
    const fromConfig = runCairn(["prune-db-checkpoint", store, "--config", cfg, "--dry-run", "--json"]);
    expect(JSON.parse(fromConfig.stdout).removed).toEqual([4]);
    // no policy at all: a usage error
    const none = runCairn(["prune-db-checkpoint", store]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("give the policy");
  }, 120_000);
});
