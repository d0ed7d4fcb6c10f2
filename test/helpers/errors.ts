/** Expecting typed errors (CairnError with a stable code) from the domain modules. */
import { expect } from "bun:test";
import { CairnError, type ErrorCode } from "../../src/errors.ts";

/** What `p` rejected with; fails the test if it resolved. */
export async function rejected(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (e) {
    return e as CairnError;
  }
  throw new Error("expected a rejection, the promise resolved");
}

/** `e` is a CairnError with `code` (and a message matching `message`, if given). */
/** What `fn` threw; fails the test if it returned. */
export function thrown(fn: () => unknown): CairnError {
  try {
    fn();
  } catch (e) {
    return e as CairnError;
  }
  throw new Error("expected an error, none was thrown");
}

export function expectCode(e: unknown, code: ErrorCode, message?: RegExp): void {
  expect(e).toBeInstanceOf(CairnError);
  expect({ code: (e as CairnError).code, message: (e as CairnError).message }).toEqual({ code, message: message ? expect.stringMatching(message) : expect.any(String) });
}
