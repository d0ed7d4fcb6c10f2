import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CheckpointConfig, DEFAULTS } from "../../src/config/config.ts";
import { CheckpointManager } from "../../src/checkpoint/manager.ts";
import type { CheckpointRun } from "../../src/checkpoint/run.ts";
import { firstPeriodicRun, nextPeriodicRun } from "../../src/checkpoint/scheduler.ts";
import { dbPathIn, openNodeDatabase } from "../../src/engine/database.ts";
import { LiveFiles } from "../../src/engine/live-files.ts";
import { silentLogger } from "../../src/log.ts";
import { FakeClock } from "../helpers/clock.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();

const H = 3_600_000;

describe("schedule arithmetic", () => {
  const cfg = { intervalMs: 4 * H, startupDelayMs: 60_000, retryBackoffMs: 300_000 };

  test("first run: latest + interval when that is later than the start-up delay", () => {
    expect(firstPeriodicRun(1_000 * H, 1_001 * H, cfg)).toBe(1_004 * H);
  });
  test("first run: never before the start-up delay, even if a run is overdue", () => {
    expect(firstPeriodicRun(900 * H, 1_000 * H, cfg)).toBe(1_000 * H + 60_000);
  });
  test("first run with no checkpoint yet: after the start-up delay", () => {
    expect(firstPeriodicRun(undefined, 1_000 * H, cfg)).toBe(1_000 * H + 60_000);
  });
  test("after a success: an interval after the checkpoint's creation", () => {
    const done = { outcome: "success", result: { created: new Date(1_000 * H).toISOString() } } as CheckpointRun;
    expect(nextPeriodicRun(done, 1_000 * H + 5_000, cfg)).toBe(1_004 * H);
  });
  test("after a failure: the back-off", () => {
    const done = { outcome: "failed" } as CheckpointRun;
    expect(nextPeriodicRun(done, 1_000 * H, cfg)).toBe(1_000 * H + 300_000);
  });
});

describe("periodic checkpoints driven by a fake clock", () => {
  function setup(overrides: Partial<CheckpointConfig>) {
    const dir = tmpDir();
    const { db, nodeId } = openNodeDatabase(join(dir, "db"));
    db.query("INSERT INTO meta VALUES ('x', ?)").run("y".repeat(10_000));
    const clock = new FakeClock();
    const config: CheckpointConfig = {
      dir: join(dir, "ckpt"),
      retention: { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
      includeFiles: [],
      intervalMs: H,
      sync: false,
      maxBackgroundOperations: 1,
      periodic: true,
      startupDelayMs: 10_000,
      retryBackoffMs: 300_000,
      taskTimeoutMs: H,
      compression: "none",
      maxWriteBytesPerSec: 0,
      maxPacedWalBytes: 0,
      walShipping: { enabled: false, intervalMs: 1000, synchronous: false, synchronousTimeoutMs: 10_000, remoteLagWarningMs: 60_000 },
      ...overrides,
    };
    const wal = { pause: async () => ({ resume: () => {} }) };
    const live = LiveFiles.open(dbPathIn(join(dir, "db")));
    const manager = new CheckpointManager({ config, nodeId, live, storagePath: join(dir, "db"), wal, logger: silentLogger, clock });
    return { dir, db, clock, manager, config };
  }

  /** Wait until no checkpoint runs and the schedule has its next time (set once a run is done). */
  async function settle(manager: CheckpointManager) {
    await waitFor(() => manager.status().running === null && manager.status().next_periodic !== null, {
      what: "the periodic checkpoint to end and the next one to be scheduled",
      timeoutMs: 20_000,
      intervalMs: 5,
    });
  }

  test("runs after the start-up delay, then every interval", async () => {
    const { db, clock, manager } = setup({});
    await manager.start();
    const start = clock.now();
    expect(Date.parse(manager.status().next_periodic!)).toBe(start + 10_000);
    clock.advance(9_999);
    expect(manager.status().running).toBeNull();
    clock.advance(1);
    await settle(manager);
    expect(manager.status().successes).toBe(1);
    const created = Date.parse(manager.status().last!.result!.created);
    expect(Date.parse(manager.status().next_periodic!)).toBe(Math.max(created + H, clock.now()));
    clock.advance(H);
    await settle(manager);
    expect(manager.status().successes).toBe(2);
    await manager.stop();
    expect(manager.status().next_periodic).toBeNull();
    db.close();
  }, 60_000);

  test("a failed run is retried after the back-off", async () => {
    const { dir, db, clock, manager } = setup({ dir: "" });
    // the checkpoint directory is a file: every attempt fails
    const file = join(dir, "not-a-dir");
    writeFileSync(file, "x");
    (manager as unknown as { deps: { config: CheckpointConfig } }).deps.config.dir = file;
    await manager.start();
    clock.advance(10_000);
    await settle(manager);
    expect(manager.status().failures).toBe(1);
    expect(manager.status().consecutive_failures).toBe(1);
    expect(Date.parse(manager.status().next_periodic!)).toBe(clock.now() + 300_000);
    clock.advance(300_000);
    await settle(manager);
    expect(manager.status().failures).toBe(2);
    await manager.stop();
    db.close();
  }, 60_000);

  test("a running checkpoint makes a second request fail with Backup already in progress", async () => {
    const { db, manager } = setup({ periodic: false });
    manager.request({ delaySecs: 3600 });
    expect(() => manager.request()).toThrow("Backup already in progress");
    const cancelled = await manager.cancel();
    expect(cancelled?.outcome).toBe("cancelled");
    expect(manager.status().running).toBeNull();
    db.close();
  });
});

test("defaults follow Walrus: 5 minute back-off, 1 hour timeout", () => {
  expect(DEFAULTS.retryBackoffSecs).toBe(300);
  expect(DEFAULTS.taskTimeoutSecs).toBe(3600);
});
