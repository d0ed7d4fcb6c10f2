/**
 * Runs the citty command tree with the contract's exit statuses: 0 success, 1 the operation
 * failed, 2 bad usage or configuration. Unknown flags and stray arguments are usage errors
 * (citty alone would ignore them). Failures print one line to stderr; --verbose adds the
 * stack and causes.
 */
import { type ArgsDef, type CommandDef, renderUsage, runCommand } from "citty";
import { isCairnError } from "../errors.ts";

type AnyCommand = CommandDef<ArgsDef>;

class UsageError extends Error {}

const resolve = async <T>(v: T | Promise<T> | (() => T | Promise<T>)): Promise<T> =>
  typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;

interface Resolved {
  chain: AnyCommand[];
  /** The arguments left for the leaf command, checked against its args. */
  leafArgs: string[];
}

/** Walk the argv down the subcommand tree, checking each level's flags as it goes. */
async function resolveChain(root: AnyCommand, argv: string[]): Promise<Resolved> {
  const chain: AnyCommand[] = [root];
  let cmd = root;
  let rest = argv;
  for (;;) {
    const subs = await resolve(cmd.subCommands ?? {});
    if (Object.keys(subs).length === 0) return { chain, leafArgs: rest };
    const args = await resolve(cmd.args ?? {});
    let i = 0;
    for (; i < rest.length; i++) {
      const a = rest[i]!;
      if (!a.startsWith("-")) break;
      const def = findFlag(args, a);
      if (!def) throw new UsageError(`unknown option ${a.split("=")[0]}`);
      if ((def.type === "string" || def.type === "enum") && !a.includes("=")) i++;
    }
    const name = rest[i];
    if (name === undefined) return { chain, leafArgs: [] };
    const sub = subs[name];
    if (!sub) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
    cmd = await resolve(sub);
    chain.push(cmd);
    rest = rest.slice(i + 1);
  }
}

function findFlag(args: ArgsDef, flag: string): ArgsDef[string] | undefined {
  const name = flag.replace(/^-{1,2}/, "").split("=")[0]!;
  const bare = name.startsWith("no-") ? name.slice(3) : name;
  for (const [key, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    const alias = (def as { alias?: string | string[] }).alias;
    const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias];
    const names = [key, kebab(key), ...aliases];
    if (names.includes(name) || (def.type === "boolean" && names.includes(bare))) return def;
  }
  return undefined;
}

const kebab = (s: string) => s.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();

/** Check the leaf's own flags and the number of positionals. */
async function checkLeaf(cmd: AnyCommand, argv: string[]): Promise<void> {
  if ((await resolve(cmd.subCommands ?? {})) && Object.keys(await resolve(cmd.subCommands ?? {})).length > 0) {
    throw new UsageError("a command is required");
  }
  const args = await resolve(cmd.args ?? {});
  const positionals = Object.values(args).filter((d) => d.type === "positional").length;
  let seen = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      seen += argv.length - i - 1;
      break;
    }
    if (a.startsWith("-") && a !== "-") {
      const def = findFlag(args, a);
      if (!def) throw new UsageError(`unknown option ${a.split("=")[0]}`);
      if ((def.type === "string" || def.type === "enum") && !a.includes("=")) {
        if (i + 1 >= argv.length) throw new UsageError(`option ${a} needs a value`);
        i++;
      }
    } else seen++;
  }
  if (seen > positionals) throw new UsageError(`unexpected argument ${JSON.stringify(argv.filter((a) => !a.startsWith("-")).at(-1))}`);
}

async function usageOf(chain: AnyCommand[]): Promise<string> {
  return renderUsage(chain[chain.length - 1]!, chain[chain.length - 2]);
}

/** Run the CLI; returns the process exit status. */
export async function runCli(root: AnyCommand, argv: string[]): Promise<number> {
  const verbose = argv.includes("--verbose");
  const args = argv.filter((a) => a !== "--verbose");
  let chain: AnyCommand[] = [root];
  try {
    if (args.length === 1 && args[0] === "--version") {
      const meta = await resolve(root.meta ?? {});
      process.stdout.write(`${meta.version}\n`);
      return 0;
    }
    const resolved = await resolveChain(root, args.filter((a) => a !== "--help" && a !== "-h"));
    chain = resolved.chain;
    if (args.includes("--help") || args.includes("-h")) {
      process.stdout.write(`${await usageOf(chain)}\n`);
      return 0;
    }
    await checkLeaf(chain[chain.length - 1]!, resolved.leafArgs);
    await runCommand(root, { rawArgs: args });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (e) {
    return report(e, verbose, chain);
  }
}

async function report(e: unknown, verbose: boolean, chain: AnyCommand[]): Promise<number> {
  const name = chain.map((c) => (c.meta as { name?: string } | undefined)?.name).filter(Boolean).join(" ");
  if (e instanceof UsageError || (e instanceof Error && e.name === "CLIError")) {
    process.stderr.write(`error: ${stripAnsi(e.message).replace(/\.+$/, "")}. Try: ${name} --help\n`);
    return 2;
  }
  if (isCairnError(e)) {
    process.stderr.write(`error: ${e.message}${e.hint ? `. Try: ${e.hint}` : ""}\n`);
    if (verbose) printDetails(e);
    return e.exitStatus;
  }
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}${verbose ? "" : " (run with --verbose for details)"}\n`);
  if (verbose) printDetails(e);
  return 1;
}

function printDetails(e: unknown): void {
  let cur: unknown = e;
  while (cur) {
    process.stderr.write(`${cur instanceof Error ? (cur.stack ?? cur.message) : String(cur)}\n`);
    cur = cur instanceof Error ? cur.cause : undefined;
    if (cur) process.stderr.write("caused by: ");
  }
}

function stripAnsi(s: string): string {
  // biome-ignore lint: ANSI escape
  return s.replace(/\u001b\[[0-9;]*m/g, "");
}
