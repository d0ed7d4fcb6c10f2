/**
 * Bearer tokens for the HTTP admin API (and the data API's scopes): a token file read and
 * checked, tokens matched in constant time, and failed attempts logged without the token.
 *
 * A token file is owner-only (no group or other permission bits) or it is refused: a token
 * anyone on the host can read protects nothing. Lines are `TOKEN` or `TOKEN SCOPE[,SCOPE]`;
 * blank lines and lines starting with `#` are ignored. Errors name the file and the line,
 * never a token.
 */
import { statSync, readFileSync } from "node:fs";
import { timingSafeEqual } from "node:crypto";
import { CairnError, errorMessage, sysCode } from "../errors.ts";

/** RFC 6750's b64token, at least MIN_TOKEN_CHARS long. */
const TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/;
export const MIN_TOKEN_CHARS = 16;

export interface TokenFileOptions {
  /** The scopes a line may name; without it a line is one token and nothing else. */
  scopes?: readonly string[];
  /** The config key naming the file, for error messages. */
  key: string;
}

interface Entry {
  digest: Uint8Array;
  scopes: ReadonlySet<string>;
}

const NO_MATCH: Entry = { digest: new Uint8Array(32), scopes: new Set() };

/** The tokens of one token file: which one a request presents, found in constant time. */
export class TokenSet {
  /** Entries by the hex of their token's SHA-256. */
  private readonly byDigest: Map<string, Entry>;

  private constructor(
    private readonly entries: Entry[],
    readonly file: string,
  ) {
    this.byDigest = new Map(entries.map((e) => [Buffer.from(e.digest).toString("hex"), e]));
  }

  get size(): number {
    return this.entries.length;
  }

  static read(file: string, opts: TokenFileOptions): TokenSet {
    return new TokenSet(
      readTokenFile(file, opts).map((t) => ({ digest: digestOf(t.token), scopes: t.scopes })),
      file,
    );
  }

  /**
   * The scopes of the token an `Authorization` header presents, or undefined when it presents
   * none that is known. Tokens are never compared as text: the presented token's SHA-256 is
   * looked up among the entries' (what that lookup's time depends on is a digest no one can
   * steer byte by byte), then compared with the entry found, or a dummy, in constant time. So
   * the time taken says nothing about how much of a token matched, and it does not grow with
   * the number of tokens.
   */
  match(authorization: string | null): ReadonlySet<string> | undefined {
    const m = authorization === null ? null : /^Bearer[ ]+(\S+)[ ]*$/i.exec(authorization);
    const presented = digestOf(m?.[1] ?? "");
    const candidate = this.byDigest.get(Buffer.from(presented).toString("hex")) ?? NO_MATCH;
    const equal = timingSafeEqual(candidate.digest, presented);
    return equal && m && candidate !== NO_MATCH ? candidate.scopes : undefined;
  }
}

/**
 * The tokens of a token file, each with its scopes, checked as the file's rules say (owner-only,
 * well-formed lines); E_CONFIG naming the file and line, never a token.
 */
function readTokenFile(file: string, opts: TokenFileOptions): { token: string; scopes: ReadonlySet<string> }[] {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new CairnError("E_CONFIG", `${opts.key}: ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new CairnError("E_CONFIG", `${opts.key}: ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}; a token file must be owner-only`, {
        hint: `chmod 600 ${file}`,
      });
    }
    if (typeof process.getuid === "function" && st.uid !== process.getuid() && st.uid !== 0) {
      throw new CairnError("E_CONFIG", `${opts.key}: ${file} belongs to another user (uid ${st.uid})`, { hint: `chown it to the node's user` });
    }
    text = readFileSync(file, "utf8");
  } catch (e) {
    if (e instanceof CairnError) throw e;
    const why = sysCode(e) === "ENOENT" ? "no such file" : errorMessage(e);
    throw new CairnError("E_CONFIG", `${opts.key}: cannot read ${file}: ${why}`, { cause: e });
  }
  const entries: { token: string; scopes: ReadonlySet<string> }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const where = `${opts.key}: ${file} line ${i + 1}`;
    const fields = line.split(/\s+/);
    const token = fields[0]!;
    if (!TOKEN_RE.test(token)) throw new CairnError("E_CONFIG", `${where}: the token has characters a bearer token cannot have (letters, digits and -._~+/ only)`);
    if (token.length < MIN_TOKEN_CHARS) throw new CairnError("E_CONFIG", `${where}: the token is shorter than ${MIN_TOKEN_CHARS} characters`, { hint: "make one with: openssl rand -hex 32" });
    let scopes: Set<string> = new Set();
    if (opts.scopes) {
      if (fields.length !== 2) throw new CairnError("E_CONFIG", `${where}: expected "TOKEN SCOPE[,SCOPE]" with scopes from ${opts.scopes.join(", ")}`);
      scopes = new Set(fields[1]!.split(","));
      for (const s of scopes) {
        if (!opts.scopes.includes(s)) throw new CairnError("E_CONFIG", `${where}: unknown scope ${JSON.stringify(s)} (expected ${opts.scopes.join(", ")})`);
      }
    } else if (fields.length !== 1) {
      throw new CairnError("E_CONFIG", `${where}: expected one token on the line and nothing else`);
    }
    entries.push({ token, scopes });
  }
  if (entries.length === 0) throw new CairnError("E_CONFIG", `${opts.key}: ${file} holds no token`, { hint: "one token per line; make one with: openssl rand -hex 32" });
  return entries;
}

/** The first token of a token file (what a client sends), under the same rules as the node reads it with. */
export function firstToken(file: string, key: string): string {
  return readTokenFile(file, { key })[0]!.token;
}

function digestOf(token: string): Uint8Array {
  return Bun.SHA256.hash(token) as Uint8Array;
}

/**
 * Failed attempts, logged with the peer address but never the token, at most once per
 * `everyMs` (the rest are counted and summarised in the next line), so a client hammering
 * with bad tokens cannot fill the log.
 */
export class FailedAuthLog {
  private last = -Infinity;
  private suppressed = 0;
  total = 0;

  constructor(
    private readonly warn: (msg: string) => void,
    private readonly what: string,
    private readonly everyMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  note(peer: string | undefined, why: string): void {
    this.total++;
    const t = this.now();
    if (t - this.last < this.everyMs) {
      this.suppressed++;
      return;
    }
    const more = this.suppressed > 0 ? ` (and ${this.suppressed} more refused since the last such line)` : "";
    this.last = t;
    this.suppressed = 0;
    this.warn(`${this.what}: refused a request from ${peer ?? "an unknown peer"}: ${why}${more}`);
  }
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/** The certificate and key, read now (so a missing or unreadable file fails here, with its name). */
export function readTls(tls: TlsFiles, key: string): { cert: string; key: string } {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, "utf8");
    } catch (e) {
      throw new CairnError("E_CONFIG", `${key}: cannot read the ${what} ${file}: ${sysCode(e) === "ENOENT" ? "no such file" : errorMessage(e)}`, { cause: e });
    }
  };
  const cert = read(tls.certFile, "certificate");
  const pem = read(tls.keyFile, "private key");
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(cert)) throw new CairnError("E_CONFIG", `${key}: ${tls.certFile} is not a PEM certificate`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) throw new CairnError("E_CONFIG", `${key}: ${tls.keyFile} is not a PEM private key`);
  return { cert, key: pem };
}
