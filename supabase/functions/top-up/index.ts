/**
 * POST /functions/v1/top-up — start a Stripe Checkout top-up.
 *
 * Body `{amount}` (dollars) or `{priceId}` (one of `STRIPE_TOPUP_PRICE_IDS`),
 * optional `returnUrl` on an allowed origin. `public.prepare_topup` decides
 * whether the amount is allowed and what it costs; this function only creates
 * the Stripe customer (once) and the Checkout Session. Answers `{url}`.
 */

import { authenticate, type Claims } from "../_shared/auth.ts";
import { asService, asUser, single } from "../_shared/db.ts";
import { env, envList } from "../_shared/env.ts";
import { callProvider, HttpError } from "../_shared/errors.ts";
import {
  badField,
  endpoint,
  json,
  type JsonObject,
  onlyFields,
  optionalString,
  readJsonObject,
} from "../_shared/http.ts";
import { type Stripe, stripeClient } from "../_shared/stripe.ts";

/** What `public.prepare_topup` answers. */
interface PreparedTopUp {
  amount: number;
  amountCents: number;
  currency: string;
  stripeCustomerId: string | null;
  email: string | null;
  plan: string;
}

interface TopUpRequest {
  amount: number;
  priceId?: string;
  returnUrl?: string;
}

/** `STRIPE_TOPUP_PRICE_IDS`: `price_5USD:5,price_10USD:10` → id → dollars. */
export function configuredPrices(): Map<string, number> {
  const prices = new Map<string, number>();
  for (const entry of envList("STRIPE_TOPUP_PRICE_IDS")) {
    const [id, dollars] = entry.split(":").map((part) => part.trim());
    const amount = Number(dollars);
    if (
      !id || dollars === undefined || dollars === "" || !Number.isFinite(amount)
    ) {
      throw new HttpError(500, "The service is not configured.", null, {}, {
        log: `STRIPE_TOPUP_PRICE_IDS entry ${
          JSON.stringify(entry)
        } is not id:dollars`,
      });
    }
    prices.set(id, amount);
  }
  return prices;
}

function parseRequest(body: JsonObject): TopUpRequest {
  onlyFields(body, ["amount", "priceId", "returnUrl"]);
  const priceId = optionalString(body, "priceId");
  const returnUrl = optionalString(body, "returnUrl");
  const hasAmount = body.amount !== undefined && body.amount !== null;
  if (hasAmount && priceId !== undefined) {
    throw badField("amount", "Send either `amount` or `priceId`, not both.");
  }
  if (priceId !== undefined) {
    const amount = configuredPrices().get(priceId);
    if (amount === undefined) {
      throw badField(
        "priceId",
        `\`priceId\` ${JSON.stringify(priceId)} is not offered.`,
      );
    }
    return { amount, priceId, returnUrl };
  }
  if (!hasAmount) {
    throw badField("amount", "`amount` (dollars) or `priceId` is required.");
  }
  if (typeof body.amount !== "number" || !Number.isFinite(body.amount)) {
    throw badField("amount", "`amount` must be a number of dollars.");
  }
  return { amount: body.amount, returnUrl };
}

/** Success and cancel URLs: the caller's `returnUrl` when its origin is allowed, else the defaults. */
function redirectUrls(
  returnUrl: string | undefined,
): { success: string; cancel: string } {
  if (returnUrl === undefined) {
    const success = env("TOPUP_SUCCESS_URL");
    const cancel = env("TOPUP_CANCEL_URL") ?? success;
    if (success === undefined || cancel === undefined) {
      throw badField(
        "returnUrl",
        "`returnUrl` is required: no default return page is configured.",
      );
    }
    return { success, cancel };
  }
  let url: URL;
  try {
    url = new URL(returnUrl);
  } catch {
    throw badField("returnUrl", "`returnUrl` must be an absolute URL.");
  }
  const allowed = envList("ALLOWED_RETURN_ORIGINS").map((origin) => {
    try {
      return new URL(origin).origin;
    } catch {
      return origin;
    }
  });
  if (!allowed.includes(url.origin)) {
    throw badField(
      "returnUrl",
      `\`returnUrl\` must be on an allowed origin, not ${url.origin}.`,
    );
  }
  const hash = url.hash;
  url.hash = "";
  const join = url.search === "" ? "?" : "&";
  // `{CHECKOUT_SESSION_ID}` stays literal: Stripe fills it in.
  return {
    success:
      `${url.href}${join}topup=success&session_id={CHECKOUT_SESSION_ID}${hash}`,
    cancel: `${url.href}${join}topup=cancelled${hash}`,
  };
}

async function prepare(claims: Claims, amount: number): Promise<PreparedTopUp> {
  try {
    return await asUser(claims, async (tx) =>
      single<PreparedTopUp>(
        await tx`select public.prepare_topup(${
          String(amount)
        }::numeric) as result`,
      ));
  } catch (err) {
    // Every PT400 of prepare_topup is about the amount: name the field.
    if ((err as { code?: string }).code === "PT400") {
      throw new HttpError(400, (err as Error).message, { field: "amount" });
    }
    throw err;
  }
}

/** The user's Stripe customer, created and remembered the first time. */
async function customerFor(
  stripe: Stripe,
  userId: string,
  prepared: PreparedTopUp,
): Promise<string> {
  if (prepared.stripeCustomerId) return prepared.stripeCustomerId;
  const customer = await callProvider("Stripe", () =>
    stripe.customers.create({
      email: prepared.email ?? undefined,
      metadata: { user_id: userId },
    }, { idempotencyKey: `callbalance-customer-${userId}` }));
  await asService(async (tx) => {
    await tx`select billing.set_stripe_customer(${userId}::uuid, ${customer.id})`;
  });
  return customer.id;
}

/** A configured Stripe Price must charge what the plan says that preset costs. */
async function checkPrice(
  stripe: Stripe,
  priceId: string,
  prepared: PreparedTopUp,
): Promise<void> {
  const price = await callProvider(
    "Stripe",
    () => stripe.prices.retrieve(priceId),
  );
  if (
    price.unit_amount !== prepared.amountCents ||
    price.currency !== prepared.currency
  ) {
    throw new HttpError(500, "The service is not configured.", null, {}, {
      log:
        `Stripe price ${priceId} is ${price.unit_amount} ${price.currency}, ` +
        `the plan's preset is ${prepared.amountCents} ${prepared.currency}`,
    });
  }
}

export const handler = endpoint(["POST"], async (req) => {
  const claims = await authenticate(req);
  const request = parseRequest(await readJsonObject(req));
  const urls = redirectUrls(request.returnUrl);
  const prepared = await prepare(claims, request.amount);
  const stripe = stripeClient();
  if (request.priceId !== undefined) {
    await checkPrice(stripe, request.priceId, prepared);
  }
  const customer = await customerFor(stripe, claims.sub, prepared);
  const metadata = { purpose: "topup", user_id: claims.sub };
  const lineItem: Stripe.Checkout.SessionCreateParams.LineItem =
    request.priceId !== undefined ? { price: request.priceId, quantity: 1 } : {
      price_data: {
        currency: prepared.currency,
        unit_amount: prepared.amountCents,
        product_data: { name: "Call balance top-up" },
      },
      quantity: 1,
    };
  const session = await callProvider(
    "Stripe",
    () =>
      stripe.checkout.sessions.create({
        mode: "payment",
        customer,
        client_reference_id: claims.sub,
        line_items: [lineItem],
        metadata,
        payment_intent_data: { setup_future_usage: "off_session", metadata },
        success_url: urls.success,
        cancel_url: urls.cancel,
      }),
  );
  if (!session.url) {
    throw new HttpError(
      502,
      "The payment provider did not return a checkout page.",
    );
  }
  return json({ url: session.url });
});

if (import.meta.main) Deno.serve(handler);
