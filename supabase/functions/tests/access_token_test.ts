/** access-token: a Twilio Voice token only for users who may call now. */

import { decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { handler } from "../access-token/index.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  call,
  createUser,
  credit,
  giveNumber,
  need,
  noFreeMinutes,
  test,
} from "./helpers.ts";

test("a user with a number and free minutes gets a Voice token for one hour", async () => {
  const user = await createUser();
  await giveNumber(user.id);
  const before = Math.floor(Date.now() / 1000);
  const { status, body } = await call(handler, {
    token: user.token,
    method: "GET",
  });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(body.identity, user.id);
  const token = String(body.token);
  const header = decodeProtectedHeader(token);
  assertEquals(header.cty, "twilio-fpa;v=1");
  const { payload } = await jwtVerify(
    token,
    new TextEncoder().encode(need("TWILIO_API_KEY_SECRET")),
  );
  assertEquals(payload.iss, need("TWILIO_API_KEY_SID"));
  assertEquals(payload.sub, need("TWILIO_ACCOUNT_SID"));
  const exp = payload.exp ?? 0;
  assert(exp - before >= 3590 && exp - before <= 3610, `ttl ${exp - before}`);
  assertEquals(new Date(String(body.expiresAt)).getTime(), exp * 1000);
  const grants = payload.grants as Record<string, unknown>;
  assertEquals(grants.identity, user.id);
  assertEquals(grants.voice, {
    incoming: { allow: true },
    outgoing: { application_sid: need("TWILIO_TWIML_APP_SID") },
  });
});

test("POST works as GET does", async () => {
  const user = await createUser();
  await giveNumber(user.id);
  const { status, body } = await call(handler, {
    token: user.token,
    method: "POST",
  });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(decodeJwt(String(body.token)).sub, need("TWILIO_ACCOUNT_SID"));
});

test("without an active number the token is refused", async () => {
  const user = await createUser();
  const { status, body } = await call(handler, {
    token: user.token,
    method: "GET",
  });
  assertEquals(status, 403);
  assertMatch(String(body.error), /number/);
  assert(!("token" in body));
});

test("no free minutes and less than the minimum balance → 402 with minRequired", async () => {
  const user = await createUser();
  await giveNumber(user.id);
  await noFreeMinutes(user.id);
  const empty = await call(handler, { token: user.token, method: "GET" });
  assertEquals(empty.status, 402, JSON.stringify(empty.body));
  assertEquals(empty.body.minRequired, 5);
  assertEquals(empty.body.price, 0.02);
  assertEquals((empty.body.details as Record<string, unknown>).balance, 0);
  assertMatch(String(empty.body.error), /\$5/);

  await credit(user.id, 499);
  const short = await call(handler, { token: user.token, method: "GET" });
  assertEquals(short.status, 402);
  assertEquals(short.body.minRequired, 5);

  await credit(user.id, 1);
  const enough = await call(handler, { token: user.token, method: "GET" });
  assertEquals(enough.status, 200, JSON.stringify(enough.body));
});

test("classic needs no number but a positive balance", async () => {
  const user = await createUser("classic");
  const empty = await call(handler, { token: user.token, method: "GET" });
  assertEquals(empty.status, 402, JSON.stringify(empty.body));
  assert("minRequired" in empty.body, "minRequired is given");
  await credit(user.id, 100);
  const funded = await call(handler, { token: user.token, method: "GET" });
  assertEquals(funded.status, 200, JSON.stringify(funded.body));
});

test("the token is for the caller only, whatever the request says", async () => {
  const user = await createUser();
  const other = await createUser();
  await giveNumber(other.id);
  // The caller has no number; another user's number does not help.
  const { status } = await call(handler, {
    token: user.token,
    method: "POST",
    body: { identity: other.id },
  });
  assertEquals(status, 403);
  const own = await call(handler, {
    token: other.token,
    method: "POST",
    body: { identity: user.id },
  });
  assertEquals(own.status, 200);
  assertEquals(own.body.identity, other.id);
});

test("only GET and POST", async () => {
  const user = await createUser();
  const { status } = await call(handler, {
    token: user.token,
    method: "DELETE",
  });
  assertEquals(status, 405);
  const preflight = await handler(
    new Request("http://127.0.0.1/functions/v1/access-token", {
      method: "OPTIONS",
    }),
  );
  assertEquals(preflight.status, 204);
  assertEquals(preflight.headers.get("Access-Control-Allow-Origin"), "*");
});
