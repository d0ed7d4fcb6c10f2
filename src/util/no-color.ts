/**
 * Imported first by main.ts: colours only on a terminal. citty decides once, when it loads,
 * from NO_COLOR, so this must run before citty is imported.
 */
if (!process.stdout.isTTY && process.env.FORCE_COLOR === undefined) process.env.NO_COLOR = "1";
