/**
 * The caller: a Supabase user's `Authorization: Bearer <jwt>`, verified with
 * the project's JWT secret (HS256) or its signing keys (JWKS). Expired, wrong
 * audience or role, bad signature or missing → 401.
 *
 * Keys, first found wins:
 * - HS256: `SUPABASE_JWT_SECRET`, else `JWT_SECRET` (hosted projects cannot
 *   set secrets named `SUPABASE_*`).
 * - ES256/RS256/EdDSA: `SUPABASE_JWKS` (the key set itself, which hosted Edge
 *   Functions receive), else `SUPABASE_JWKS_URL`, else
 *   `SUPABASE_URL` + `/auth/v1/.well-known/jwks.json`.
 */

import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import { env } from "./env.ts";
import { HttpError } from "./errors.ts";

/** The verified claims of a signed-in user; `sub` is their `auth.users` id. */
export interface Claims extends JWTPayload {
  sub: string;
  role: "authenticated";
  email?: string;
}

const AUDIENCE = "authenticated";
const ASYMMETRIC = ["ES256", "RS256", "EdDSA"];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type KeySet = JWTVerifyGetKey;

const keySets = new Map<string, KeySet>();

/** The project's signing keys, or undefined when none are configured. */
function signingKeys(): KeySet | undefined {
  const inline = env("SUPABASE_JWKS");
  const project = env("SUPABASE_URL")?.replace(/\/+$/, "");
  const url = env("SUPABASE_JWKS_URL") ??
    (project === undefined
      ? undefined
      : `${project}/auth/v1/.well-known/jwks.json`);
  const source = inline ?? url;
  if (source === undefined) return undefined;
  const known = keySets.get(source);
  if (known !== undefined) return known;
  let keys: KeySet;
  if (inline !== undefined) {
    try {
      keys = createLocalJWKSet(JSON.parse(inline) as JSONWebKeySet);
    } catch (err) {
      throw new HttpError(500, "The service is not configured.", null, {}, {
        log: `SUPABASE_JWKS is not a JSON Web Key Set: ${err}`,
      });
    }
  } else {
    keys = createRemoteJWKSet(new URL(source));
  }
  keySets.set(source, keys);
  return keys;
}

function unauthorized(message: string): HttpError {
  return new HttpError(401, "Unauthorized.", message);
}

function bearerToken(req: Request): string {
  const header = req.headers.get("authorization");
  if (header === null || header.trim() === "") {
    throw unauthorized(
      "The Authorization header with a Bearer token is missing.",
    );
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (match === null) {
    throw unauthorized("The Authorization header must be `Bearer <token>`.");
  }
  return match[1];
}

async function verify(token: string): Promise<JWTPayload> {
  let alg: string | undefined;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    throw unauthorized("The token is malformed.");
  }
  const options = {
    audience: AUDIENCE,
    requiredClaims: ["exp", "sub"],
    clockTolerance: 5,
  };
  if (alg === "HS256") {
    const secret = env("SUPABASE_JWT_SECRET") ?? env("JWT_SECRET");
    if (secret === undefined) {
      throw unauthorized("HS256 tokens are not accepted here.");
    }
    const key = new TextEncoder().encode(secret);
    return (await jwtVerify(token, key, { ...options, algorithms: ["HS256"] }))
      .payload;
  }
  const keys = alg !== undefined && ASYMMETRIC.includes(alg)
    ? signingKeys()
    : undefined;
  if (keys !== undefined) {
    return (await jwtVerify(token, keys, {
      ...options,
      algorithms: ASYMMETRIC,
    }))
      .payload;
  }
  throw unauthorized(
    `Tokens signed with ${alg ?? "no algorithm"} are not accepted.`,
  );
}

function describe(err: unknown): string {
  if (err instanceof errors.JWTExpired) return "The token has expired.";
  if (err instanceof errors.JWTClaimValidationFailed) {
    return err.claim === "aud"
      ? "The token is not for this audience."
      : `The token's \`${err.claim}\` claim is invalid.`;
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return "The token's signature is invalid.";
  }
  if (err instanceof errors.JWKSNoMatchingKey) {
    return "The token was signed with an unknown key.";
  }
  if (err instanceof errors.JOSEError) return "The token is invalid.";
  return "The token could not be verified.";
}

/** The verified claims of the signed-in user making the request. */
export async function authenticate(req: Request): Promise<Claims> {
  const token = bearerToken(req);
  let payload: JWTPayload;
  try {
    payload = await verify(token);
  } catch (err) {
    if (err instanceof HttpError) throw err;
    if (!(err instanceof errors.JOSEError)) {
      console.error("token verification failed:", err);
    }
    throw unauthorized(describe(err));
  }
  if (payload.role !== "authenticated") {
    throw unauthorized("The token is not a signed-in user's.");
  }
  if (typeof payload.sub !== "string" || !UUID.test(payload.sub)) {
    throw unauthorized("The token's `sub` claim is not a user id.");
  }
  return payload as Claims;
}
