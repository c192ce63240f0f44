/** Projects on asymmetric signing keys: tokens verified against the JWKS URL. */

import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { handler } from "../access-token/index.ts";
import {
  assertEquals,
  assertMatch,
  call,
  createUser,
  giveNumber,
  test,
} from "./helpers.ts";

async function signed(
  privateKey: CryptoKey,
  kid: string,
  claims: Record<string, unknown>,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({
    role: "authenticated",
    aud: "authenticated",
    iat: now,
    exp: now + 600,
    ...claims,
  }).setProtectedHeader({ alg: "ES256", kid, typ: "JWT" }).sign(privateKey);
}

test("ES256 tokens are verified with the key set given inline (SUPABASE_JWKS)", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256", {
    extractable: true,
  });
  const other = await generateKeyPair("ES256");
  const jwk = {
    ...await exportJWK(publicKey),
    kid: "inline-1",
    alg: "ES256",
    use: "sig",
  };
  Deno.env.set("SUPABASE_JWKS", JSON.stringify({ keys: [jwk] }));
  try {
    const user = await createUser();
    await giveNumber(user.id);
    const good = await call(handler, {
      method: "GET",
      token: await signed(privateKey, "inline-1", { sub: user.id }),
    });
    assertEquals(good.status, 200, JSON.stringify(good.body));
    const forged = await call(handler, {
      method: "GET",
      token: await signed(other.privateKey, "inline-1", { sub: user.id }),
    });
    assertEquals(forged.status, 401);
    // HS256 tokens still verify with the secret alongside.
    const legacy = await call(handler, { method: "GET", token: user.token });
    assertEquals(legacy.status, 200);
  } finally {
    Deno.env.delete("SUPABASE_JWKS");
  }
});

test("without any signing keys configured, ES256 tokens are refused", async () => {
  const { privateKey } = await generateKeyPair("ES256");
  const user = await createUser();
  const { status, body } = await call(handler, {
    method: "GET",
    token: await signed(privateKey, "k", { sub: user.id }),
  });
  assertEquals(status, 401);
  assertMatch(String(body.details), /not accepted/);
});

test("ES256 tokens are verified with the project's JWKS URL", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256", {
    extractable: true,
  });
  const other = await generateKeyPair("ES256");
  const jwk = {
    ...await exportJWK(publicKey),
    kid: "key-1",
    alg: "ES256",
    use: "sig",
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ keys: [jwk] }),
  );
  const previous = Deno.env.get("SUPABASE_JWKS_URL");
  Deno.env.set(
    "SUPABASE_JWKS_URL",
    `http://127.0.0.1:${server.addr.port}/auth/v1/.well-known/jwks.json`,
  );
  try {
    const user = await createUser();
    await giveNumber(user.id);
    const good = await call(handler, {
      method: "GET",
      token: await signed(privateKey, "key-1", { sub: user.id }),
    });
    assertEquals(good.status, 200, JSON.stringify(good.body));
    assertEquals(good.body.identity, user.id);

    const forged = await call(handler, {
      method: "GET",
      token: await signed(other.privateKey, "key-1", { sub: user.id }),
    });
    assertEquals(forged.status, 401);
    assertMatch(String(forged.body.details), /signature/);

    const unknownKey = await call(handler, {
      method: "GET",
      token: await signed(other.privateKey, "key-2", { sub: user.id }),
    });
    assertEquals(unknownKey.status, 401);

    const wrongAudience = await call(handler, {
      method: "GET",
      token: await signed(privateKey, "key-1", { sub: user.id, aud: "other" }),
    });
    assertEquals(wrongAudience.status, 401);
    assertMatch(String(wrongAudience.body.details), /audience/);
  } finally {
    if (previous === undefined) Deno.env.delete("SUPABASE_JWKS_URL");
    else Deno.env.set("SUPABASE_JWKS_URL", previous);
    await server.shutdown();
  }
});
