"""Phone numbers: `AvailablePhoneNumbers` and `IncomingPhoneNumbers`."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from workers.local.standins.twilio.common import (
    API_VERSION,
    Obj,
    TwilioError,
    _formatted,
    _not_found,
    new_sid,
    rfc2822,
)
from workers.local.standins.twilio.store import TwilioStore

# Countries outside the US and Canada the stand-in sells numbers in: the E.164
# prefix of its numbers, their address requirement, their locality. As at Twilio,
# such a number costs more than a US one and often needs an Address (or a
# regulatory Bundle) to be bought: without `AddressSid` the purchase answers 21631
# (https://www.twilio.com/docs/api/errors/21631; `address_requirements` is
# `none`, `any`, `local` or `foreign`,
# https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource).
FOREIGN: dict[str, tuple[str, str, str]] = {"GB": ("+44207946", "any", "London")}


class Numbers(TwilioStore):
    """Available and incoming phone numbers: searched, bought, updated, released."""

    # -- numbers ----------------------------------------------------------

    def _owned(self) -> set[str]:
        return {n["phone_number"] for n in self.numbers.values()}

    def available_numbers(
        self, country: str, area_code: str | None, contains: str | None, page_size: int
    ) -> list[Obj]:
        """Deterministic +1 numbers `+1{area}555{0100..9999}` not already owned; in GB,
        London numbers `+44207946{0000..0999}` that need an address (`FOREIGN`)."""
        if country.upper() in FOREIGN:
            return self._foreign_numbers(country.upper(), page_size)
        if country.upper() not in ("US", "CA"):
            return []
        area = area_code or self.config.default_area_code
        if not re.fullmatch(r"[2-9]\d\d", area):
            raise TwilioError(400, 21452, f"AreaCode {area} is not valid")
        pattern = None
        if contains:
            pattern = re.compile(
                re.escape(re.sub(r"[^\d*]", "", contains.lstrip("+"))).replace(r"\*", r"\d")
            )
        owned = self._owned()
        found: list[Obj] = []
        for n in range(100, 10000):
            number = f"+1{area}555{n:04d}"
            if number in owned or (pattern and not pattern.search(number[1:])):
                continue
            found.append(
                {
                    "address_requirements": "none",
                    "beta": False,
                    "capabilities": {"MMS": True, "SMS": True, "voice": True, "fax": False},
                    "friendly_name": _formatted(number),
                    "iso_country": country.upper(),
                    "lata": "722",
                    "latitude": "37.780000",
                    "locality": "San Francisco",
                    "longitude": "-122.420000",
                    "phone_number": number,
                    "postal_code": "94103",
                    "rate_center": "SNFC CA",
                    "region": "CA",
                }
            )
            if len(found) >= page_size:
                break
        return found

    def _foreign_numbers(self, country: str, page_size: int) -> list[Obj]:
        prefix, requirement, locality = FOREIGN[country]
        owned = self._owned()
        found: list[Obj] = []
        for n in range(1000):
            number = f"{prefix}{n:04d}"
            if number in owned:
                continue
            found.append(
                {
                    "address_requirements": requirement,
                    "beta": False,
                    "capabilities": {"MMS": False, "SMS": False, "voice": True, "fax": False},
                    "friendly_name": number,
                    "iso_country": country,
                    "lata": None,
                    "latitude": None,
                    "locality": locality,
                    "longitude": None,
                    "phone_number": number,
                    "postal_code": None,
                    "rate_center": None,
                    "region": None,
                }
            )
            if len(found) >= page_size:
                break
        return found

    @staticmethod
    def _address_requirement(number: str) -> str:
        for prefix, requirement, _locality in FOREIGN.values():
            if number.startswith(prefix):
                return requirement
        return "none"

    def buy_number(self, params: Mapping[str, str]) -> Obj:
        with self.lock:
            number = params.get("PhoneNumber")
            if not number and params.get("AreaCode"):
                available = self.available_numbers("US", params["AreaCode"], None, 1)
                if not available:
                    raise TwilioError(400, 21452, "No phone numbers found in area code")
                number = available[0]["phone_number"]
            if not number:
                raise TwilioError(
                    400, 21450, "Phone number or area code is required (PhoneNumber, AreaCode)"
                )
            if not re.fullmatch(r"\+\d{8,15}", number):
                raise TwilioError(400, 21421, f"PhoneNumber {number} is invalid")
            if number in self._owned():
                raise TwilioError(400, 21422, f"PhoneNumber {number} requested is not available")
            requirement = self._address_requirement(number)
            if requirement != "none" and not (params.get("AddressSid") or params.get("BundleSid")):
                raise TwilioError(400, 21631, "Phone Number Requires an Address")
            sid = new_sid("PN")
            now = rfc2822()
            uri = f"{self._base()}/IncomingPhoneNumbers/{sid}.json"
            record: Obj = {
                "account_sid": self.account_sid,
                "address_requirements": requirement,
                "address_sid": params.get("AddressSid"),
                "api_version": API_VERSION,
                "beta": False,
                "bundle_sid": params.get("BundleSid"),
                "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
                "date_created": now,
                "date_updated": now,
                "emergency_address_sid": None,
                "emergency_address_status": "unregistered",
                "emergency_status": "Active",
                "friendly_name": params.get("FriendlyName") or _formatted(number),
                "identity_sid": None,
                "origin": "twilio",
                "phone_number": number,
                "sid": sid,
                "sms_application_sid": "",
                "sms_fallback_method": "POST",
                "sms_fallback_url": "",
                "sms_method": "POST",
                "sms_url": params.get("SmsUrl", ""),
                "status": "in-use",
                "status_callback": params.get("StatusCallback", ""),
                "status_callback_method": params.get("StatusCallbackMethod", "POST"),
                "subresource_uris": {
                    "assigned_add_ons": uri.replace(".json", "/AssignedAddOns.json"),
                },
                "trunk_sid": None,
                "type": "local",
                "uri": uri,
                "voice_application_sid": params.get("VoiceApplicationSid"),
                "voice_caller_id_lookup": False,
                "voice_fallback_method": "POST",
                "voice_fallback_url": params.get("VoiceFallbackUrl"),
                "voice_method": params.get("VoiceMethod", "POST"),
                "voice_receive_mode": "voice",
                "voice_url": params.get("VoiceUrl"),
            }
            self.numbers[sid] = record
            return copy.deepcopy(record)

    def number(self, sid: str) -> Obj:
        with self.lock:
            record = self.numbers.get(sid)
            if record is None:
                raise _not_found(f"{self._base()}/IncomingPhoneNumbers/{sid}.json")
            return record

    def update_number(self, sid: str, params: Mapping[str, str]) -> Obj:
        fields = {
            "FriendlyName": "friendly_name",
            "VoiceUrl": "voice_url",
            "VoiceMethod": "voice_method",
            "StatusCallback": "status_callback",
            "StatusCallbackMethod": "status_callback_method",
            "VoiceApplicationSid": "voice_application_sid",
            "VoiceFallbackUrl": "voice_fallback_url",
        }
        with self.lock:
            record = self.number(sid)
            for name, key in fields.items():
                if name in params:
                    record[key] = params[name]
            record["date_updated"] = rfc2822()
            return copy.deepcopy(record)

    def release_number(self, sid: str) -> None:
        with self.lock:
            record = self.number(sid)
            del self.numbers[sid]
            self.released.append(record)

    # -- calls ------------------------------------------------------------
