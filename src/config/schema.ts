/**
 * The YAML config document, as valibot schemas. Key names follow the Walrus storage node so an
 * operator's config and runbook carry over unchanged. Every key is optional;
 * `resolveConfig` in load.ts fills defaults and turns paths absolute.
 *
 * Messages are written as the second half of "<key path>: expected ..., got <value>": the
 * loader adds the key path and the value received.
 */
import * as v from "valibot";
import { LOG_LEVELS } from "../log.ts";

/** SQLite's default SQLITE_MAX_LENGTH: no single blob can be larger than this. */
export const SQLITE_MAX_BLOB = 1_000_000_000;

const wholeNumber = (min: number, max = Number.MAX_SAFE_INTEGER) => {
  const msg = max === Number.MAX_SAFE_INTEGER ? `expected a whole number >= ${min}` : `expected a whole number from ${min} to ${max}`;
  return v.pipe(v.number(msg), v.integer(msg), v.minValue(min, msg), v.maxValue(max, msg));
};
const seconds = (min = 0) => {
  const msg = `expected a number of seconds >= ${min}`;
  return v.pipe(v.number(msg), v.minValue(min, msg), v.maxValue(10 * 365 * 86400, msg));
};
const bool = v.boolean("expected true or false");
/** The page sizes SQLite can make. */
const DB_PAGE_SIZES_ALLOWED = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
const path = v.pipe(v.string("expected a path"), v.nonEmpty("expected a path"));

/** host:port, with the host an IPv4 address, a name, or an IPv6 address in brackets. */
export const ADDRESS_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const address = v.pipe(
  v.string("expected host:port"),
  v.regex(ADDRESS_RE, "expected host:port"),
  v.check((s) => Number(ADDRESS_RE.exec(s)?.[2] ?? 0) <= 65535, "expected a port from 0 to 65535"),
);

const duration = v.strictObject(
  {
    secs: v.optional(wholeNumber(0), 0),
    nanos: v.optional(wholeNumber(0, 999_999_999), 0),
  },
  "expected {secs, nanos}",
);

/** restic's forget rules: a checkpoint is kept if any rule keeps it. */
const retention = v.strictObject(
  {
    keep_last: v.optional(wholeNumber(0)),
    keep_hourly: v.optional(wholeNumber(0)),
    keep_daily: v.optional(wholeNumber(0)),
    keep_weekly: v.optional(wholeNumber(0)),
    keep_monthly: v.optional(wholeNumber(0)),
  },
  "expected a mapping with keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly",
);

const remote = v.strictObject(
  {
    url: v.pipe(v.string("expected s3://BUCKET/PREFIX"), v.regex(/^s3:\/\/[^/]+(\/.*)?$/, "expected s3://BUCKET/PREFIX")),
    endpoint: v.optional(v.pipe(v.string("expected a URL"), v.url("expected a URL"))),
    region: v.optional(v.pipe(v.string("expected a region name"), v.nonEmpty("expected a region name"))),
    max_remote_checkpoints: v.optional(wholeNumber(0)),
    /** cairn extension: retention by age for the remote (as checkpoint_config.retention). */
    retention: v.optional(retention),
    // cairn extensions
    /** After a failed upload, try again after this long. */
    retry_backoff_secs: v.optional(seconds(0.01)),
    /** One request to the remote that has not answered after this long (plus a second per MiB) fails and is retried. */
    request_timeout_secs: v.optional(seconds(0.1)),
    /** Credentials, if not in the environment (S3_* / AWS_*): prefer the environment. */
    access_key_id: v.optional(v.pipe(v.string("expected a string"), v.nonEmpty("expected a string"))),
    secret_access_key: v.optional(v.pipe(v.string("expected a string"), v.nonEmpty("expected a string"))),
  },
  "expected a mapping with url, endpoint, region, max_remote_checkpoints, retention, retry_backoff_secs, request_timeout_secs, access_key_id, secret_access_key",
);

const walShipping = v.strictObject(
  {
    enabled: v.optional(bool),
    /** Committed transactions reach the store(s) at least this often. */
    interval_millis: v.optional(wholeNumber(10, 3_600_000)),
    /** A write is acknowledged only once it is in the store(s). */
    synchronous: v.optional(bool),
    // cairn extensions
    /** In synchronous mode, a write whose shipment has not completed after this long is answered 503 (it stays committed locally). */
    synchronous_timeout_millis: v.optional(wholeNumber(10, 3_600_000)),
    /** Warn once shipping to the remote lags this far behind. */
    remote_lag_warning_secs: v.optional(seconds(1)),
  },
  "expected a mapping with enabled, interval_millis, synchronous, synchronous_timeout_millis, remote_lag_warning_secs",
);

export const checkpointConfigSchema = v.strictObject(
  {
    db_checkpoint_dir: v.optional(path),
    max_db_checkpoints: v.optional(wholeNumber(0)),
    /** Retention by count and age (restic's forget rules); max_db_checkpoints alone means keep_last. */
    retention: v.optional(retention),
    db_checkpoint_interval: v.optional(duration),
    db_checkpoint_interval_secs: v.optional(wholeNumber(0)),
    sync: v.optional(bool),
    max_background_operations: v.optional(wholeNumber(1, 64)),
    periodic_db_checkpoints: v.optional(bool),
    remote: v.optional(remote),
    // cairn extensions
    /** Wait this long after start before the first periodic checkpoint. */
    db_checkpoint_startup_delay_secs: v.optional(seconds(0)),
    /** After a failed periodic checkpoint, try again after this long (Walrus: 5 minutes). */
    db_checkpoint_retry_backoff_secs: v.optional(seconds(0.01)),
    /** A checkpoint running longer than this is cancelled (Walrus: 1 hour). */
    db_checkpoint_task_timeout_secs: v.optional(seconds(0.01)),
    /** Compress stored blocks with zstd. */
    compression: v.optional(v.picklist(["none", "zstd"], "expected none or zstd")),
    /** Cap on the rate checkpoints write at, bytes per second; 0 = no cap. */
    max_write_bytes_per_sec: v.optional(wholeNumber(0)),
    /** Once the WAL holds more than this, a running checkpoint stops giving way to writes (its snapshot keeps the WAL from being folded); 0 = it always gives way. */
    max_paced_wal_bytes: v.optional(wholeNumber(0)),
    /** Ship every committed transaction into the store(s) between checkpoints (point-in-time restore). */
    wal_shipping: v.optional(walShipping),
    /** Files carried with every checkpoint (the node's config, its key files): restore --with-files puts them back. */
    include_files: v.optional(v.pipe(v.array(path, "expected a list of paths"), v.maxLength(256, "expected at most 256 paths"))),
    /** Encrypt every store the node writes with the key in key_file (cairn key generate). */
    encryption: v.optional(v.strictObject({ key_file: path }, "expected a mapping with key_file")),
  },
  "expected a mapping",
);

const tls = v.strictObject({ cert_file: path, key_file: path }, "expected a mapping with cert_file and key_file");

/** cairn: the admin socket's routes over HTTP(S), for requests with a bearer token. */
const adminApi = v.strictObject(
  {
    address,
    token_file: path,
    tls: v.optional(tls),
  },
  "expected a mapping with address, token_file and optionally tls",
);

/** Access control of the data API: tokens with scopes, anonymous access, TLS. */
const restApi = v.strictObject(
  {
    tokens_file: v.optional(path),
    anonymous: v.optional(v.picklist(["none", "read"], "expected none or read")),
    tls: v.optional(tls),
  },
  "expected a mapping with tokens_file, anonymous and tls",
);

export const configSchema = v.strictObject(
  {
    storage_path: v.optional(path),
    admin_socket_path: v.optional(path),
    rest_api_address: v.optional(address),
    rest_api: v.optional(restApi),
    log_level: v.optional(v.picklist(LOG_LEVELS, `expected one of ${LOG_LEVELS.join(" | ")}`)),
    max_blob_size: v.optional(wholeNumber(1, SQLITE_MAX_BLOB)),
    /** cairn extension: request body bytes held in memory across all requests; past it, 503. */
    max_body_bytes_in_flight: v.optional(wholeNumber(1)),
    /** cairn extension: run a WAL checkpoint once the -wal file passes this many bytes. */
    wal_checkpoint_threshold_bytes: v.optional(wholeNumber(4096)),
    /** cairn extension: and at least this often while there are writes. */
    wal_checkpoint_interval_secs: v.optional(seconds(0.01)),
    /** cairn extension: the page size of a database created from now on (an existing one keeps its own). */
    db_page_size: v.optional(v.picklist(DB_PAGE_SIZES_ALLOWED, `expected one of ${DB_PAGE_SIZES_ALLOWED.join(", ")}`)),
    checkpoint_config: v.optional(checkpointConfigSchema),
    admin_api: v.optional(adminApi),
  },
  "expected a mapping of config keys",
);

export type ConfigDocument = v.InferOutput<typeof configSchema>;
