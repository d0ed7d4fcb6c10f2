/**
 * Opening the node's SQLite database: WAL mode, full fsync on commit, automatic WAL
 * checkpoints off (the node runs them itself, see wal.ts, so that a checkpoint of the
 * database can pause them), and forward-only schema migrations keyed by PRAGMA user_version.
 */
import { Database } from "bun:sqlite";
import { existsSync, mkdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import { DIR_MODE } from "../util/fsx.ts";

export const DB_FILE = "cairn.db";

export function dbPathIn(storagePath: string): string {
  return join(storagePath, DB_FILE);
}

/**
 * The page size of a database the node creates, unless `db_page_size` says otherwise: the
 * store's block size (store/format.ts DEFAULT_BLOCK_SIZE; a unit test keeps them equal). A
 * changed page is then a whole block, so an incremental checkpoint never reads a block's
 * unchanged other page from `cairn.db`; with smaller pages, a rewritten blob's pages come off
 * the freelist scattered and most changed blocks have one. A database that already exists keeps
 * its page size (SQLite fixes it at creation).
 */
export const DB_PAGE_SIZE = 8192;

/**
 * The pragmas every connection to the node's database gets. `journal_size_limit` truncates
 * the WAL back to a modest size whenever SQLite restarts it, so disk use stays bounded.
 */
export function applyConnectionPragmas(db: Database): void {
  db.exec("PRAGMA busy_timeout = 10000");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = FULL");
  db.exec("PRAGMA wal_autocheckpoint = 0");
  db.exec("PRAGMA journal_size_limit = 67108864");
  db.exec("PRAGMA cache_size = -65536");
}

/** Schema migrations; index i brings user_version i to i+1. Never edit a released step. */
const MIGRATIONS: ((db: Database) => void)[] = [
  (db) => {
    db.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      -- data last, so the small columns stay on the row's first page
      CREATE TABLE blobs (
        id TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        digest TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        data BLOB NOT NULL
      );
      -- running totals kept in the same transaction as every write: O(1) status, and a
      -- consistency check any copy of the database can be audited against
      CREATE TABLE totals (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        blob_count INTEGER NOT NULL,
        blob_bytes INTEGER NOT NULL
      );
      INSERT INTO totals VALUES (1, 0, 0);
    `);
    db.query("INSERT INTO meta (key, value) VALUES ('node_id', ?), ('created_at', ?)").run(
      crypto.randomUUID(),
      new Date().toISOString(),
    );
  },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface OpenedDatabase {
  db: Database;
  nodeId: string;
  created: boolean;
  /** The database's page size (an existing database's own, whatever was asked). */
  pageSize: number;
}

/**
 * Give the database in `file` a new random node id and return it: for a restore's staged image
 * (a file no node has open), so that a clone of a node is a node of its own. Any -wal or -shm
 * the change leaves is folded and removed before it returns.
 */
export function assignNewNodeId(file: string): string {
  const id = crypto.randomUUID();
  const db = new Database(file, { strict: true });
  try {
    const r = db.query("UPDATE meta SET value = ? WHERE key = 'node_id'").run(id);
    if (r.changes !== 1) throw new CairnError("E_DB_SCHEMA", `${file} has no node id; it is not a cairn database`);
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }
  for (const f of [`${file}-wal`, `${file}-shm`]) if (existsSync(f)) unlinkSync(f);
  return id;
}

/** The page size of the database `db` is open on. */
export function pageSizeOf(db: Database): number {
  return db.query<{ page_size: number }, []>("PRAGMA page_size").get()!.page_size;
}

export interface OpenDatabaseOptions {
  /** The page size if the database is created now (default DB_PAGE_SIZE); an existing one keeps its own. */
  pageSize?: number;
}

/** Open (creating if needed) the database in `storagePath` and bring its schema up to date. */
export function openNodeDatabase(storagePath: string, o: OpenDatabaseOptions = {}): OpenedDatabase {
  mkdirSync(storagePath, { recursive: true, mode: DIR_MODE });
  const file = dbPathIn(storagePath);
  const created = !existsSync(file);
  let db: Database;
  try {
    db = new Database(file, { create: true, strict: true });
    // before anything writes the header (setting WAL mode does); a no-op on an existing file
    db.exec(`PRAGMA page_size = ${o.pageSize ?? DB_PAGE_SIZE}`);
    applyConnectionPragmas(db);
  } catch (e) {
    throw new CairnError("E_DB_OPEN", `cannot open the database ${file}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    migrate(db, file);
    const row = db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'node_id'").get();
    if (!row) throw new CairnError("E_DB_SCHEMA", `${file} has no node id; it is not a cairn database`);
    return { db, nodeId: row.value, created, pageSize: pageSizeOf(db) };
  } catch (e) {
    db.close();
    throw e;
  }
}

function migrate(db: Database, file: string): void {
  const version = db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version;
  if (version > SCHEMA_VERSION) {
    throw new CairnError(
      "E_DB_SCHEMA",
      `${file} has schema version ${version}, newer than this cairn understands (${SCHEMA_VERSION})`,
      { hint: "run a newer cairn binary" },
    );
  }
  if (version === 0) {
    const tables = db.query<{ n: number }, []>("SELECT count(*) AS n FROM sqlite_schema").get()!.n;
    if (tables > 0) {
      throw new CairnError("E_DB_SCHEMA", `${file} is an SQLite database but not a cairn database`);
    }
  }
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      MIGRATIONS[v]!(db);
      db.exec(`PRAGMA user_version = ${v + 1}`);
    }).immediate();
  }
}
