/**
 * Twilio's SDK from the environment. Requests go through `fetch`; with
 * `TWILIO_API_BASE` set, every `https://*.twilio.com` URL the SDK builds is
 * sent to that base instead (the local stand-in in development and tests).
 */

import { decodeJwt } from "jose";
import twilio from "twilio";
import { env, requireEnv } from "./env.ts";

type RequestOptions = Parameters<twilio.RequestClient["request"]>[0];
type ClientResponse = Awaited<ReturnType<twilio.RequestClient["request"]>>;

function encodeForm(data: object): string {
  const form = new URLSearchParams();
  for (const [key, value] of Object.entries(data)) {
    if (value === undefined || value === null) continue;
    for (const item of Array.isArray(value) ? value : [value]) {
      form.append(
        key,
        item instanceof Date ? item.toISOString() : String(item),
      );
    }
  }
  return form.toString();
}

/** The SDK's request client, over `fetch`, optionally re-based. */
class FetchRequestClient extends twilio.RequestClient {
  readonly #base: URL | undefined;

  constructor(base: string | undefined) {
    super({ timeout: 20_000 });
    this.#base = base === undefined ? undefined : new URL(base);
  }

  override async request<TData>(
    opts: RequestOptions,
  ): Promise<ClientResponse & { body: TData }> {
    const url = new URL(opts.uri);
    if (this.#base !== undefined && url.hostname.endsWith("twilio.com")) {
      url.protocol = this.#base.protocol;
      url.host = this.#base.host;
      const prefix = this.#base.pathname.replace(/\/$/, "");
      url.pathname = prefix + url.pathname;
    }
    if (opts.params) {
      for (const [key, value] of new URLSearchParams(encodeForm(opts.params))) {
        url.searchParams.append(key, value);
      }
    }
    const headers = new Headers();
    for (const [key, value] of Object.entries(opts.headers ?? {})) {
      if (value !== undefined && key.toLowerCase() !== "connection") {
        headers.set(key, String(value));
      }
    }
    if (opts.username && opts.password) {
      headers.set(
        "Authorization",
        "Basic " + btoa(`${opts.username}:${opts.password}`),
      );
    } else if (opts.authStrategy) {
      headers.set("Authorization", await opts.authStrategy.getAuthString());
    }
    let body: string | undefined;
    if (opts.data) {
      body = headers.get("Content-Type") === "application/json"
        ? JSON.stringify(opts.data)
        : encodeForm(opts.data);
    }
    const response = await fetch(url, {
      method: opts.method.toUpperCase(),
      headers,
      body,
      redirect: opts.allowRedirects ? "follow" : "manual",
      signal: AbortSignal.timeout(opts.timeout ?? this.defaultTimeout),
    });
    const text = await response.text();
    const responseHeaders = Object.fromEntries(response.headers.entries());
    return {
      statusCode: response.status,
      body: text as TData,
      headers: responseHeaders,
    };
  }
}

let cached:
  | { sid: string; base: string | undefined; client: twilio.Twilio }
  | undefined;

/** The REST client: account SID with an API key (or the auth token). */
export function twilioClient(): twilio.Twilio {
  const accountSid = requireEnv("TWILIO_ACCOUNT_SID");
  const base = env("TWILIO_API_BASE");
  if (cached?.sid === accountSid && cached.base === base) return cached.client;
  const apiKey = env("TWILIO_API_KEY_SID");
  const apiSecret = env("TWILIO_API_KEY_SECRET");
  const [username, password] = apiKey !== undefined && apiSecret !== undefined
    ? [apiKey, apiSecret]
    : [accountSid, requireEnv("TWILIO_AUTH_TOKEN")];
  const client = twilio(username, password, {
    accountSid,
    httpClient: new FetchRequestClient(base),
  });
  cached = { sid: accountSid, base, client };
  return client;
}

/** A Voice access token for the browser SDK, valid `ttlSeconds`, and when it expires. */
export function voiceAccessToken(
  identity: string,
  ttlSeconds: number,
): { token: string; expiresAt: Date } {
  const token = new twilio.jwt.AccessToken(
    requireEnv("TWILIO_ACCOUNT_SID"),
    requireEnv("TWILIO_API_KEY_SID"),
    requireEnv("TWILIO_API_KEY_SECRET"),
    { identity, ttl: ttlSeconds },
  );
  token.addGrant(
    new twilio.jwt.AccessToken.VoiceGrant({
      outgoingApplicationSid: requireEnv("TWILIO_TWIML_APP_SID"),
      incomingAllow: true,
    }),
  );
  const jwt = token.toJwt();
  const exp = decodeJwt(jwt).exp ?? Math.floor(Date.now() / 1000) + ttlSeconds;
  return { token: jwt, expiresAt: new Date(exp * 1000) };
}
