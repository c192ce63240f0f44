/** Every function refuses a request without a valid signed-in user's token: 401 JSON. */

import { SignJWT } from "jose";
import { handler as accessToken } from "../access-token/index.ts";
import { handler as buyNumber } from "../buy-number/index.ts";
import { handler as topUp } from "../top-up/index.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  call,
  createUser,
  need,
  test,
  tokenFor,
} from "./helpers.ts";

const handlers = {
  "top-up": topUp,
  "buy-number": buyNumber,
  "access-token": accessToken,
};

async function refused(token: string | null, header?: string): Promise<string> {
  let last = "";
  for (const [name, handler] of Object.entries(handlers)) {
    const { status, body, response } = await call(handler, {
      token,
      headers: header === undefined ? {} : { Authorization: header },
      body: name === "top-up" ? { amount: 10 } : {},
    });
    assertEquals(status, 401, name);
    assertEquals(body.error, "Unauthorized.", name);
    assert(
      typeof body.details === "string",
      `${name}: details names the reason`,
    );
    assertEquals(response.headers.get("Access-Control-Allow-Origin"), "*");
    last = body.details as string;
  }
  return last;
}

test("a missing token is refused", async () => {
  assertMatch(await refused(null), /missing/);
});

test("a header that is not Bearer is refused", async () => {
  const user = await createUser();
  assertMatch(await refused(null, `Token ${user.token}`), /Bearer/);
  assertMatch(await refused(null, "Bearer"), /Bearer/);
});

test("garbage is refused", async () => {
  assertMatch(await refused("not-a-jwt"), /malformed/);
});

test("an expired token is refused", async () => {
  const user = await createUser();
  const token = await tokenFor(user.id, {}, { expiresIn: -120 });
  assertMatch(await refused(token), /expired/);
});

test("a token without exp is refused", async () => {
  const user = await createUser();
  const token = await new SignJWT({
    sub: user.id,
    role: "authenticated",
    aud: "authenticated",
  }).setProtectedHeader({ alg: "HS256" }).sign(
    new TextEncoder().encode(need("SUPABASE_JWT_SECRET")),
  );
  assertMatch(await refused(token), /exp/);
});

test("a token for another audience is refused", async () => {
  const user = await createUser();
  assertMatch(
    await refused(await tokenFor(user.id, { aud: "other" })),
    /audience/,
  );
});

test("an anon or service_role token is refused", async () => {
  const user = await createUser();
  assertMatch(
    await refused(await tokenFor(user.id, { role: "anon" })),
    /signed-in/,
  );
  assertMatch(
    await refused(await tokenFor(user.id, { role: "service_role" })),
    /signed-in/,
  );
});

test("a token signed with another secret is refused", async () => {
  const user = await createUser();
  const token = await tokenFor(user.id, {}, {
    secret: "another-secret-that-is-long-enough-to-sign",
  });
  assertMatch(await refused(token), /signature/);
});

test("an unsigned token is refused", async () => {
  const user = await createUser();
  const encode = (part: unknown) =>
    btoa(JSON.stringify(part)).replace(/=+$/, "");
  const now = Math.floor(Date.now() / 1000);
  const token = `${encode({ alg: "none", typ: "JWT" })}.${
    encode({
      sub: user.id,
      role: "authenticated",
      aud: "authenticated",
      exp: now + 60,
    })
  }.`;
  assertMatch(await refused(token), /not accepted/);
});

test("a sub that is not a user id is refused", async () => {
  assertMatch(await refused(await tokenFor("service", {})), /user id/);
});
