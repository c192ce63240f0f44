/**
 * Test helpers: users in the real database, their tokens, and requests to the
 * handlers. The environment comes from tests/test_edge_functions.py (database
 * URL as the superuser, stand-in URLs, secrets).
 */

import { assert, assertEquals, assertMatch } from "./assert.ts";
import { SignJWT } from "jose";
import postgres from "postgres";
import { closeDatabase } from "../_shared/db.ts";
import type { Handler } from "../_shared/http.ts";

export { assert, assertEquals, assertMatch };

export function need(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`the tests need ${name} in the environment`);
  return value;
}

let owner: postgres.Sql | undefined;

/** The database as its owner (superuser): arrange and inspect, bypassing RLS. */
export function db(): postgres.Sql {
  owner ??= postgres(need("SUPABASE_DB_URL"), {
    max: 2,
    // SUPABASE_DB_URL goes through PgBouncer in transaction mode, as on Supabase.
    prepare: false,
    onnotice: () => {},
  });
  return owner;
}

export async function closeAll(): Promise<void> {
  const current = owner;
  owner = undefined;
  await current?.end({ timeout: 5 });
  await closeDatabase();
}

/**
 * A test that shares the connection pools with the others: Deno's resource
 * sanitizer would otherwise see the pooled sockets as leaks.
 */
export function test(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

export interface User {
  id: string;
  email: string;
  token: string;
}

/** A signed-in user, created as Supabase Auth would (plan from app metadata). */
export async function createUser(plan?: string): Promise<User> {
  const email = `edge-${crypto.randomUUID().slice(0, 12)}@example.test`;
  const meta = plan ? { plan } : {};
  const [row] = await db()`
    insert into auth.users (email, raw_app_meta_data)
    values (${email}, ${db().json(meta)}) returning id`;
  const id = String(row.id);
  return { id, email, token: await tokenFor(id, {}) };
}

/** A Supabase-style access token; `claims` and `options` override the defaults. */
export async function tokenFor(
  sub: string,
  claims: Record<string, unknown>,
  options: { secret?: string; expiresIn?: number } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const secret = options.secret ?? need("SUPABASE_JWT_SECRET");
  return await new SignJWT({
    sub,
    role: "authenticated",
    aud: "authenticated",
    email: `${sub}@example.test`,
    iat: now,
    exp: now + (options.expiresIn ?? 3600),
    ...claims,
  }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(
    new TextEncoder().encode(secret),
  );
}

/** Call a handler as a browser would. `body` objects are sent as JSON; strings as they are. */
export async function call(
  handler: Handler,
  options: {
    method?: string;
    token?: string | null;
    body?: unknown;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<
  { status: number; body: Record<string, unknown>; response: Response }
> {
  const headers = new Headers(options.headers ?? {});
  if (options.token) headers.set("Authorization", `Bearer ${options.token}`);
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === "string"
      ? options.body
      : JSON.stringify(options.body);
    headers.set("Content-Type", options.contentType ?? "application/json");
  }
  const response = await handler(
    new Request("http://127.0.0.1/functions/v1/test", {
      method: options.method ?? "POST",
      headers,
      body,
    }),
  );
  const text = await response.text();
  let parsed: Record<string, unknown> = {};
  if (text !== "") parsed = JSON.parse(text);
  return { status: response.status, body: parsed, response };
}

/** The user's balance in dollars, as a string (`"5.00"`). */
export async function balanceOf(userId: string): Promise<string> {
  const [row] = await db()`
    select balance::text as balance from public.call_balance where user_id = ${userId}`;
  return row.balance;
}

export async function ledgerOf(userId: string): Promise<postgres.Row[]> {
  return [
    ...await db()`
    select amount::text as amount, type, reason, balance_after::text as balance_after
    from public.balance_transactions where user_id = ${userId}
    order by created_at, id`,
  ];
}

/** Credit the user as a paid top-up would (through the ledger, never by update). */
export async function credit(userId: string, cents: number): Promise<void> {
  await db().begin(async (tx) => {
    await tx.unsafe("set local role service_role");
    await tx`select billing.credit_topup(${userId}::uuid, ${cents}, ${`pi_test_${crypto.randomUUID()}`})`;
  });
}

/** Use up the month's free minutes, so the minimum balance applies. */
export async function noFreeMinutes(userId: string): Promise<void> {
  await db()`
    update public.call_balance set free_minutes_remaining = 0 where user_id = ${userId}`;
}

/** Give the user an active number directly (arranging, not the function under test). */
export async function giveNumber(
  userId: string,
  number?: string,
): Promise<string> {
  const phone = number ??
    `+1555${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
  await db().begin(async (tx) => {
    await tx.unsafe("set local role service_role");
    const [reserved] = await tx`
      select billing.reserve_number(${userId}::uuid, ${phone}) as result`;
    await tx`select billing.confirm_number(${
      (reserved.result as { purchaseId: string }).purchaseId
    }::uuid, ${`PN${crypto.randomUUID().replaceAll("-", "")}`}, ${phone})`;
  });
  return phone;
}

/** Wait until `check` holds, polling. */
export async function eventually(
  check: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert(await check(), "condition not met in time");
}
