import type { KeyChange } from "../../store/keys.ts";

export function printKeyChange(c: KeyChange): void {
  process.stdout.write(`${c.location}: ${c.done}; key generation ${c.generation} is opened by ${c.keys.length} key file(s): ${c.keys.join(", ")}\n`);
}
