/**
 * Serve every function locally under `/functions/v1/<name>`, as the Supabase
 * gateway does, from one Deno process:
 *
 *   deno run --allow-net --allow-env --config supabase/functions/deno.json \
 *     supabase/functions/_shared/local_router.ts [--port 54321] [--hostname 127.0.0.1]
 *
 * `PORT` and `HOST` in the environment work too. `GET /health` answers 200.
 */

import { handler as accessToken } from "../access-token/index.ts";
import { handler as buyNumber } from "../buy-number/index.ts";
import { handler as topUp } from "../top-up/index.ts";
import { corsHeaders } from "./cors.ts";
import type { Handler } from "./http.ts";

export const functions: Readonly<Record<string, Handler>> = {
  "access-token": accessToken,
  "buy-number": buyNumber,
  "top-up": topUp,
};

const PREFIX = "/functions/v1/";

/** Dispatch a request to the function its path names. */
export async function route(req: Request): Promise<Response> {
  const { pathname } = new URL(req.url);
  if (pathname === "/health") {
    return new Response(JSON.stringify({ ok: true }), {
      headers: { "Content-Type": "application/json" },
    });
  }
  if (pathname.startsWith(PREFIX)) {
    const name = pathname.slice(PREFIX.length).split("/")[0];
    const fn = Object.hasOwn(functions, name) ? functions[name] : undefined;
    if (fn !== undefined) return await fn(req);
  }
  return new Response(
    JSON.stringify({ error: "Not found.", details: { path: pathname } }),
    {
      status: 404,
      headers: { ...corsHeaders, "Content-Type": "application/json" },
    },
  );
}

function option(args: string[], name: string): string | undefined {
  const index = args.indexOf(`--${name}`);
  if (index >= 0) return args[index + 1];
  const inline = args.find((arg) => arg.startsWith(`--${name}=`));
  return inline?.slice(name.length + 3);
}

if (import.meta.main) {
  const port = Number(
    option(Deno.args, "port") ?? Deno.env.get("PORT") ?? "54321",
  );
  const hostname = option(Deno.args, "hostname") ?? Deno.env.get("HOST") ??
    "127.0.0.1";
  Deno.serve({
    port,
    hostname,
    onListen: ({ hostname, port }) =>
      console.error(
        `functions on http://${hostname}:${port}${PREFIX}{${
          Object.keys(functions).join(",")
        }}`,
      ),
  }, route);
}
