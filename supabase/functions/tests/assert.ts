/** Small assertions (the standard library's live on JSR, which is not reachable here). */

import { isDeepStrictEqual } from "node:util";

export function assert(
  condition: unknown,
  message = "assertion failed",
): asserts condition {
  if (!condition) throw new Error(message);
}

export function assertEquals<T>(actual: T, expected: T, message = ""): void {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Error(
      `${message ? message + ": " : ""}expected ${
        JSON.stringify(expected)
      }, got ${JSON.stringify(actual)}`,
    );
  }
}

export function assertMatch(
  actual: string,
  pattern: RegExp,
  message = "",
): void {
  if (!pattern.test(actual)) {
    throw new Error(
      `${message ? message + ": " : ""}${
        JSON.stringify(actual)
      } does not match ${pattern}`,
    );
  }
}
