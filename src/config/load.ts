/**
 * The one config loader: YAML text → document → valibot validation (errors name the key path
 * and the value received) → defaults → absolute paths. Used by `cairn run` and by every
 * command that takes --config.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import * as v from "valibot";
import { parseDocument } from "yaml";
import { ConfigError, errorMessage, sysCode } from "../errors.ts";
import { type NodeConfig, type RetentionRules, DEFAULTS, EMBEDDED_STORAGE_PATH, MAX_SOCKET_PATH_BYTES } from "./config.ts";
import { ADDRESS_RE, configSchema, type ConfigDocument } from "./schema.ts";
import { isLoopback } from "../util/net.ts";

/** Load and validate a config file. Throws ConfigError (exit status 2) on any problem. */
export function loadConfigFile(file: string): NodeConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    const why = sysCode(e) === "ENOENT" ? "no such file" : sysCode(e) === "EISDIR" ? "it is a directory" : errorMessage(e);
    throw new ConfigError(`cannot read config file ${abs}: ${why}`, { cause: e });
  }
  return parseConfig(text, abs);
}

/** The embedded default: no file, everything under <cwd>/cairn-data. */
export function embeddedConfig(cwd = process.cwd()): NodeConfig {
  const config = resolveConfig({ storage_path: EMBEDDED_STORAGE_PATH }, cwd);
  checkResolved(config, "the embedded default");
  return config;
}

/** Parse YAML text as a config document; `file` names it in errors and anchors relative paths. */
export function parseConfig(text: string, file: string): NodeConfig {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    const where = err.linePos?.[0] ? ` at line ${err.linePos[0].line}, column ${err.linePos[0].col}` : "";
    const first = err.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
    throw new ConfigError(`${file}: invalid YAML${where}: ${first}`);
  }
  let raw: unknown;
  try {
    // an alias bomb (billion laughs) is refused here, as a config error
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (e) {
    throw new ConfigError(`${file}: invalid YAML: ${errorMessage(e)}`);
  }
  const parsed = validateDocument(raw, file);
  const config = resolveConfig(parsed, dirname(file));
  checkResolved(config, file);
  config.configFile = file;
  return config;
}

/** Checks that need the resolved values (absolute paths): all made before anything touches the disk. */
function checkResolved(c: NodeConfig, file: string): void {
  const n = Buffer.byteLength(c.adminSocketPath);
  if (n > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError(`${file}: admin_socket_path: ${c.adminSocketPath} is ${n} bytes long; a Unix socket path may be at most ${MAX_SOCKET_PATH_BYTES}`, {
      hint: "choose a shorter admin_socket_path",
    });
  }
  if (c.checkpoint.keyFile && c.checkpoint.walShipping.enabled) {
    // the shipped log's segments are not sealed yet: they would leave the host in plaintext
    throw new ConfigError(`${file}: checkpoint_config.wal_shipping: cannot be enabled together with checkpoint_config.encryption in this version`, {
      hint: "turn one of them off",
    });
  }
  if (!isLoopback(c.restApi.host) && !c.restAccess?.tokensFile && c.restAccess?.anonymous !== "read") {
    // anyone who can reach the address could PUT and DELETE every blob
    throw new ConfigError(
      `${file}: rest_api.tokens_file: rest_api_address ${c.restApi.host} is not a loopback address, and no tokens are set: anyone reaching it could write and delete every blob`,
      { hint: "set rest_api.tokens_file (lines \"TOKEN SCOPE[,SCOPE]\"), or rest_api.anonymous: read for a read-only node, or bind 127.0.0.1" },
    );
  }
  if (c.restAccess && !c.restAccess.tokensFile && c.restAccess.anonymous === "none") {
    throw new ConfigError(`${file}: rest_api.tokens_file: with rest_api set and anonymous: none, a request needs a token from tokens_file, and none is set`, {
      hint: "set rest_api.tokens_file, or remove rest_api (loopback only)",
    });
  }
  if (c.adminApi && !c.adminApi.tls && !isLoopback(c.adminApi.host)) {
    // a bearer token in clear text across a network is a token given away
    throw new ConfigError(`${file}: admin_api.address: ${c.adminApi.host} is not a loopback address, and admin_api.tls is not set`, {
      hint: "set admin_api.tls (cert_file, key_file), or bind 127.0.0.1",
    });
  }
  if (c.maxBodyBytesInFlight < c.maxBlobSize) {
    throw new ConfigError(`${file}: max_body_bytes_in_flight: expected at least max_blob_size (${c.maxBlobSize}), got ${c.maxBodyBytesInFlight}`);
  }
}

export function validateDocument(raw: unknown, file: string): ConfigDocument {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${file}: expected a mapping of config keys at the top level, got ${describeValue(raw)}`);
  }
  const result = v.safeParse(configSchema, raw, { abortEarly: false });
  if (!result.success) {
    const lines = result.issues.map(formatIssue);
    const more = lines.length > 1 ? ` (and ${lines.length - 1} more: ${lines.slice(1).join("; ")})` : "";
    throw new ConfigError(`${file}: ${lines[0]}${more}`);
  }
  const doc = result.output;
  const cc = doc.checkpoint_config;
  if (cc?.db_checkpoint_interval !== undefined && cc.db_checkpoint_interval_secs !== undefined) {
    throw new ConfigError(
      `${file}: checkpoint_config: set db_checkpoint_interval or db_checkpoint_interval_secs, not both`,
    );
  }
  if (cc?.retention?.keep_last !== undefined && cc.max_db_checkpoints !== undefined) {
    throw new ConfigError(`${file}: checkpoint_config: set retention.keep_last or max_db_checkpoints, not both`);
  }
  if (cc?.remote?.retention?.keep_last !== undefined && cc.remote.max_remote_checkpoints !== undefined) {
    throw new ConfigError(`${file}: checkpoint_config.remote: set retention.keep_last or max_remote_checkpoints, not both`);
  }
  const interval = cc?.db_checkpoint_interval;
  if ((interval && interval.secs === 0 && interval.nanos === 0) || cc?.db_checkpoint_interval_secs === 0) {
    const key = interval ? "db_checkpoint_interval" : "db_checkpoint_interval_secs";
    throw new ConfigError(`${file}: checkpoint_config.${key}: expected an interval longer than 0, got 0`);
  }
  return doc;
}

function formatIssue(issue: v.BaseIssue<unknown>): string {
  const keys = (issue.path ?? []).map((p) => String(p.key));
  if (issue.type === "strict_object" && issue.expected === "never") {
    return `${keys.join(".")}: unknown key (expected one of ${knownKeys(keys.slice(0, -1)).join(", ")})`;
  }
  const where = keys.length > 0 ? keys.join(".") : "(top level)";
  // a credential is never echoed, even when it is wrong
  const secret = /(secret|access_key)/.test(keys.at(-1) ?? "");
  return `${where}: ${issue.message}, got ${secret ? `a ${typeof issue.input} (not shown)` : describeValue(issue.input)}`;
}

/** The keys the schema allows in the mapping at `parent` (a key path). */
function knownKeys(parent: string[]): string[] {
  let schema: unknown = configSchema;
  for (const key of parent) {
    let entry = (schema as { entries?: Record<string, unknown> }).entries?.[key];
    // unwrap v.optional(...)
    while (entry && typeof entry === "object" && "wrapped" in entry) entry = (entry as { wrapped: unknown }).wrapped;
    schema = entry;
  }
  return Object.keys((schema as { entries?: Record<string, unknown> })?.entries ?? {});
}

function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return String(value);
}

/** A validated host:port (IPv6 in brackets) as host and port. */
function hostAndPort(address: string): { host: string; port: number } {
  const m = ADDRESS_RE.exec(address)!;
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

type RetentionDoc = NonNullable<NonNullable<ConfigDocument["checkpoint_config"]>["retention"]>;

/** The retention rules: the mapping if given (its keep_last from the count key when it has none), else keep_last = the count. */
function rulesOf(doc: RetentionDoc | undefined, count: number): RetentionRules {
  if (!doc) return { last: count, hourly: 0, daily: 0, weekly: 0, monthly: 0 };
  return { last: doc.keep_last ?? count, hourly: doc.keep_hourly ?? 0, daily: doc.keep_daily ?? 0, weekly: doc.keep_weekly ?? 0, monthly: doc.keep_monthly ?? 0 };
}

/** Fill defaults and make paths absolute (relative to `baseDir`). */
export function resolveConfig(doc: ConfigDocument, baseDir: string): NodeConfig {
  const storagePath = resolve(baseDir, doc.storage_path ?? DEFAULTS.storagePath);
  // Paths not given sit beside the storage directory, as in the contract's example
  // (/opt/cairn/db → /opt/cairn/admin.socket, /opt/cairn/checkpoints).
  const home = dirname(storagePath);
  const cc = doc.checkpoint_config ?? {};
  const intervalSecs =
    cc.db_checkpoint_interval !== undefined
      ? cc.db_checkpoint_interval.secs + cc.db_checkpoint_interval.nanos / 1e9
      : (cc.db_checkpoint_interval_secs ?? DEFAULTS.intervalSecs);
  const tlsOf = (t: { cert_file: string; key_file: string } | undefined) => (t ? { tls: { certFile: resolve(baseDir, t.cert_file), keyFile: resolve(baseDir, t.key_file) } } : {});
  return {
    storagePath,
    adminSocketPath: doc.admin_socket_path ? resolve(baseDir, doc.admin_socket_path) : resolve(home, "admin.socket"),
    restApi: hostAndPort(doc.rest_api_address ?? DEFAULTS.restApiAddress),
    ...(doc.rest_api
      ? {
          restAccess: {
            ...(doc.rest_api.tokens_file ? { tokensFile: resolve(baseDir, doc.rest_api.tokens_file) } : {}),
            anonymous: doc.rest_api.anonymous ?? "none",
            ...tlsOf(doc.rest_api.tls),
          },
        }
      : {}),
    logLevel: doc.log_level ?? DEFAULTS.logLevel,
    maxBlobSize: doc.max_blob_size ?? DEFAULTS.maxBlobSize,
    maxBodyBytesInFlight: doc.max_body_bytes_in_flight ?? Math.max(DEFAULTS.maxBodyBytesInFlight, doc.max_blob_size ?? DEFAULTS.maxBlobSize),
    walCheckpoint: {
      thresholdBytes: doc.wal_checkpoint_threshold_bytes ?? DEFAULTS.walCheckpointThresholdBytes,
      intervalMs: Math.round((doc.wal_checkpoint_interval_secs ?? DEFAULTS.walCheckpointIntervalSecs) * 1000),
    },
    ...(doc.db_page_size !== undefined ? { dbPageSize: doc.db_page_size } : {}),
    ...(doc.admin_api
      ? { adminApi: { ...hostAndPort(doc.admin_api.address), tokenFile: resolve(baseDir, doc.admin_api.token_file), ...tlsOf(doc.admin_api.tls) } }
      : {}),
    checkpoint: {
      dir: cc.db_checkpoint_dir ? resolve(baseDir, cc.db_checkpoint_dir) : resolve(home, "checkpoints"),
      retention: rulesOf(cc.retention, cc.max_db_checkpoints ?? DEFAULTS.maxCheckpoints),
      intervalMs: Math.round(intervalSecs * 1000),
      sync: cc.sync ?? DEFAULTS.sync,
      maxBackgroundOperations: cc.max_background_operations ?? DEFAULTS.maxBackgroundOperations,
      periodic: cc.periodic_db_checkpoints ?? DEFAULTS.periodic,
      startupDelayMs: Math.round((cc.db_checkpoint_startup_delay_secs ?? DEFAULTS.startupDelaySecs) * 1000),
      retryBackoffMs: Math.round((cc.db_checkpoint_retry_backoff_secs ?? DEFAULTS.retryBackoffSecs) * 1000),
      taskTimeoutMs: Math.round((cc.db_checkpoint_task_timeout_secs ?? DEFAULTS.taskTimeoutSecs) * 1000),
      compression: cc.compression ?? DEFAULTS.compression,
      maxWriteBytesPerSec: cc.max_write_bytes_per_sec ?? DEFAULTS.maxWriteBytesPerSec,
      maxPacedWalBytes: cc.max_paced_wal_bytes ?? DEFAULTS.maxPacedWalBytes,
      remote: cc.remote && {
        url: cc.remote.url,
        endpoint: cc.remote.endpoint,
        region: cc.remote.region,
        retention: rulesOf(cc.remote.retention, cc.remote.max_remote_checkpoints ?? DEFAULTS.maxRemoteCheckpoints),
        retryBackoffMs: (cc.remote.retry_backoff_secs ?? DEFAULTS.remoteRetryBackoffSecs) * 1000,
        requestTimeoutMs: Math.round((cc.remote.request_timeout_secs ?? DEFAULTS.remoteRequestTimeoutSecs) * 1000),
        accessKeyId: cc.remote.access_key_id,
        secretAccessKey: cc.remote.secret_access_key,
      },
      keyFile: cc.encryption ? resolve(baseDir, cc.encryption.key_file) : undefined,
      includeFiles: [...new Set((cc.include_files ?? []).map((f) => resolve(baseDir, f)))],
      walShipping: {
        enabled: cc.wal_shipping?.enabled ?? false,
        intervalMs: cc.wal_shipping?.interval_millis ?? DEFAULTS.walShippingIntervalMs,
        synchronous: cc.wal_shipping?.synchronous ?? false,
        synchronousTimeoutMs: cc.wal_shipping?.synchronous_timeout_millis ?? DEFAULTS.walShippingSynchronousTimeoutMs,
        remoteLagWarningMs: Math.round((cc.wal_shipping?.remote_lag_warning_secs ?? DEFAULTS.walShippingRemoteLagWarningSecs) * 1000),
      },
    },
  };
}
