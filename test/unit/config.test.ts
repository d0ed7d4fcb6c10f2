import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { embeddedConfig, loadConfigFile, parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/errors.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const FILE = "/etc/cairn/cairn.yaml";

describe("config: documents that load", () => {
  test("empty document: every default, paths beside the default storage path", () => {
    const c = parseConfig("", FILE);
    expect(c.storagePath).toBe("/opt/cairn/db");
    expect(c.adminSocketPath).toBe("/opt/cairn/admin.socket");
    expect(c.checkpoint.dir).toBe("/opt/cairn/checkpoints");
    expect(c.restApi).toEqual({ host: "127.0.0.1", port: 7420 });
    expect(c.logLevel).toBe("info");
    expect(c.maxBlobSize).toBe(67108864);
    expect(c.checkpoint).toMatchObject({ retention: { last: 3, hourly: 0, daily: 0, weekly: 0, monthly: 0 }, intervalMs: 86_400_000, sync: true, maxBackgroundOperations: 1, periodic: false });
  });

  test("the contract's Walrus-style example, verbatim", () => {
    const c = parseConfig(
      `storage_path: /opt/cairn/db            # directory; the database is <storage_path>/cairn.db
admin_socket_path: /opt/cairn/admin.socket
rest_api_address: 127.0.0.1:7420
log_level: info                        # trace | debug | info | warn | error
max_blob_size: 67108864                # bytes; a larger PUT body is refused with 413
checkpoint_config:
  db_checkpoint_dir: /opt/cairn/checkpoints
  max_db_checkpoints: 3                # how many to keep; 0 keeps all
  db_checkpoint_interval:              # also accepted: db_checkpoint_interval_secs: 86400
    secs: 86400
    nanos: 0
  sync: true                           # fsync every file of a checkpoint before it counts
  max_background_operations: 1         # worker threads a checkpoint may use
  periodic_db_checkpoints: false
`,
      FILE,
    );
    expect(c.storagePath).toBe("/opt/cairn/db");
    expect(c.checkpoint.intervalMs).toBe(86_400_000);
  });

  const good: [string, string, (c: ReturnType<typeof parseConfig>) => void][] = [
    ["relative paths resolve against the config file's folder", "storage_path: data/db\nadmin_socket_path: ./a.sock\ncheckpoint_config:\n  db_checkpoint_dir: ../ckpt\n", (c) => {
      expect(c.storagePath).toBe("/etc/cairn/data/db");
      expect(c.adminSocketPath).toBe("/etc/cairn/a.sock");
      expect(c.checkpoint.dir).toBe("/etc/ckpt");
    }],
    ["socket and checkpoints default beside storage_path", "storage_path: /srv/x/db\n", (c) => {
      expect(c.adminSocketPath).toBe("/srv/x/admin.socket");
      expect(c.checkpoint.dir).toBe("/srv/x/checkpoints");
    }],
    ["db_checkpoint_interval_secs", "checkpoint_config:\n  db_checkpoint_interval_secs: 3600\n", (c) => expect(c.checkpoint.intervalMs).toBe(3_600_000)],
    ["interval secs + nanos", "checkpoint_config:\n  db_checkpoint_interval: {secs: 1, nanos: 500000000}\n", (c) => expect(c.checkpoint.intervalMs).toBe(1500)],
    ["IPv6 address", "rest_api_address: '[::1]:8080'\n", (c) => expect(c.restApi).toEqual({ host: "::1", port: 8080 })],
    ["max_db_checkpoints 0 keeps all", "checkpoint_config:\n  max_db_checkpoints: 0\n", (c) => expect(c.checkpoint.retention.last).toBe(0)],
    ["remote block", "checkpoint_config:\n  remote:\n    url: s3://bucket/cairn/node-a\n    region: us-east-1\n", (c) =>
      expect(c.checkpoint.remote).toEqual({ url: "s3://bucket/cairn/node-a", region: "us-east-1", endpoint: undefined, retention: { last: 30, hourly: 0, daily: 0, weekly: 0, monthly: 0 }, retryBackoffMs: 60_000, requestTimeoutMs: 30_000, accessKeyId: undefined, secretAccessKey: undefined })],
    ["retention by age; keep_last from max_db_checkpoints", "checkpoint_config:\n  max_db_checkpoints: 5\n  retention: {keep_daily: 7, keep_weekly: 4}\n", (c) =>
      expect(c.checkpoint.retention).toEqual({ last: 5, hourly: 0, daily: 7, weekly: 4, monthly: 0 })],
    ["retention alone: keep_last as given, or the default count", "checkpoint_config:\n  retention: {keep_monthly: 12}\n  remote: {url: 's3://b/p', retention: {keep_last: 2, keep_hourly: 24}}\n", (c) => {
      expect(c.checkpoint.retention).toEqual({ last: 3, hourly: 0, daily: 0, weekly: 0, monthly: 12 });
      expect(c.checkpoint.remote!.retention).toEqual({ last: 2, hourly: 24, daily: 0, weekly: 0, monthly: 0 });
    }],
    ["admin_api", "admin_api:\n  address: 127.0.0.1:7421\n  token_file: t\n", (c) => expect(c.adminApi).toEqual({ host: "127.0.0.1", port: 7421, tokenFile: "/etc/cairn/t" })],
    ["rest_api beyond loopback with tokens and TLS", "rest_api_address: 0.0.0.0:7420\nrest_api:\n  tokens_file: api.tokens\n  tls: {cert_file: t.crt, key_file: t.key}\n", (c) =>
      expect(c.restAccess).toEqual({ tokensFile: "/etc/cairn/api.tokens", anonymous: "none", tls: { certFile: "/etc/cairn/t.crt", keyFile: "/etc/cairn/t.key" } })],
    ["rest_api anonymous read, no tokens, beyond loopback: a read-only node", "rest_api_address: '[::]:7420'\nrest_api:\n  anonymous: read\n", (c) =>
      expect(c.restAccess).toEqual({ anonymous: "read" })],
    ["include_files, relative to the config", "checkpoint_config:\n  include_files: [cairn.yaml, /opt/cairn/node_key.json, cairn.yaml]\n", (c) =>
      expect(c.checkpoint.includeFiles).toEqual(["/etc/cairn/cairn.yaml", "/opt/cairn/node_key.json"])],
    ["only comments", "# nothing set\n", (c) => expect([c.logLevel, c.dbPageSize]).toEqual(["info", undefined])],
    ["db_page_size", "db_page_size: 4096\n", (c) => expect(c.dbPageSize).toBe(4096)],
    ["max_paced_wal_bytes: 1 GiB by default, 0 to always give way", "checkpoint_config:\n  max_paced_wal_bytes: 0\n", (c) => {
      expect(c.checkpoint.maxPacedWalBytes).toBe(0);
      expect(parseConfig("", FILE).checkpoint.maxPacedWalBytes).toBe(1024 ** 3);
    }],
  ];
  for (const [name, yaml, check] of good) test(name, () => check(parseConfig(yaml, FILE)));
});

describe("config: documents that are refused, naming the key and the value", () => {
  const bad: [string, string][] = [
    ["checkpoint_config:\n  max_db_checkpoints: two\n", `checkpoint_config.max_db_checkpoints: expected a whole number >= 0, got "two"`],
    ["checkpoint_config:\n  max_db_checkpoints: -1\n", `checkpoint_config.max_db_checkpoints: expected a whole number >= 0, got -1`],
    ["checkpoint_config:\n  max_db_checkpoints: 1.5\n", `checkpoint_config.max_db_checkpoints: expected a whole number >= 0, got 1.5`],
    ["max_blob_size: 0\n", "max_blob_size: expected a whole number from 1 to 1000000000, got 0"],
    ["max_blob_size: 2000000000\n", "max_blob_size: expected a whole number from 1 to 1000000000, got 2000000000"],
    ["log_level: loud\n", `log_level: expected one of trace | debug | info | warn | error, got "loud"`],
    ["db_page_size: 6000\n", "db_page_size: expected one of 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, got 6000"],
    ["rest_api_address: localhost\n", `rest_api_address: expected host:port, got "localhost"`],
    ["rest_api_address: 127.0.0.1:70000\n", `rest_api_address: expected a port from 0 to 65535, got "127.0.0.1:70000"`],
    ["rest_api_address: 7420\n", "rest_api_address: expected host:port, got 7420"],
    ["storage_path: ''\n", `storage_path: expected a path, got ""`],
    ["storage_path: [a, b]\n", "storage_path: expected a path, got a list"],
    ["checkpoint_config:\n  sync: yes please\n", `checkpoint_config.sync: expected true or false, got "yes please"`],
    ["checkpoint_config:\n  max_background_operations: 0\n", "checkpoint_config.max_background_operations: expected a whole number from 1 to 64, got 0"],
    ["checkpoint_config:\n  db_checkpoint_interval:\n    secs: 10\n    nanos: 1000000000\n", "checkpoint_config.db_checkpoint_interval.nanos: expected a whole number from 0 to 999999999, got 1000000000"],
    ["checkpoint_config:\n  db_checkpoint_interval: 10\n", "checkpoint_config.db_checkpoint_interval: expected {secs, nanos}, got 10"],
    ["checkpoint_config:\n  db_checkpoint_interval: {secs: 1}\n  db_checkpoint_interval_secs: 1\n", "checkpoint_config: set db_checkpoint_interval or db_checkpoint_interval_secs, not both"],
    ["checkpoint_config:\n  max_db_checkpoints: 3\n  retention: {keep_last: 2}\n", "checkpoint_config: set retention.keep_last or max_db_checkpoints, not both"],
    ["checkpoint_config:\n  retention: {keep_yearly: 2}\n", "checkpoint_config.retention.keep_yearly: unknown key (expected one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly)"],
    ["admin_api:\n  address: 10.0.0.5:7421\n  token_file: t\n", "admin_api.address: 10.0.0.5 is not a loopback address, and admin_api.tls is not set"],
    ["rest_api_address: 0.0.0.0:7420\n", "rest_api.tokens_file: rest_api_address 0.0.0.0 is not a loopback address, and no tokens are set: anyone reaching it could write and delete every blob"],
    ["rest_api:\n  anonymous: none\n", "rest_api.tokens_file: with rest_api set and anonymous: none, a request needs a token from tokens_file, and none is set"],
    ["rest_api:\n  anonymous: write\n", 'rest_api.anonymous: expected none or read, got "write"'],
    ["checkpoint_config: 5\n", "checkpoint_config: expected a mapping, got 5"],
    ["checkpoint_config:\n  db_checkpoint_interval_secs: 0\n", "checkpoint_config.db_checkpoint_interval_secs: expected an interval longer than 0, got 0"],
    ["checkpoint_config:\n  db_checkpoint_interval: {secs: 0, nanos: 0}\n", "checkpoint_config.db_checkpoint_interval: expected an interval longer than 0, got 0"],
    ["checkpoint_config:\n  max_paced_wal_bytes: -5\n", "checkpoint_config.max_paced_wal_bytes: expected a whole number >= 0, got -5"],
    ["checkpoint_config:\n  compression: lz4\n", `checkpoint_config.compression: expected none or zstd, got "lz4"`],
    ["checkpoint_config:\n  remote:\n    url: http://bucket\n", `checkpoint_config.remote.url: expected s3://BUCKET/PREFIX, got "http://bucket"`],
    ["storage_pth: /x\n", "storage_pth: unknown key (expected one of storage_path,"],
    ["checkpoint_config:\n  max_checkpoints: 3\n", "checkpoint_config.max_checkpoints: unknown key"],
    ["- a\n- b\n", "expected a mapping of config keys at the top level, got a list"],
    ["just a string\n", `expected a mapping of config keys at the top level, got "just a string"`],
    ["a: [\n", "invalid YAML at line"],
    ["log_level: info\nlog_level: debug\n", "invalid YAML"],
  ];
  for (const [yaml, message] of bad) {
    test(JSON.stringify(yaml), () => {
      let err: unknown;
      try {
        parseConfig(yaml, FILE);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      const e = err as ConfigError;
      expect(e.exitStatus).toBe(2);
      expect(e.message.startsWith(`${FILE}: `)).toBe(true);
      expect(e.message).toContain(message);
    });
  }

  test("every problem is reported, not only the first", () => {
    expect(() => parseConfig("log_level: loud\nmax_blob_size: x\n", FILE)).toThrow(/and 1 more: max_blob_size/);
  });
});

describe("config files", () => {
  test("a missing file is a config error", () => {
    expect(() => loadConfigFile("/nonexistent/cairn.yaml")).toThrow("cannot read config file /nonexistent/cairn.yaml: no such file");
  });

  test("a file loads with paths relative to its folder", () => {
    const dir = tmpDir();
    writeFileSync(join(dir, "c.yaml"), "storage_path: ./db\n");
    const c = loadConfigFile(join(dir, "c.yaml"));
    expect(c.storagePath).toBe(join(dir, "db"));
    expect(c.configFile).toBe(join(dir, "c.yaml"));
  });

  test("the embedded default puts everything under ./cairn-data", () => {
    const c = embeddedConfig("/home/op");
    expect(c.storagePath).toBe("/home/op/cairn-data/db");
    expect(c.adminSocketPath).toBe("/home/op/cairn-data/admin.socket");
    expect(c.checkpoint.dir).toBe("/home/op/cairn-data/checkpoints");
    expect(c.restApi).toEqual({ host: "127.0.0.1", port: 7420 });
  });
});
