/**
 * POST /functions/v1/buy-number — buy a Twilio number for the signed-in user.
 *
 * Body `{phoneNumber?, areaCode?, country?}` (country: ISO code, US by
 * default). `billing.check_number_purchase` refuses a country the plan sells
 * no numbers in (403), a named number outside that country (400), a plan
 * without numbers (403) or a short balance (402) before Twilio is asked
 * anything. Without a named number, Twilio is
 * searched and `billing.numbers_not_held` drops the candidates an account
 * already holds. Each candidate in turn, two-phase: `billing.reserve_number`
 * decides whether that number is free or charged (or answers 402), then
 * Twilio sells it, then `billing.confirm_number`. When Twilio fails,
 * `billing.cancel_number` gives the charge back: nobody pays for a number they
 * did not get; a candidate taken meanwhile (409 in the database, 21422 at
 * Twilio) moves on to the next. Answers `{phoneNumber, sid, isFree, charged}`.
 */

import { authenticate } from "../_shared/auth.ts";
import { asService, single } from "../_shared/db.ts";
import { requireEnv } from "../_shared/env.ts";
import {
  fromDatabaseError,
  HttpError,
  providerError,
} from "../_shared/errors.ts";
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
/** How many numbers a search asks Twilio for. */
const SEARCH_SIZE = 10;

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

/** A `PT409` from the database: another account holds the number. */
function heldInDatabase(err: unknown): boolean {
  const failure = fromDatabaseError(err);
  return failure !== null && failure.status === 409;
}

/** The named number, or the numbers Twilio offers for the area code or country. */
async function candidatesFor(request: BuyRequest): Promise<string[]> {
  if (request.phoneNumber !== undefined) return [request.phoneNumber];
  let found: { phoneNumber: string }[];
  try {
    found = await twilioClient().availablePhoneNumbers(request.country).local
      .list({
        areaCode: request.areaCode === undefined
          ? undefined
          : Number(request.areaCode),
        voiceEnabled: true,
        limit: SEARCH_SIZE,
      });
  } catch (err) {
    throw providerError("Twilio", err);
  }
  if (found.length === 0) throw noneAvailable(request);
  return found.map((number) => number.phoneNumber);
}

function noneAvailable(request: BuyRequest): HttpError {
  return new HttpError(
    404,
    request.areaCode === undefined
      ? `No phone numbers are available in ${request.country}.`
      : `No phone numbers are available in area code ${request.areaCode}.`,
    { field: request.areaCode === undefined ? "country" : "areaCode" },
  );
}

/** Of the candidates, those no account holds (decided by `billing.numbers_not_held`). */
async function notHeld(candidates: string[]): Promise<string[]> {
  return await asService(async (tx) =>
    single<string[]>(
      await tx`select billing.numbers_not_held(${candidates}::text[]) as result`,
    )
  );
}

async function buyAtTwilio(phoneNumber: string): Promise<Bought> {
  const bought = await twilioClient().incomingPhoneNumbers.create({
    phoneNumber,
    ...callbackUrls(),
    voiceMethod: "POST",
    statusCallbackMethod: "POST",
  });
  return { sid: bought.sid, phoneNumber: bought.phoneNumber };
}

async function releaseAtTwilio(sid: string): Promise<void> {
  try {
    await twilioClient().incomingPhoneNumbers(sid).remove();
  } catch (err) {
    console.error(`could not release number ${sid} at Twilio:`, err);
  }
}

/**
 * Reserve, buy and confirm one candidate. Null when the candidate turned out
 * to be taken (in the database or at Twilio) and the next one may be tried.
 */
async function purchase(
  userId: string,
  phoneNumber: string,
  last: boolean,
): Promise<{ reservation: Reservation; bought: Bought } | null> {
  let reservation: Reservation;
  try {
    reservation = await reserve(userId, phoneNumber);
  } catch (err) {
    if (heldInDatabase(err) && !last) return null;
    throw err;
  }

  let bought: Bought;
  try {
    bought = await buyAtTwilio(phoneNumber);
  } catch (err) {
    const taken = numberTaken(err);
    const failure = taken && last
      ? new HttpError(409, "This phone number is no longer available.")
      : providerError("Twilio", err);
    await cancel(
      reservation.purchaseId,
      taken ? "taken at Twilio" : failure.log ?? failure.message,
    );
    if (taken && !last) return null;
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
  return { reservation, bought };
}

export const handler = endpoint(["POST"], async (req) => {
  const claims = await authenticate(req);
  const request = parseRequest(await readJsonObject(req));
  callbackUrls(); // refuse before charging when the callbacks are not configured

  // Refused (400, 403, 402) before Twilio is asked anything.
  await asService(async (tx) => {
    await tx`select billing.check_number_purchase(${claims.sub}::uuid, ${request.country}, ${
      request.phoneNumber ?? null
    })`;
  });
  // A named number goes to reserve_number as it is (it answers 409 when held);
  // searched ones are first filtered, so a held number is never bought at Twilio.
  const searched = await candidatesFor(request);
  const candidates = request.phoneNumber === undefined
    ? await notHeld(searched)
    : searched;
  if (candidates.length === 0) {
    throw new HttpError(
      409,
      "Every number found is already taken; try again or another area code.",
      { field: request.areaCode === undefined ? "country" : "areaCode" },
    );
  }
  for (const [index, phoneNumber] of candidates.entries()) {
    const done = await purchase(
      claims.sub,
      phoneNumber,
      index === candidates.length - 1,
    );
    if (done === null) continue;
    return json({
      phoneNumber: done.bought.phoneNumber,
      sid: done.bought.sid,
      isFree: done.reservation.isFree,
      charged: done.reservation.charged,
    });
  }
  throw new Error("no candidate number was tried");
});

if (import.meta.main) Deno.serve(handler);
