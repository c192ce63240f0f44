/**
 * HTTP plumbing shared by the functions: CORS, JSON answers, body parsing and
 * the wrapper that turns any thrown error into the `{error, details}` shape.
 */

import { corsHeaders } from "./cors.ts";
import { errorResponse, HttpError } from "./errors.ts";

export { corsHeaders };

/** The largest request body accepted, in bytes. */
const MAX_BODY_BYTES = 16 * 1024;

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "Content-Type": "application/json" },
  });
}

export type Handler = (req: Request) => Promise<Response>;

/**
 * Wrap a function's logic: answer CORS preflights, refuse other methods, and
 * map every error to its JSON response.
 */
export function endpoint(
  methods: readonly string[],
  run: (req: Request) => Promise<Response>,
): Handler {
  return async (req: Request): Promise<Response> => {
    if (req.method === "OPTIONS") {
      return new Response(null, { status: 204, headers: corsHeaders });
    }
    if (!methods.includes(req.method)) {
      const response = json({
        error: `Method ${req.method} is not allowed.`,
        details: { allowed: methods },
      }, 405);
      response.headers.set("Allow", [...methods, "OPTIONS"].join(", "));
      return response;
    }
    try {
      return await run(req);
    } catch (err) {
      return errorResponse(err);
    }
  };
}

/** A 400 naming the field that is wrong. */
export function badField(field: string, message: string): HttpError {
  return new HttpError(400, message, { field });
}

export type JsonObject = Record<string, unknown>;

/**
 * The request body as a JSON object. An empty body is `{}`; anything else must
 * be `application/json` holding an object.
 */
export async function readJsonObject(req: Request): Promise<JsonObject> {
  if (req.method === "GET" || req.method === "HEAD") return {};
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > MAX_BODY_BYTES) {
    throw new HttpError(413, "The request body is too large.", {
      maxBytes: MAX_BODY_BYTES,
    });
  }
  const text = await req.text();
  if (text.length > MAX_BODY_BYTES) {
    throw new HttpError(413, "The request body is too large.", {
      maxBytes: MAX_BODY_BYTES,
    });
  }
  if (text.trim() === "") return {};
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim()
    .toLowerCase();
  if (type !== "application/json") {
    throw new HttpError(
      415,
      "The request body must be JSON (Content-Type: application/json).",
      { contentType: type || null },
    );
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, "The request body is not valid JSON.", {
      field: "body",
    });
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "The request body must be a JSON object.", {
      field: "body",
    });
  }
  return body as JsonObject;
}

/** Refuse fields a function does not know, so typos do not pass silently. */
export function onlyFields(body: JsonObject, known: readonly string[]): void {
  for (const key of Object.keys(body)) {
    if (!known.includes(key)) {
      throw badField(
        key,
        `Unknown field \`${key}\`; expected ${
          known.map((k) => `\`${k}\``).join(", ")
        }.`,
      );
    }
  }
}

/** An optional string field: undefined when absent or null. */
export function optionalString(
  body: JsonObject,
  field: string,
): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") {
    throw badField(field, `\`${field}\` must be a string.`);
  }
  return value;
}
