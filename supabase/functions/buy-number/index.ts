/**
 * POST /functions/v1/buy-number — buy a Twilio number for the signed-in user.
 *
 * Body `{phoneNumber?, areaCode?, country?}`. Two-phase: `billing.reserve_number`
 * decides whether the number is free or charged (or answers 402), then Twilio
 * sells it, then `billing.confirm_number`. When Twilio fails,
 * `billing.cancel_number` gives the charge back: nobody pays for a number they
 * did not get. Answers `{phoneNumber, sid, isFree, charged}`.
 */

import { authenticate } from "../_shared/auth.ts";
import { asService, single } from "../_shared/db.ts";
import { requireEnv } from "../_shared/env.ts";
import { HttpError, providerError } from "../_shared/errors.ts";
import {
  badField,
  endpoint,
  json,
  type JsonObject,
  onlyFields,
  optionalString,
  readJsonObject,
} from "../_shared/http.ts";
import { twilioClient } from "../_shared/twilio.ts";

const E164 = /^\+[1-9]\d{6,14}$/;

interface BuyRequest {
  phoneNumber?: string;
  areaCode?: string;
  country: string;
}

/** What `billing.reserve_number` answers. */
interface Reservation {
  purchaseId: string;
  isFree: boolean;
  charged: number;
}

interface Bought {
  sid: string;
  phoneNumber: string;
}

function parseRequest(body: JsonObject): BuyRequest {
  onlyFields(body, ["phoneNumber", "areaCode", "country"]);
  const phoneNumber = optionalString(body, "phoneNumber")?.trim();
  if (phoneNumber !== undefined && !E164.test(phoneNumber)) {
    throw badField(
      "phoneNumber",
      "`phoneNumber` must be in E.164 format, such as +14155550123.",
    );
  }
  const areaCode = optionalString(body, "areaCode")?.trim();
  if (areaCode !== undefined && !/^\d{3}$/.test(areaCode)) {
    throw badField("areaCode", "`areaCode` must be three digits, such as 415.");
  }
  const country = (optionalString(body, "country")?.trim() ?? "US")
    .toUpperCase();
  if (!/^[A-Z]{2}$/.test(country)) {
    throw badField(
      "country",
      "`country` must be a two-letter ISO country code, such as US.",
    );
  }
  return { phoneNumber, areaCode, country };
}

function callbackUrls(): { voiceUrl: string; statusCallback: string } {
  const base = requireEnv("PUBLIC_URL").replace(/\/+$/, "");
  return {
    voiceUrl: `${base}/twilio/voice`,
    statusCallback: `${base}/twilio/call-status`,
  };
}

async function reserve(
  userId: string,
  phoneNumber: string | undefined,
): Promise<Reservation> {
  return await asService(async (tx) =>
    single<Reservation>(
      await tx`select billing.reserve_number(${userId}::uuid, ${
        phoneNumber ?? null
      }) as result`,
    )
  );
}

async function cancel(purchaseId: string, reason: string): Promise<void> {
  try {
    await asService(async (tx) => {
      await tx`select billing.cancel_number(${purchaseId}::uuid, ${
        reason.slice(0, 500)
      })`;
    });
  } catch (err) {
    console.error(`could not cancel number purchase ${purchaseId}:`, err);
  }
}

/** Twilio's "this number is not available" (someone else just bought it). */
function numberTaken(err: unknown): boolean {
  return typeof err === "object" && err !== null &&
    (err as { code?: unknown }).code === 21422;
}

/**
 * Search (when no number was named) and buy at Twilio. A searched number that
 * another buyer takes first is skipped for the next candidate.
 */
async function buyAtTwilio(request: BuyRequest): Promise<Bought> {
  const client = twilioClient();
  let candidates: string[];
  if (request.phoneNumber !== undefined) {
    candidates = [request.phoneNumber];
  } else {
    const found = await client.availablePhoneNumbers(request.country).local
      .list({
        areaCode: request.areaCode === undefined
          ? undefined
          : Number(request.areaCode),
        voiceEnabled: true,
        limit: 5,
      });
    if (found.length === 0) {
      throw new HttpError(
        404,
        request.areaCode === undefined
          ? `No phone numbers are available in ${request.country}.`
          : `No phone numbers are available in area code ${request.areaCode}.`,
        { field: request.areaCode === undefined ? "country" : "areaCode" },
      );
    }
    candidates = found.map((number) => number.phoneNumber);
  }
  for (const [index, phoneNumber] of candidates.entries()) {
    try {
      const bought = await client.incomingPhoneNumbers.create({
        phoneNumber,
        ...callbackUrls(),
        voiceMethod: "POST",
        statusCallbackMethod: "POST",
      });
      return { sid: bought.sid, phoneNumber: bought.phoneNumber };
    } catch (err) {
      if (!numberTaken(err) || index === candidates.length - 1) throw err;
    }
  }
  throw new Error("no candidate number");
}

async function releaseAtTwilio(sid: string): Promise<void> {
  try {
    await twilioClient().incomingPhoneNumbers(sid).remove();
  } catch (err) {
    console.error(`could not release number ${sid} at Twilio:`, err);
  }
}

export const handler = endpoint(["POST"], async (req) => {
  const claims = await authenticate(req);
  const request = parseRequest(await readJsonObject(req));
  callbackUrls(); // refuse before charging when the callbacks are not configured
  const reservation = await reserve(claims.sub, request.phoneNumber);

  let bought: Bought;
  try {
    bought = await buyAtTwilio(request);
  } catch (err) {
    const failure = err instanceof HttpError && err.status < 500
      ? err
      : providerError("Twilio", err);
    await cancel(reservation.purchaseId, failure.log ?? failure.message);
    throw failure;
  }

  try {
    await asService(async (tx) => {
      await tx`select billing.confirm_number(${reservation.purchaseId}::uuid, ${bought.sid}, ${bought.phoneNumber})`;
    });
  } catch (err) {
    await releaseAtTwilio(bought.sid);
    await cancel(reservation.purchaseId, "the purchase could not be recorded");
    throw err;
  }

  return json({
    phoneNumber: bought.phoneNumber,
    sid: bought.sid,
    isFree: reservation.isFree,
    charged: reservation.charged,
  });
});

if (import.meta.main) Deno.serve(handler);
