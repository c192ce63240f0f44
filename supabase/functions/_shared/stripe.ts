/**
 * Stripe's SDK from the environment. `STRIPE_API_BASE` points it elsewhere
 * than api.stripe.com (the local stand-in in development and tests).
 */

import Stripe from "stripe";
import { env, requireEnv } from "./env.ts";

export type { Stripe };

let cached:
  | { key: string; base: string | undefined; client: Stripe }
  | undefined;

export function stripeClient(): Stripe {
  const key = requireEnv("STRIPE_SECRET_KEY");
  const base = env("STRIPE_API_BASE");
  if (cached?.key === key && cached.base === base) return cached.client;
  const config: Stripe.StripeConfig = {
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 2,
    timeout: 20_000,
    appInfo: { name: "callbalance-edge" },
  };
  if (base !== undefined) {
    const url = new URL(base);
    config.protocol = url.protocol === "http:" ? "http" : "https";
    config.host = url.hostname;
    config.port = url.port || (url.protocol === "http:" ? 80 : 443);
  }
  const client = new Stripe(key, config);
  cached = { key, base, client };
  return client;
}
