/**
 * The database, acting exactly as PostgREST does for each request: one
 * transaction, `set local role`, and the caller's claims in
 * `request.jwt.claims`, so row-level security and `auth.uid()` apply.
 */

import postgres from "postgres";
import type { Claims } from "./auth.ts";
import { requireEnv } from "./env.ts";

export type Tx = postgres.TransactionSql;

let client: postgres.Sql | undefined;
let clientUrl: string | undefined;

/** The one connection pool, from `SUPABASE_DB_URL`. */
export function database(): postgres.Sql {
  const url = requireEnv("SUPABASE_DB_URL");
  if (client === undefined || clientUrl !== url) {
    const previous = client;
    client = postgres(url, {
      max: Number(Deno.env.get("DB_POOL_SIZE") ?? "5"),
      // Transaction-mode poolers (Supavisor, PgBouncer) cannot keep prepared statements.
      prepare: false,
      idle_timeout: 20,
      connect_timeout: 10,
      onnotice: () => {},
      connection: { application_name: "callbalance-edge" },
    });
    clientUrl = url;
    if (previous !== undefined) void previous.end({ timeout: 1 });
  }
  return client;
}

/** Close the pool (tests, shutdown). */
export async function closeDatabase(): Promise<void> {
  const current = client;
  client = undefined;
  clientUrl = undefined;
  if (current !== undefined) await current.end({ timeout: 5 });
}

/** Run `fn` as the signed-in user, in one transaction. */
export async function asUser<T>(
  claims: Claims,
  fn: (tx: Tx) => Promise<T>,
): Promise<T> {
  return await database().begin(async (tx) => {
    await tx.unsafe("set local role authenticated");
    await tx`select set_config('request.jwt.claims', ${
      JSON.stringify(claims)
    }, true)`;
    return await fn(tx);
  }) as T;
}

/** Run `fn` as `service_role` (privileged steps), in one transaction. */
export async function asService<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
  return await database().begin(async (tx) => {
    await tx.unsafe("set local role service_role");
    await tx`select set_config('request.jwt.claims', ${
      JSON.stringify({ role: "service_role" })
    }, true)`;
    return await fn(tx);
  }) as T;
}

/** The one jsonb value a `select fn(...) as result` returned. */
export function single<T>(rows: readonly { result: unknown }[]): T {
  if (rows.length !== 1) {
    throw new Error(`expected one row, got ${rows.length}`);
  }
  return rows[0].result as T;
}
