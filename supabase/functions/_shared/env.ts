/** Configuration from the environment, read when a request needs it. */

import { HttpError } from "./errors.ts";

/** The variable's value, or undefined when unset or blank. */
export function env(name: string): string | undefined {
  const value = Deno.env.get(name);
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

/** The variable's value; a logged 500 when it is missing. */
export function requireEnv(name: string): string {
  const value = env(name);
  if (value === undefined) {
    throw new HttpError(500, "The service is not configured.", null, {}, {
      log: `missing environment variable ${name}`,
    });
  }
  return value;
}

/** A comma-separated list, blanks dropped. */
export function envList(name: string): string[] {
  return (env(name) ?? "").split(",").map((part) => part.trim()).filter((
    part,
  ) => part !== "");
}
