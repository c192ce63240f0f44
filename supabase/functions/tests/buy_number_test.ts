/** buy-number: reserve in SQL, buy at Twilio, confirm — or give everything back. */

import { handler } from "../buy-number/index.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  balanceOf,
  call,
  createUser,
  credit,
  db,
  giveNumber,
  ledgerOf,
  need,
  noFreeMinutes,
  test,
  type User,
} from "./helpers.ts";

const TWILIO = need("TWILIO_API_BASE");
const PUBLIC_URL = need("PUBLIC_URL");

interface TwilioNumber {
  sid: string;
  phone_number: string;
  voice_url: string;
  voice_method: string;
  status_callback: string;
  status_callback_method: string;
}

async function twilioState(): Promise<
  { numbers: TwilioNumber[]; released: TwilioNumber[] }
> {
  return await (await fetch(`${TWILIO}/_control/state`)).json();
}

async function fault(kind: string, status = 500, count = 1): Promise<void> {
  const response = await fetch(`${TWILIO}/_control/faults`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ kind, status, count }),
  });
  assertEquals(response.status, 200, await response.text());
}

async function clearFaults(): Promise<void> {
  await (await fetch(`${TWILIO}/_control/faults`, { method: "DELETE" })).body
    ?.cancel();
}

async function numbersOf(userId: string) {
  return [
    ...await db()`
    select phone_number, provider_sid, is_free, status, charged_amount::text as charged
    from public.user_phone_numbers where user_id = ${userId} order by created_at`,
  ];
}

async function claimedFree(userId: string): Promise<boolean> {
  const [row] = await db()`
    select has_claimed_free_number from public.call_balance where user_id = ${userId}`;
  return row.has_claimed_free_number;
}

async function buy(user: User, body: unknown = {}) {
  return await call(handler, { token: user.token, body });
}

/** A number nobody has at the stand-in yet. */
function freshNumber(): string {
  return `+1646555${String(Math.floor(Math.random() * 9000) + 1000)}`;
}

test("the first number is free at $0, bought by area code with the worker's URLs", async () => {
  const user = await createUser();
  const { status, body } = await buy(user, { areaCode: "212" });
  assertEquals(status, 200, JSON.stringify(body));
  assertMatch(String(body.phoneNumber), /^\+1212555\d{4}$/);
  assertMatch(String(body.sid), /^PN[0-9a-f]{32}$/);
  assertEquals(body.isFree, true);
  assertEquals(body.charged, 0);
  assertEquals(await balanceOf(user.id), "0.00");
  assertEquals(await ledgerOf(user.id), []);
  assert(await claimedFree(user.id), "the free number is claimed");
  assertEquals(await numbersOf(user.id), [{
    phone_number: body.phoneNumber,
    provider_sid: body.sid,
    is_free: true,
    status: "active",
    charged: "0.00",
  }]);
  const bought = (await twilioState()).numbers.find((n) => n.sid === body.sid);
  assert(bought !== undefined, "Twilio sold the number");
  assertEquals(bought.phone_number, body.phoneNumber);
  assertEquals(bought.voice_url, `${PUBLIC_URL}/twilio/voice`);
  assertEquals(bought.voice_method, "POST");
  assertEquals(bought.status_callback, `${PUBLIC_URL}/twilio/call-status`);
  assertEquals(bought.status_callback_method, "POST");
});

test("a named number is bought as named; the country defaults to US", async () => {
  const user = await createUser();
  const phoneNumber = freshNumber();
  const { status, body } = await buy(user, { phoneNumber });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(body.phoneNumber, phoneNumber);
  assertEquals((await numbersOf(user.id))[0].phone_number, phoneNumber);
  const searched = await buy(await createUser(), {});
  assertEquals(searched.status, 200, JSON.stringify(searched.body));
  assertMatch(String(searched.body.phoneNumber), /^\+1\d{10}$/);
});

test("a second number with no free minutes and less than $5 → 402, nothing bought", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "305" })).status, 200);
  await noFreeMinutes(user.id);
  await credit(user.id, 450);
  const before = (await twilioState()).numbers.length;
  const { status, body } = await buy(user, { areaCode: "305" });
  assertEquals(status, 402, JSON.stringify(body));
  assertEquals(body.minRequired, 5);
  assertEquals(body.price, 2);
  assertMatch(String(body.error), /\$5/);
  assertEquals((body.details as Record<string, unknown>).balance, 4.5);
  assertEquals((await twilioState()).numbers.length, before);
  assertEquals(await balanceOf(user.id), "4.50");
  assertEquals((await numbersOf(user.id)).length, 1);
});

test("with free minutes left a second number needs only its price", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "312" })).status, 200);
  await credit(user.id, 150);
  const { status, body } = await buy(user, { areaCode: "312" });
  assertEquals(status, 402, JSON.stringify(body));
  assertEquals(body.minRequired, 2);
  assertEquals(body.price, 2);
});

test("a second number is charged its monthly price", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "617" })).status, 200);
  await noFreeMinutes(user.id);
  await credit(user.id, 1000);
  const { status, body } = await buy(user, { areaCode: "617" });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(body.isFree, false);
  assertEquals(body.charged, 2);
  assertEquals(await balanceOf(user.id), "8.00");
  const ledger = await ledgerOf(user.id);
  assertEquals(ledger.map((row) => [row.type, row.amount, row.reason]), [
    ["credit", "10.00", "topup"],
    ["debit", "-2.00", "number_purchase"],
  ]);
  const numbers = await numbersOf(user.id);
  assertEquals(numbers.map((n) => [n.status, n.is_free, n.charged]), [
    ["active", true, "0.00"],
    ["active", false, "2.00"],
  ]);
});

test("a Twilio failure reverses the charge: the balance is unchanged", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "702" })).status, 200);
  await credit(user.id, 1000);
  const before = (await twilioState()).numbers.length;
  await fault("purchase", 500);
  try {
    const { status, body } = await buy(user, { areaCode: "702" });
    assertEquals(status, 502, JSON.stringify(body));
    assertMatch(String(body.error), /Twilio/);
  } finally {
    await clearFaults();
  }
  assertEquals(await balanceOf(user.id), "10.00");
  const ledger = await ledgerOf(user.id);
  assertEquals(ledger.map((row) => [row.amount, row.reason]), [
    ["10.00", "topup"],
    ["-2.00", "number_purchase"],
    ["2.00", "number_cancel"],
  ]);
  assertEquals((await numbersOf(user.id)).map((n) => n.status), [
    "active",
    "cancelled",
  ]);
  assertEquals((await twilioState()).numbers.length, before);
});

test("a Twilio failure on the free number gives the free claim back", async () => {
  const user = await createUser();
  await fault("available_numbers", 503);
  try {
    const { status } = await buy(user, { areaCode: "404" });
    assertEquals(status, 502);
  } finally {
    await clearFaults();
  }
  assertEquals(await claimedFree(user.id), false);
  assertEquals(await ledgerOf(user.id), []);
  await fault("purchase", 400); // 21422: the named number is not available
  try {
    const { status } = await buy(user, { phoneNumber: freshNumber() });
    assertEquals(status, 409);
  } finally {
    await clearFaults();
  }
  assertEquals(await claimedFree(user.id), false);
  const retry = await buy(user, { areaCode: "404" });
  assertEquals(retry.status, 200, JSON.stringify(retry.body));
  assertEquals(retry.body.isFree, true);
  assertEquals((await numbersOf(user.id)).map((n) => n.status), [
    "cancelled", // the named number Twilio refused; the failed search reserved nothing
    "active",
  ]);
});

/** A plan like starter that also sells numbers in `countries` (a data change, as an operator's). */
async function planSelling(id: string, countries: string[]): Promise<string> {
  await db()`
    insert into public.billing_plans
    select (jsonb_populate_record(null::public.billing_plans, to_jsonb(p) || ${
    db().json({ id, is_default: false, number_countries: countries })
  })).*
    from public.billing_plans as p where p.id = 'starter'
    on conflict (id) do nothing`;
  return id;
}

async function twilioRequests(): Promise<{ path: string }[]> {
  return await (await fetch(`${TWILIO}/_control/requests`)).json();
}

test("no number available → 404, and nothing is kept", async () => {
  const user = await createUser(
    await planSelling("edge_fr", ["US", "CA", "FR"]),
  );
  const { status, body } = await buy(user, { country: "FR" });
  assertEquals(status, 404, JSON.stringify(body));
  assertEquals(body.details, { field: "country" });
  assertEquals(await claimedFree(user.id), false);
  assertEquals(
    await numbersOf(user.id),
    [],
    "nothing reserved before a search",
  );
});

test("bad fields are refused with 400 naming the field, before anything is reserved", async () => {
  const user = await createUser();
  const cases: [unknown, string][] = [
    [{ phoneNumber: "4155550100" }, "phoneNumber"],
    [{ phoneNumber: "+0123456789" }, "phoneNumber"],
    [{ phoneNumber: "+1 415 555 0100" }, "phoneNumber"],
    [{ phoneNumber: "+1234567890123456" }, "phoneNumber"],
    [{ phoneNumber: 14155550100 }, "phoneNumber"],
    [{ areaCode: "41" }, "areaCode"],
    [{ areaCode: "4155" }, "areaCode"],
    [{ areaCode: 415 }, "areaCode"],
    [{ country: "USA" }, "country"],
    [{ country: "U1" }, "country"],
    [{ userId: crypto.randomUUID() }, "userId"],
    [[], "body"],
    ["{", "body"],
  ];
  for (const [body, field] of cases) {
    const answer = await buy(user, body);
    assertEquals(answer.status, 400, JSON.stringify(body));
    assertEquals(answer.body.details, { field }, JSON.stringify(body));
  }
  assertEquals(await numbersOf(user.id), []);
  assertEquals(await claimedFree(user.id), false);
});

test("another user's number cannot be taken", async () => {
  const owner = await createUser();
  const phoneNumber = freshNumber();
  assertEquals((await buy(owner, { phoneNumber })).status, 200);
  const other = await createUser();
  const { status, body } = await buy(other, { phoneNumber });
  assertEquals(status, 409, JSON.stringify(body));
  assertEquals(await numbersOf(other.id), []);
  assertEquals(await claimedFree(other.id), false);
  const [row] = await db()`
    select user_id from public.user_phone_numbers
    where phone_number = ${phoneNumber} and status = 'active'`;
  assertEquals(row.user_id, owner.id);
});

test("a plan without numbers is refused", async () => {
  const user = await createUser("classic");
  const { status, body } = await buy(user, {});
  assertEquals(status, 403, JSON.stringify(body));
  assertEquals(await numbersOf(user.id), []);
});

test("only POST; OPTIONS answers the CORS preflight", async () => {
  const user = await createUser();
  const get = await call(handler, { token: user.token, method: "GET" });
  assertEquals(get.status, 405);
  const preflight = await handler(
    new Request("http://127.0.0.1/functions/v1/buy-number", {
      method: "OPTIONS",
    }),
  );
  assertEquals(preflight.status, 204);
  assertEquals(preflight.headers.get("Access-Control-Allow-Origin"), "*");
});

test("concurrent purchases claim the free number once", async () => {
  const user = await createUser();
  const answers = await Promise.all(
    ["201", "202", "203", "205"].map((areaCode) => buy(user, { areaCode })),
  );
  const statuses = answers.map((a) => a.status).sort();
  // One free number; the others need $5 of balance (none) or free minutes and $2.
  assertEquals(
    statuses,
    [200, 402, 402, 402],
    JSON.stringify(answers.map((a) => a.body)),
  );
  assertEquals(answers.find((a) => a.status === 200)?.body.isFree, true);
  assertEquals(await balanceOf(user.id), "0.00");
  assertEquals((await numbersOf(user.id)).map((n) => n.status), ["active"]);
});

test("a number the database already holds is skipped, never bought at Twilio", async () => {
  // Twilio offers first a number this database already gives to someone else
  // (as a Twilio account that forgot its numbers would).
  const owner = await createUser();
  await giveNumber(owner.id, "+19795550100");
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "978" })).status, 200);
  await noFreeMinutes(user.id);
  await credit(user.id, 1000);
  const purchases = (await twilioState()).numbers.length;
  const { status, body } = await buy(user, { areaCode: "979" });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(body.phoneNumber, "+19795550101");
  assertEquals(body.charged, 2);
  assertEquals(await balanceOf(user.id), "8.00");
  assertEquals((await numbersOf(user.id)).map((n) => n.status), [
    "active",
    "active",
  ]);
  const state = await twilioState();
  assertEquals(state.numbers.length, purchases + 1, "one number bought");
  assert(
    ![...state.numbers, ...state.released].some((n) =>
      n.phone_number === "+19795550100"
    ),
    "the held number never reached Twilio",
  );
});

test("every number found already held → 409, nothing charged or bought", async () => {
  const owner = await createUser();
  await credit(owner.id, 10000);
  for (let n = 100; n < 110; n++) {
    await giveNumber(owner.id, `+19855550${n}`);
  }
  const user = await createUser();
  const before = (await twilioState()).numbers.length;
  const { status, body } = await buy(user, { areaCode: "985" });
  assertEquals(status, 409, JSON.stringify(body));
  assertMatch(String(body.error), /taken/);
  assertEquals(await numbersOf(user.id), []);
  assertEquals(await claimedFree(user.id), false);
  assertEquals((await twilioState()).numbers.length, before);
});

test("a candidate Twilio no longer sells: its charge returns, the next one is bought", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "786" })).status, 200);
  await noFreeMinutes(user.id);
  await credit(user.id, 1000);
  await fault("purchase", 400); // 21422: not available
  let answer;
  try {
    answer = await buy(user, { areaCode: "786" });
  } finally {
    await clearFaults();
  }
  assertEquals(answer.status, 200, JSON.stringify(answer.body));
  assertEquals(answer.body.phoneNumber, "+17865550102");
  assertEquals(await balanceOf(user.id), "8.00");
  const rows = await db()`
    select amount::text as amount, reason, description, metadata ->> 'phone_number' as phone
    from public.balance_transactions
    where user_id = ${user.id} and reason like 'number%' order by created_at, id`;
  assertEquals(rows.map((r) => [r.amount, r.reason, r.phone]), [
    ["-2.00", "number_purchase", "+17865550101"],
    ["2.00", "number_cancel", null],
    ["-2.00", "number_purchase", "+17865550102"],
  ]);
});

test("a number bought by area code is named in its ledger row", async () => {
  const user = await createUser();
  assertEquals((await buy(user, { areaCode: "503" })).status, 200);
  await noFreeMinutes(user.id);
  await credit(user.id, 1000);
  const { status, body } = await buy(user, { areaCode: "503" });
  assertEquals(status, 200, JSON.stringify(body));
  const [row] = await db()`
    select description, metadata from public.balance_transactions
    where user_id = ${user.id} and reason = 'number_purchase'`;
  assertEquals(
    row.description,
    `Phone number ${body.phoneNumber}, first month`,
  );
  assertEquals(row.metadata.phone_number, body.phoneNumber);
});

test("a country the plan sells no numbers in → 403 before Twilio is asked, nothing kept", async () => {
  const user = await createUser();
  await credit(user.id, 5000);
  const asked = (await twilioRequests()).length;
  const { status, body } = await buy(user, { country: "GB" });
  assertEquals(status, 403, JSON.stringify(body));
  assertEquals(
    body.error,
    "Phone numbers in GB are not sold on your plan; it sells numbers in US, CA.",
  );
  assertEquals(body.details, { country: "GB", countries: ["US", "CA"] });
  // A named foreign number, the country left to its US default, is no way around it.
  const named = await buy(user, { phoneNumber: "+442079460123" });
  assertEquals(named.status, 400, JSON.stringify(named.body));
  assertEquals(
    named.body.error,
    "The phone number +442079460123 is not a number in US.",
  );
  const namedGb = await buy(user, {
    phoneNumber: "+442079460123",
    country: "gb",
  });
  assertEquals(namedGb.status, 403, JSON.stringify(namedGb.body));
  assertEquals((await twilioRequests()).length, asked, "Twilio was not asked");
  assertEquals(await numbersOf(user.id), []);
  assertEquals(await claimedFree(user.id), false);
  assertEquals(await balanceOf(user.id), "50.00");
});

test("Canada is sold by default; a plan that sells GB reaches Twilio, which wants an address", async () => {
  const canadian = await createUser();
  const ca = await buy(canadian, { country: "CA", areaCode: "604" });
  assertEquals(ca.status, 200, JSON.stringify(ca.body));
  assertMatch(String(ca.body.phoneNumber), /^\+1604555\d{4}$/);

  const user = await createUser(
    await planSelling("edge_gb", ["US", "CA", "GB"]),
  );
  const { status, body } = await buy(user, { country: "GB" });
  assertEquals(status, 502, JSON.stringify(body));
  assertEquals(
    await claimedFree(user.id),
    false,
    "the free number is given back",
  );
  assertEquals((await numbersOf(user.id)).map((n) => n.status), ["cancelled"]);
});
