/** top-up: a Checkout Session for an amount the plan allows, nothing else. */

import { handler } from "../top-up/index.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  balanceOf,
  call,
  createUser,
  db,
  eventually,
  ledgerOf,
  need,
  test,
} from "./helpers.ts";

const STRIPE = need("STRIPE_API_BASE");

async function stripeGet(path: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${STRIPE}/v1/${path}`, {
    headers: { Authorization: `Bearer ${need("STRIPE_SECRET_KEY")}` },
  });
  assertEquals(response.status, 200, path);
  return await response.json();
}

async function control(
  path: string,
  body?: unknown,
  method = "POST",
): Promise<void> {
  const response = await fetch(`${STRIPE}/_control/${path}`, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assertEquals(response.status, 200, await response.text());
}

function sessionIdOf(url: unknown): string {
  assert(typeof url === "string", "url is a string");
  const match = /\/checkout\/(cs_test_[A-Za-z0-9]+)$/.exec(url);
  assert(match !== null, `unexpected checkout url ${url}`);
  assert(url.startsWith(STRIPE), "the checkout page is Stripe's");
  return match[1];
}

async function lineItems(
  sessionId: string,
): Promise<Record<string, unknown>[]> {
  const items = await stripeGet(`checkout/sessions/${sessionId}/line_items`);
  return items.data as Record<string, unknown>[];
}

async function customerOf(userId: string): Promise<string | null> {
  const [row] = await db()`
    select stripe_customer_id from public.call_balance where user_id = ${userId}`;
  return row.stripe_customer_id;
}

test("a custom amount opens a checkout for exactly that amount", async () => {
  const user = await createUser();
  const { status, body } = await call(handler, {
    token: user.token,
    body: { amount: 25 },
  });
  assertEquals(status, 200, JSON.stringify(body));
  assertEquals(Object.keys(body), ["url"]);
  const id = sessionIdOf(body.url);
  const session = await stripeGet(`checkout/sessions/${id}`);
  assertEquals(session.mode, "payment");
  assertEquals(session.amount_total, 2500);
  assertEquals(session.currency, "usd");
  assertEquals(session.client_reference_id, user.id);
  assertEquals(session.metadata, { purpose: "topup", user_id: user.id });
  assertEquals(session.success_url, need("TOPUP_SUCCESS_URL"));
  assertEquals(session.cancel_url, need("TOPUP_CANCEL_URL"));
  const customer = await customerOf(user.id);
  assert(
    customer !== null && customer.startsWith("cus_"),
    "the customer is remembered",
  );
  assertEquals(session.customer, customer);
  const stored = await stripeGet(`customers/${customer}`);
  assertEquals(stored.email, user.email);
  assertEquals(stored.metadata, { user_id: user.id });
  const [item] = await lineItems(id);
  assertEquals(item.amount_total, 2500);
  assertEquals((item.price as Record<string, unknown>).unit_amount, 2500);
  // Nothing is credited before Stripe says it was paid.
  assertEquals(await balanceOf(user.id), "0.00");
  assertEquals(await ledgerOf(user.id), []);
});

test("the card is saved for off-session refills, the payment tagged as a top-up", async () => {
  const user = await createUser();
  const { body } = await call(handler, {
    token: user.token,
    body: { amount: 10 },
  });
  const id = sessionIdOf(body.url);
  const state = await (await fetch(`${STRIPE}/_control/state`)).json();
  const kept = JSON.stringify(state);
  assert(kept.includes(id), "the stand-in knows the session");
  // Paying shows what the payment intent was created with.
  const paid = await fetch(`${STRIPE}/checkout/${id}/pay`, {
    method: "POST",
    headers: { Accept: "application/json" },
  });
  assertEquals(paid.status, 200);
  const { payment_intent: intent } = await paid.json();
  assertEquals(intent.setup_future_usage, "off_session");
  assertEquals(intent.metadata, { purpose: "topup", user_id: user.id });
  assertEquals(intent.amount, 1000);
});

test("the Stripe customer is created once and reused", async () => {
  const user = await createUser();
  const first = await call(handler, {
    token: user.token,
    body: { amount: 10 },
  });
  const customer = await customerOf(user.id);
  const second = await call(handler, {
    token: user.token,
    body: { amount: 5 },
  });
  assertEquals([first.status, second.status], [200, 200]);
  assertEquals(await customerOf(user.id), customer);
  const session = await stripeGet(
    `checkout/sessions/${sessionIdOf(second.body.url)}`,
  );
  assertEquals(session.customer, customer);
  const other = await createUser();
  await call(handler, { token: other.token, body: { amount: 10 } });
  assert(
    await customerOf(other.id) !== customer,
    "each user has their own customer",
  );
});

test("a configured price id opens a checkout for that Stripe price", async () => {
  const user = await createUser();
  const { status, body } = await call(handler, {
    token: user.token,
    body: { priceId: "price_10USD" },
  });
  assertEquals(status, 200, JSON.stringify(body));
  const [item] = await lineItems(sessionIdOf(body.url));
  assertEquals((item.price as Record<string, unknown>).id, "price_10USD");
  assertEquals(item.amount_total, 1000);
});

test("a price id that is not configured is refused", async () => {
  const user = await createUser();
  for (const priceId of ["price_999USD", "", "price_5USD:5"]) {
    const { status, body } = await call(handler, {
      token: user.token,
      body: { priceId },
    });
    assertEquals(status, 400, priceId);
    assertEquals(body.details, { field: "priceId" });
  }
});

test("a price id whose preset the plan does not offer is refused", async () => {
  // classic offers $50 and $100 only; price_5USD is a starter preset.
  const user = await createUser("classic");
  const { status, body } = await call(handler, {
    token: user.token,
    body: { priceId: "price_5USD" },
  });
  assertEquals(status, 400);
  assertMatch(String(body.error), /\$50/);
});

test("bad amounts are refused with 400 naming the amount", async () => {
  const user = await createUser();
  const cases: unknown[] = [
    0,
    -1,
    1e308,
    "50",
    0.001,
    10001,
    4.99,
    true,
    [10],
    {
      dollars: 10,
    },
    null,
  ];
  for (const amount of cases) {
    const { status, body } = await call(handler, {
      token: user.token,
      body: { amount },
    });
    assertEquals(status, 400, `amount ${JSON.stringify(amount)}`);
    assertEquals(
      body.details,
      { field: "amount" },
      `amount ${JSON.stringify(amount)}`,
    );
    assert(typeof body.error === "string" && body.error.length > 0);
  }
  for (
    const raw of [
      '{"amount": NaN}',
      '{"amount": Infinity}',
      '{"amount": 10,}',
      "{",
    ]
  ) {
    const { status, body } = await call(handler, {
      token: user.token,
      body: raw,
    });
    assertEquals(status, 400, raw);
    assertEquals(body.details, { field: "body" }, raw);
  }
  assertEquals(await customerOf(user.id), null);
  assertEquals(await ledgerOf(user.id), []);
});

test("the plan decides the amounts: classic takes $50 or $100 only", async () => {
  const user = await createUser("classic");
  const refused = await call(handler, {
    token: user.token,
    body: { amount: 25 },
  });
  assertEquals(refused.status, 400);
  assertEquals(refused.body.details, { field: "amount" });
  const accepted = await call(handler, {
    token: user.token,
    body: { amount: 50 },
  });
  assertEquals(accepted.status, 200, JSON.stringify(accepted.body));
});

test("the body must be one JSON object with known fields", async () => {
  const user = await createUser();
  const cases: [unknown, string][] = [
    [{}, "amount"],
    [{ amount: 10, priceId: "price_10USD" }, "amount"],
    [{ amount: 10, userId: crypto.randomUUID() }, "userId"],
    [{ amount: 10, returnUrl: 42 }, "returnUrl"],
    [[10], "body"],
    ["10", "body"],
    ["null", "body"],
  ];
  for (const [body, field] of cases) {
    const answer = await call(handler, { token: user.token, body });
    assertEquals(answer.status, 400, JSON.stringify(body));
    assertEquals(answer.body.details, { field }, JSON.stringify(body));
  }
  const form = await call(handler, {
    token: user.token,
    body: "amount=10",
    contentType: "application/x-www-form-urlencoded",
  });
  assertEquals(form.status, 415);
});

test("returnUrl must be on an allowed origin", async () => {
  const user = await createUser();
  for (
    const returnUrl of [
      "https://evil.example.test/billing",
      "http://app.example.test/billing",
      "https://app.example.test.evil.test/",
      "javascript:alert(1)",
      "/relative",
    ]
  ) {
    const { status, body } = await call(handler, {
      token: user.token,
      body: { amount: 10, returnUrl },
    });
    assertEquals(status, 400, returnUrl);
    assertEquals(body.details, { field: "returnUrl" }, returnUrl);
  }
  const { status, body } = await call(handler, {
    token: user.token,
    body: {
      amount: 10,
      returnUrl: "https://app.example.test/billing?tab=funds",
    },
  });
  assertEquals(status, 200, JSON.stringify(body));
  const session = await stripeGet(`checkout/sessions/${sessionIdOf(body.url)}`);
  assertEquals(
    session.success_url,
    "https://app.example.test/billing?tab=funds&topup=success&session_id={CHECKOUT_SESSION_ID}",
  );
  assertEquals(
    session.cancel_url,
    "https://app.example.test/billing?tab=funds&topup=cancelled",
  );
  const spa = await call(handler, {
    token: user.token,
    body: { amount: 10, returnUrl: "http://localhost:3000/#/billing" },
  });
  assertEquals(spa.status, 200, JSON.stringify(spa.body));
  const routed = await stripeGet(
    `checkout/sessions/${sessionIdOf(spa.body.url)}`,
  );
  assertEquals(
    routed.cancel_url,
    "http://localhost:3000/?topup=cancelled#/billing",
  );
});

test("a Stripe outage is a 502 and charges nothing", async () => {
  const user = await createUser();
  await control("faults", {
    mode: "fail",
    count: 10,
    status: 500,
    path_prefix: "/v1/checkout/sessions",
  });
  try {
    const { status, body } = await call(handler, {
      token: user.token,
      body: { amount: 10 },
    });
    assertEquals(status, 502);
    assertMatch(String(body.error), /Stripe/);
  } finally {
    await control("faults", undefined, "DELETE");
  }
  assertEquals(await ledgerOf(user.id), []);
});

test("only POST; OPTIONS answers the CORS preflight", async () => {
  const user = await createUser();
  const get = await call(handler, { token: user.token, method: "GET" });
  assertEquals(get.status, 405);
  assertEquals(get.response.headers.get("Allow"), "POST, OPTIONS");
  const preflight = await handler(
    new Request("http://127.0.0.1/functions/v1/top-up", {
      method: "OPTIONS",
      headers: {
        Origin: "https://app.example.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
      },
    }),
  );
  assertEquals(preflight.status, 204);
  assertEquals(preflight.headers.get("Access-Control-Allow-Origin"), "*");
  assertMatch(
    preflight.headers.get("Access-Control-Allow-Headers") ?? "",
    /authorization/,
  );
  assertMatch(
    preflight.headers.get("Access-Control-Allow-Methods") ?? "",
    /POST/,
  );
});

test("round trip: top-up → checkout → pay → signed webhook → worker → balance", async () => {
  const user = await createUser();
  const { status, body } = await call(handler, {
    token: user.token,
    body: { amount: 15 },
  });
  assertEquals(status, 200, JSON.stringify(body));
  const id = sessionIdOf(body.url);
  const paid = await fetch(`${STRIPE}/checkout/${id}/pay`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      Accept: "application/json",
    },
    body: "card=ok",
  });
  assertEquals(paid.status, 200, await paid.text());
  await eventually(async () => (await balanceOf(user.id)) === "15.00");
  const ledger = await ledgerOf(user.id);
  assertEquals(ledger.length, 1);
  assertEquals(ledger[0].type, "credit");
  assertEquals(ledger[0].amount, "15.00");
  // The worker remembers the saved card for auto-refill.
  await eventually(async () => {
    const [row] = await db()`
      select stripe_payment_method_id from public.call_balance where user_id = ${user.id}`;
    return row.stripe_payment_method_id !== null;
  });
});

test("concurrent first top-ups create one Stripe customer", async () => {
  const user = await createUser();
  const answers = await Promise.all(
    [5, 10, 20].map((amount) =>
      call(handler, { token: user.token, body: { amount } })
    ),
  );
  assertEquals(answers.map((a) => a.status), [200, 200, 200]);
  const customer = await customerOf(user.id);
  for (const answer of answers) {
    const session = await stripeGet(
      `checkout/sessions/${sessionIdOf(answer.body.url)}`,
    );
    assertEquals(session.customer, customer);
  }
});
