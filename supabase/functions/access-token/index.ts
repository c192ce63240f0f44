/**
 * GET (or POST) /functions/v1/access-token — a Twilio Voice access token.
 *
 * `public.check_can_call()` decides, as the user, whether they may call now
 * (403 without an active number, 402 with `minRequired` when the balance is
 * short). Answers `{token, identity, expiresAt}`; identity is the user id.
 */

import { authenticate } from "../_shared/auth.ts";
import { asUser } from "../_shared/db.ts";
import { endpoint, json } from "../_shared/http.ts";
import { voiceAccessToken } from "../_shared/twilio.ts";

const TTL_SECONDS = 3600;

export const handler = endpoint(["GET", "POST"], async (req) => {
  const claims = await authenticate(req);
  await asUser(claims, async (tx) => {
    await tx`select public.check_can_call()`;
  });
  const { token, expiresAt } = voiceAccessToken(claims.sub, TTL_SECONDS);
  return json({
    token,
    identity: claims.sub,
    expiresAt: expiresAt.toISOString(),
  });
});

if (import.meta.main) Deno.serve(handler);
