/**
 * Config and key files carried with every checkpoint (checkpoint_config.include_files): stored
 * once per change, named by list, checked by verify, put back by restore --with-files (a
 * different file moved aside) or under --files-to DIR, carried by export, collected by
 * retention; a listed file that cannot be read fails the checkpoint with its name.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync, chmodSync, copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { admin, createCheckpoint, filesUnder, flipByte, listJson, putAll, verify } from "../helpers/checkpoint.ts";
import { pseudoRandomBytes, runCairn, startNode } from "../helpers/node.ts";
import { restore } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

/** The carried files' stored objects, as paths under the store (files/<xx>/<name>). */
const filesUnderStore = (store: string) => filesUnder(store, "files");

describe("include_files", () => {
  test("carried, stored once per change, listed, verified, put back (moved aside when different, or under --files-to), exported, collected; a missing one fails the checkpoint", async () => {
    const dir = tmpDir();
    const store = join(dir, "checkpoints");
    const keyFile = join(dir, "node_key.json");
    const config = join(dir, "cairn.yaml");
    writeFileSync(keyFile, '{"key": "v1-MARKER-k7QxZ"}\n');
    chmodSync(keyFile, 0o600);
    const node = await startNode(dir, { extraYaml: `checkpoint_config:\n  max_db_checkpoints: 0\n  include_files: [./cairn.yaml, ${keyFile}]\n` });
    try {
      await putAll(node.url, Array.from({ length: 10 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i, 4000) })));
      expect(createCheckpoint(node)).toBe(1);
      expect(createCheckpoint(node)).toBe(2);
      // two checkpoints, the same two files: stored once
      expect(filesUnderStore(store)).toHaveLength(2);
      writeFileSync(keyFile, '{"key": "v2-rotated"}\n');
      expect(createCheckpoint(node)).toBe(3);
      expect(filesUnderStore(store)).toHaveLength(3);
      const listed = listJson(store) as unknown as { id: number; included_files: { path: string; size: number; mode: string }[] }[];
      expect(listed.map((c) => c.included_files)).toEqual([1, 2, 3].map((id) => [
        { path: config, size: statSync(config).size, mode: (statSync(config).mode & 0o777).toString(8).padStart(4, "0") },
        { path: keyFile, size: id < 3 ? 27 : 22, mode: "0600" },
      ]));
      // a listed file that cannot be read: the checkpoint fails with its name; nothing is listed
      rmSync(keyFile);
      const failed = admin(node, ["checkpoint", "create"]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toContain(`checkpoint_config.include_files: cannot read ${keyFile}: no such file`);
      expect(listJson(store).map((c) => c.id)).toEqual([1, 2, 3]);
      writeFileSync(keyFile, '{"key": "v2-rotated"}\n');
      chmodSync(keyFile, 0o600);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    expect(verify(store).code).toBe(0);

    // --with-files, checkpoint 2: the config is the same (left alone), the key file differs (moved aside, the old one put back)
    const target = join(tmpDir(), "db");
    const r = restore(store, target, ["--checkpoint-id", "2", "--with-files"]);
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Carried file ${config}: already there, unchanged`);
    const aside = new RegExp(`Carried file ${keyFile}: put back at ${keyFile}; the different file there was moved to (${keyFile}\\.replaced-\\S+)`).exec(r.stdout)?.[1];
    expect(aside).toBeDefined();
    expect(readFileSync(keyFile, "utf8")).toBe('{"key": "v1-MARKER-k7QxZ"}\n');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(aside!, "utf8")).toBe('{"key": "v2-rotated"}\n');

    // --files-to DIR: under DIR at their absolute paths, the originals untouched
    const under = tmpDir();
    const r2 = restore(store, join(tmpDir(), "db"), ["--files-to", under]);
    expect(r2.code).toBe(0);
    expect(readFileSync(join(under, keyFile), "utf8")).toBe('{"key": "v2-rotated"}\n');
    expect(readFileSync(join(under, config), "utf8")).toBe(readFileSync(config, "utf8"));

    // export carries them; a restore from the archive puts them back
    const tar = join(tmpDir(), "c3.tar");
    expect(runCairn(["export-db-checkpoint", store, "--checkpoint-id", "3", "--output", tar]).code).toBe(0);
    expect(verify(tar).code).toBe(0);
    const under2 = tmpDir();
    const r3 = restore(tar, join(tmpDir(), "db"), ["--files-to", under2]);
    expect(r3.code).toBe(0);
    expect(readFileSync(join(under2, keyFile), "utf8")).toBe('{"key": "v2-rotated"}\n');

    // damage: a flipped byte in a carried file is found by verify and refused by restore, the target untouched
    const stored = filesUnderStore(store).map((f) => join(store, f));
    const v1 = stored.find((f) => readFileSync(f, "utf8").includes("v1-MARKER"))!;
    const keep = join(tmpDir(), "v1");
    copyFileSync(v1, keep);
    flipByte(v1, 5);
    const bad = verify(store);
    expect(bad.code).toBe(1);
    expect(bad.stdout + bad.stderr).toContain(`carried file ${keyFile}`);
    const t4 = join(tmpDir(), "db");
    const r4 = restore(store, t4, ["--checkpoint-id", "1", "--with-files"]);
    expect(r4.code).toBe(1);
    expect(r4.stderr).toContain(`the carried file ${keyFile} does not match its digest`);
    expect(existsSync(join(t4, "cairn.db"))).toBe(false);
    copyFileSync(keep, v1);

    // retention collects what no remaining checkpoint carries
    expect(runCairn(["prune-db-checkpoint", store, "--keep-last", "1"]).code).toBe(0);
    expect(filesUnderStore(store)).toHaveLength(2);
    expect(verify(store).code).toBe(0);
  }, 120_000);

  test("in an encrypted store, a carried file's bytes are sealed: its content appears in no stored file", async () => {
    const dir = tmpDir();
    const keyPath = join(dir, "checkpoint.key");
    expect(runCairn(["key", "generate", "--output", keyPath]).code).toBe(0);
    const secret = join(dir, "secret.json");
    writeFileSync(secret, '{"token": "PLAINTEXT-MARKER-9f8e7d"}\n', { mode: 0o600 });
    const node = await startNode(dir, { extraYaml: `checkpoint_config:\n  include_files: [${secret}]\n  encryption:\n    key_file: ${keyPath}\n` });
    try {
      expect(createCheckpoint(node)).toBe(1);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    const store = join(dir, "checkpoints");
    const all = readdirSync(store, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
    expect(filesUnderStore(store)).toHaveLength(1);
    for (const f of all) expect(readFileSync(f).includes(Buffer.from("PLAINTEXT-MARKER"))).toBe(false);
    expect(runCairn(["verify-db-checkpoint", store, "--key-file", keyPath]).code).toBe(0);
    const under = tmpDir();
    expect(restore(store, join(tmpDir(), "db"), ["--files-to", under, "--key-file", keyPath]).code).toBe(0);
    expect(readFileSync(join(under, secret), "utf8")).toContain("PLAINTEXT-MARKER-9f8e7d");
  }, 60_000);
});
