/**
 * Errors as HTTP answers: `{error, details, minRequired?, price?}`.
 *
 * SQL functions raise PostgREST's HTTP-status SQLSTATEs (`PT400`, `PT402`,
 * `PT403`, `PT404`, `PT409`); the MESSAGE is a sentence for a person and the
 * DETAIL, when JSON, carries `minRequired`, `price` and `balance`. Anything
 * else is a 500 with a generic message, logged.
 */

import { corsHeaders } from "./cors.ts";

export type Details = Record<string, unknown> | string | null;

/** An error that already knows its HTTP status and body. */
export class HttpError extends Error {
  readonly status: number;
  readonly details: Details;
  readonly extra: Record<string, unknown>;
  /** What the server log gets besides the message (never sent to the caller). */
  readonly log: string | undefined;

  constructor(
    status: number,
    message: string,
    details: Details = null,
    extra: Record<string, unknown> = {},
    options: { log?: string; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.details = details;
    this.extra = extra;
    this.log = options.log;
  }

  get body(): Record<string, unknown> {
    return { error: this.message, details: this.details, ...this.extra };
  }
}

/** The fields of a database error this module reads (porsager/postgres's `PostgresError`). */
interface DatabaseError {
  code: string;
  message: string;
  detail?: string;
}

function isDatabaseError(err: unknown): err is DatabaseError {
  return err instanceof Error && "code" in err &&
    typeof (err as { code: unknown }).code === "string" &&
    (err as { name?: string }).name === "PostgresError";
}

/** The HTTP status a SQLSTATE stands for (`PT402` → 402), or null. */
export function statusOfSqlState(code: string): number | null {
  const match = /^PT([45]\d\d)$/.exec(code);
  return match ? Number(match[1]) : null;
}

function parseDetail(detail: string | undefined): Details {
  if (detail === undefined || detail === "") return null;
  try {
    const parsed: unknown = JSON.parse(detail);
    if (
      parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)
    ) {
      return parsed as Record<string, unknown>;
    }
  } catch {
    // Not JSON: the detail is a sentence.
  }
  return detail;
}

/** A `PTxxx` database error as an HttpError; null for any other error. */
export function fromDatabaseError(err: unknown): HttpError | null {
  if (!isDatabaseError(err)) return null;
  const status = statusOfSqlState(err.code);
  if (status === null) return null;
  const details = parseDetail(err.detail);
  const extra: Record<string, unknown> = {};
  if (details !== null && typeof details === "object") {
    for (const key of ["minRequired", "price"]) {
      if (key in details) extra[key] = toNumber(details[key]);
    }
  }
  return new HttpError(status, err.message, details, extra);
}

function toNumber(value: unknown): unknown {
  if (typeof value === "string" && value.trim() !== "") {
    const n = Number(value);
    return Number.isFinite(n) ? n : value;
  }
  return value;
}

/** Any thrown value as the JSON response the caller gets. */
export function errorResponse(err: unknown): Response {
  const known = err instanceof HttpError ? err : fromDatabaseError(err);
  if (known !== null) {
    if (known.status >= 500) console.error(known.log ?? known.message);
    return new Response(JSON.stringify(known.body), {
      status: known.status,
      headers: { ...corsHeaders, "Content-Type": "application/json" },
    });
  }
  console.error("unhandled error:", err);
  return new Response(
    JSON.stringify({
      error: "Internal error. Please try again later.",
      details: null,
    }),
    {
      status: 500,
      headers: { ...corsHeaders, "Content-Type": "application/json" },
    },
  );
}

/** A failed call to Stripe or Twilio: a logged 502 naming the provider, not its internals. */
export function providerError(provider: string, err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new HttpError(
    502,
    `${provider} could not complete the request. Please try again.`,
    null,
    {},
    { log: `${provider} request failed: ${message}`, cause: err },
  );
}

/** Run a provider call, turning its failure into `providerError`. */
export async function callProvider<T>(
  provider: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw providerError(provider, err);
  }
}
