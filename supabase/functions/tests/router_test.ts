/** The local router serves every function under /functions/v1/<name>, as the gateway does. */

import { functions, route } from "../_shared/local_router.ts";
import { assertEquals, call, createUser, giveNumber, test } from "./helpers.ts";

test("every function is routed, over real HTTP", async () => {
  assertEquals(Object.keys(functions).sort(), [
    "access-token",
    "buy-number",
    "top-up",
  ]);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, route);
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const user = await createUser();
    await giveNumber(user.id);
    const token = await fetch(`${base}/functions/v1/access-token`, {
      headers: { Authorization: `Bearer ${user.token}` },
    });
    assertEquals(token.status, 200);
    assertEquals((await token.json()).identity, user.id);

    const topUp = await fetch(`${base}/functions/v1/top-up`, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${user.token}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ amount: "10" }),
    });
    assertEquals(topUp.status, 400);
    assertEquals((await topUp.json()).details, { field: "amount" });

    const preflight = await fetch(`${base}/functions/v1/buy-number`, {
      method: "OPTIONS",
    });
    await preflight.body?.cancel();
    assertEquals(preflight.status, 204);
    assertEquals(preflight.headers.get("access-control-allow-origin"), "*");

    const missing = await fetch(`${base}/functions/v1/nope`);
    assertEquals(missing.status, 404);
    assertEquals((await missing.json()).error, "Not found.");

    const health = await fetch(`${base}/health`);
    assertEquals(await health.json(), { ok: true });
  } finally {
    await server.shutdown();
  }
});

test("the router hands the request to the handler unchanged", async () => {
  const { status } = await call(route, { method: "GET" });
  // `call` targets /functions/v1/test, which is not a function.
  assertEquals(status, 404);
});
