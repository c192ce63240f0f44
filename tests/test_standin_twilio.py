"""The Twilio stand-in through the real twilio-python SDK, and the call player
against a voice app that checks signatures with twilio-python's RequestValidator
and answers TwiML built with its VoiceResponse."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from workers.local.embedded_pg import free_port
from workers.local.standins.__main__ import build
from workers.local.standins.serving import StandinServer
from workers.local.standins.signing import twilio_signature
from workers.local.standins.twilio import (
    TwilioStandin,
    TwilioStandinConfig,
    create_app,
    parse_dial,
    play_call,
)
from workers.local.standins.twilio.player import deliver
from workers.service.providers import RedirectingTwilioHttpClient, make_twilio_client

ACCOUNT = "AC" + "1" * 32
TOKEN = "test-auth-token"
KEY_SID, KEY_SECRET = "SK" + "2" * 32, "key-secret"


@dataclass
class VoiceApp:
    """A voice webhook: validates `X-Twilio-Signature`, answers TwiML, logs every hit."""

    base_url: str = ""
    answer: str = "number"  # number | client | sip | refuse | no_callback
    time_limit: int | None = 120
    status_answer: int = 204  # what /twilio/call-status answers a valid callback
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    forged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()
        validator = RequestValidator(TOKEN)

        async def verified(request: Request, path: str) -> dict[str, str] | None:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            url = self.base_url + path
            if not validator.validate(url, form, request.headers.get("x-twilio-signature", "")):
                with self.lock:
                    self.forged += 1
                return None
            with self.lock:
                self.hits.append((path, form))
            return form

        @app.post("/twilio/voice")
        async def voice(request: Request) -> Response:
            form = await verified(request, "/twilio/voice")
            if form is None:
                return Response(status_code=403)
            response = VoiceResponse()
            if self.answer == "refuse":
                response.say("Your balance is too low.")
                response.hangup()
                return Response(str(response), media_type="application/xml")
            kwargs: dict[str, Any] = {"caller_id": "+14155550100"}
            if self.time_limit is not None:
                kwargs["time_limit"] = self.time_limit
            dial = Dial(**kwargs)
            callback = {
                "status_callback": "/twilio/call-status",
                "status_callback_event": "completed",
            }
            if self.answer == "number":
                dial.number(form.get("To", "+15551234567"), **callback)
            elif self.answer == "client":
                dial.client(form["To"], **callback)
            elif self.answer == "sip":
                dial.sip("sip:agent@example.com", **callback)
            else:
                dial.number("+15551234567")
            response.append(dial)
            response.hangup()
            return Response(str(response), media_type="application/xml")

        @app.post("/twilio/call-status")
        async def status(request: Request) -> Response:
            form = await verified(request, "/twilio/call-status")
            return Response(status_code=self.status_answer if form is not None else 403)

        return app

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.hits]

    def callbacks(self) -> list[dict[str, str]]:
        with self.lock:
            return [form for path, form in self.hits if path == "/twilio/call-status"]


@dataclass
class Env:
    standin: TwilioStandin
    base_url: str
    client: Client
    voice: VoiceApp

    @property
    def voice_url(self) -> str:
        return self.voice.base_url + "/twilio/voice"

    def play(self, answered_seconds: int = 300, **kwargs: Any) -> Any:
        params = kwargs.pop("params", {"From": "client:user-1", "To": "+15551234567"})
        return play_call(
            voice_url=self.voice_url,
            auth_token=TOKEN,
            params=params,
            answered_seconds=answered_seconds,
            standin=kwargs.pop("standin", self.standin),
            **kwargs,
        )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[TwilioStandin, str, VoiceApp]]:
    standin = TwilioStandin(
        TwilioStandinConfig(account_sid=ACCOUNT, auth_token=TOKEN, api_keys={KEY_SID: KEY_SECRET})
    )
    voice = VoiceApp()
    with StandinServer(create_app(standin)) as api, StandinServer(voice.app()) as voice_server:
        voice.base_url = voice_server.base_url
        yield standin, api.base_url, voice


@pytest.fixture
def env(servers: tuple[TwilioStandin, str, VoiceApp]) -> Env:
    standin, base_url, voice = servers
    standin.reset()
    voice.hits.clear()
    voice.forged = 0
    voice.answer, voice.time_limit, voice.status_answer = "number", 120, 204
    return Env(standin, base_url, make_twilio_client(ACCOUNT, TOKEN, base_url), voice)


# -- the client hook -------------------------------------------------------


def test_twilio_hosts_are_rewritten_to_the_stand_in() -> None:
    http = RedirectingTwilioHttpClient("http://127.0.0.1:9999/prefix")
    assert (
        http.rewrite("https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json?PageSize=1")
        == "http://127.0.0.1:9999/prefix/2010-04-01/Accounts/AC1/Calls.json?PageSize=1"
    )
    assert http.rewrite("https://api.dublin.ie1.twilio.com/x") == "http://127.0.0.1:9999/prefix/x"
    assert http.rewrite("https://example.com/x") == "https://example.com/x"
    with pytest.raises(ValueError):
        RedirectingTwilioHttpClient("127.0.0.1:9999")


def test_signature_matches_twilio_python() -> None:
    params = {"CallSid": "CA1", "From": "+1415", "To": "client:x", "Digits": "1 2"}
    url = "https://example.com/twilio/voice?x=1"
    assert twilio_signature(url, params, TOKEN) == RequestValidator(TOKEN).compute_signature(
        url, params
    )


# -- REST API through the SDK ----------------------------------------------


def test_auth_is_checked_like_twilio(env: Env) -> None:
    with pytest.raises(TwilioRestException) as err:
        make_twilio_client(ACCOUNT, "wrong", env.base_url).api.v2010.accounts(ACCOUNT).fetch()
    assert (err.value.status, err.value.code) == (401, 20003)
    raw = httpx.get(f"{env.base_url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
    assert raw.status_code == 401 and raw.json()["more_info"].endswith("/20003")
    with_key = make_twilio_client(ACCOUNT, KEY_SECRET, env.base_url, username=KEY_SID)
    assert with_key.api.v2010.accounts(ACCOUNT).fetch().status == "active"
    other = make_twilio_client("AC" + "9" * 32, TOKEN, env.base_url)
    # A page that fails raises the SDK's generic TwilioException carrying the response.
    with pytest.raises(TwilioException) as page_err:
        other.calls.list()
    assert page_err.value.args[1].status_code == 401


def test_available_numbers_search(env: Env) -> None:
    found = env.client.available_phone_numbers("US").local.list(area_code="212", limit=5)
    assert [n.phone_number for n in found] == [f"+12125550{i}" for i in range(100, 105)]
    assert found[0].friendly_name == "(212) 555-0100" and found[0].capabilities["voice"]
    again = env.client.available_phone_numbers("US").local.list(area_code="212", limit=5)
    assert [n.phone_number for n in again] == [n.phone_number for n in found]
    contains = env.client.available_phone_numbers("US").local.list(
        area_code="415", contains="555*777", limit=2
    )
    assert [n.phone_number for n in contains] == ["+14155550777", "+14155551777"]
    with pytest.raises(TwilioException) as err:
        env.client.available_phone_numbers("US").local.list(area_code="0", limit=1)
    assert err.value.args[1].status_code == 400


def test_buy_list_update_release_numbers(env: Env) -> None:
    number = env.client.available_phone_numbers("US").local.list(area_code="646", limit=1)[0]
    bought = env.client.incoming_phone_numbers.create(
        phone_number=number.phone_number,
        voice_url="https://worker.example/twilio/voice",
        voice_method="POST",
        status_callback="https://worker.example/twilio/call-status",
        status_callback_method="POST",
        friendly_name="user-1",
    )
    assert bought.sid.startswith("PN") and len(bought.sid) == 34
    assert bought.phone_number == "+16465550100" and bought.friendly_name == "user-1"
    assert bought.voice_url == "https://worker.example/twilio/voice"
    assert bought.uri == f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{bought.sid}.json"
    assert bought.date_created is not None and bought.date_created.tzinfo is not None
    # Owned numbers leave the search and cannot be bought twice.
    next_free = env.client.available_phone_numbers("US").local.list(area_code="646", limit=1)
    assert next_free[0].phone_number == "+16465550101"
    with pytest.raises(TwilioRestException) as err:
        env.client.incoming_phone_numbers.create(phone_number=number.phone_number)
    assert (err.value.status, err.value.code) == (400, 21422)

    by_area = env.client.incoming_phone_numbers.create(area_code="646", voice_url="https://w/v")
    assert by_area.phone_number == "+16465550101"
    assert {n.sid for n in env.client.incoming_phone_numbers.list()} == {bought.sid, by_area.sid}
    listed = env.client.incoming_phone_numbers.list(phone_number="+16465550101")
    assert [n.sid for n in listed] == [by_area.sid]

    updated = env.client.incoming_phone_numbers(bought.sid).update(voice_url="https://w2/v")
    assert updated.voice_url == "https://w2/v"
    assert env.client.incoming_phone_numbers(bought.sid).fetch().voice_url == "https://w2/v"

    assert env.client.incoming_phone_numbers(bought.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        env.client.incoming_phone_numbers(bought.sid).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException):
        env.client.incoming_phone_numbers(bought.sid).delete()
    assert [n["sid"] for n in env.standin.state()["released"]] == [bought.sid]


def test_injected_failures(env: Env) -> None:
    httpx.post(f"{env.base_url}/_control/faults", json={"kind": "purchase", "count": 1})
    with pytest.raises(TwilioRestException) as err:
        env.client.incoming_phone_numbers.create(area_code="415")
    assert err.value.status == 500
    assert env.client.incoming_phone_numbers.list() == []
    httpx.post(f"{env.base_url}/_control/faults", json={"kind": "purchase", "status": 400})
    with pytest.raises(TwilioRestException) as err:
        env.client.incoming_phone_numbers.create(area_code="415")
    assert err.value.code == 21422
    bought = env.client.incoming_phone_numbers.create(area_code="415")
    env.standin.add_fault("release", count=2)
    for _ in range(2):
        with pytest.raises(TwilioRestException):
            env.client.incoming_phone_numbers(bought.sid).delete()
    assert env.client.incoming_phone_numbers(bought.sid).delete() is True
    bad = httpx.post(f"{env.base_url}/_control/faults", json={"kind": "nonsense"})
    assert bad.status_code == 400
    kinds = [r["kind"] for r in httpx.get(f"{env.base_url}/_control/requests").json()]
    assert kinds.count("release") == 3


def test_calls_fetch_and_list(env: Env) -> None:
    parent = env.standin.record_call(
        from_="client:u", to="+15551234567", status="completed", duration=61
    )
    child = env.standin.record_call(
        to="+15551234567",
        status="completed",
        duration=60,
        direction="outbound-dial",
        parent_call_sid=parent["sid"],
    )
    live = env.standin.record_call(status="in-progress")
    fetched = env.client.calls(child["sid"]).fetch()
    assert (fetched.status, fetched.duration, fetched.parent_call_sid) == (
        "completed",
        "60",
        parent["sid"],
    )
    assert fetched.direction == "outbound-dial"
    assert fetched.start_time is not None and fetched.end_time is not None
    assert (fetched.end_time - fetched.start_time).total_seconds() == 60
    assert env.client.calls(live["sid"]).fetch().duration is None
    assert len(env.client.calls.list()) == 3
    assert [c.sid for c in env.client.calls.list(parent_call_sid=parent["sid"])] == [child["sid"]]
    assert len(env.client.calls.list(status="completed", page_size=1)) == 2
    with pytest.raises(TwilioRestException) as err:
        env.client.calls("CA" + "f" * 32).fetch()
    assert (err.value.status, err.value.code) == (404, 20404)


# -- the call player -------------------------------------------------------


def test_time_limit_caps_the_call_and_callback_is_signed(env: Env) -> None:
    played = env.play(answered_seconds=300)
    assert not played.refused and played.voice_status == 200
    assert (played.time_limit, played.duration) == (120, 120)
    assert played.caller_id == "+14155550100" and played.dial_target == "+15551234567"
    assert played.callback_url == env.voice.base_url + "/twilio/call-status"
    assert played.callback_statuses == [204]
    assert env.voice.forged == 0
    voice_form, callback = env.voice.hits[0][1], env.voice.callbacks()[0]
    assert voice_form["CallStatus"] == "ringing" and voice_form["AccountSid"] == ACCOUNT
    assert voice_form["From"] == "client:user-1" and voice_form["CallSid"] == played.call_sid
    assert callback["CallSid"] == played.child_sid
    assert callback["ParentCallSid"] == played.call_sid
    assert (callback["CallStatus"], callback["CallDuration"]) == ("completed", "120")

    child = env.client.calls(played.child_sid).fetch()
    assert (child.duration, child.parent_call_sid, child.to) == (
        "120",
        played.call_sid,
        "+15551234567",
    )
    parent = env.client.calls(played.call_sid).fetch()
    assert parent.status == "completed" and parent._from == "client:user-1"


def test_short_call_bills_what_was_used(env: Env) -> None:
    played = env.play(answered_seconds=45)
    assert played.duration == 45
    assert env.voice.callbacks()[0]["CallDuration"] == "45"


def test_refused_call_gets_no_callback(env: Env) -> None:
    env.voice.answer = "refuse"
    played = env.play()
    assert played.refused and played.dial is None and "<Say>" in played.twiml
    assert env.voice.paths() == ["/twilio/voice"]
    assert env.client.calls(played.call_sid).fetch().status == "completed"


def test_duplicate_callbacks_arrive_concurrently(env: Env) -> None:
    played = env.play(duplicate_callbacks=5)
    assert played.callback_statuses == [204] * 5
    assert {cb["CallSid"] for cb in env.voice.callbacks()} == {played.child_sid}
    assert len(env.voice.callbacks()) == 5


def test_dropped_callback_leaves_the_call_in_the_api(env: Env) -> None:
    played = env.play(answered_seconds=90, drop_callbacks=True)
    assert played.callback_statuses == [] and env.voice.callbacks() == []
    assert env.client.calls(played.child_sid).fetch().duration == "90"


def test_callback_before_voice(env: Env) -> None:
    status_url = env.voice.base_url + "/twilio/call-status"
    played = env.play(answered_seconds=30, status_url=status_url, callbacks_before_voice=True)
    assert env.voice.paths() == ["/twilio/call-status", "/twilio/voice", "/twilio/call-status"]
    assert env.voice.callbacks()[0]["ParentCallSid"] == played.call_sid
    assert "ParentCallSid" not in env.voice.callbacks()[1]
    assert env.voice.callbacks()[0]["CallSid"] == played.child_sid
    assert played.duration == 30


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed", "canceled"])
def test_unanswered_outcomes_report_zero_seconds(env: Env, outcome: str) -> None:
    played = env.play(dial_outcome=outcome)
    assert played.duration == 0
    callback = env.voice.callbacks()[0]
    assert (callback["CallStatus"], callback["CallDuration"]) == (outcome, "0")
    assert env.client.calls(played.child_sid).fetch().status == outcome


def test_client_and_sip_nouns_and_default_limit(env: Env) -> None:
    env.voice.answer, env.voice.time_limit = "client", None
    played = env.play(answered_seconds=20000, params={"From": "+15550001111", "To": "agent"})
    assert (played.dial.noun, played.dial_target) == ("Client", "agent")
    assert played.time_limit == 14400 and played.duration == 14400
    env.voice.answer, env.voice.time_limit = "sip", 60
    played = env.play(answered_seconds=75)
    assert played.dial_target == "sip:agent@example.com" and played.duration == 60
    assert len(env.voice.callbacks()) == 2


def test_status_url_used_when_the_noun_has_none(env: Env) -> None:
    env.voice.answer = "no_callback"
    without = env.play()
    assert without.callback_url is None and env.voice.callbacks() == []
    with_url = env.play(status_url=env.voice.base_url + "/twilio/call-status")
    assert with_url.callback_statuses == [204]
    assert env.voice.callbacks()[0]["ParentCallSid"] == with_url.call_sid


def test_wrong_token_is_refused_by_the_app(env: Env) -> None:
    played = play_call(
        voice_url=env.voice_url,
        auth_token="not-the-token",
        params={"From": "client:u", "To": "+15551234567"},
        answered_seconds=10,
        standin=env.standin,
    )
    assert played.voice_status == 403 and played.refused
    assert env.voice.forged == 1


def test_calls_recorded_through_a_stand_in_url(env: Env) -> None:
    played = env.play(answered_seconds=33, standin=env.base_url, account_sid=ACCOUNT)
    assert env.client.calls(played.child_sid).fetch().duration == "33"


def test_parse_dial_reads_twilios_defaults() -> None:
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Dial timeLimit="99999" action="/after">+15551112222</Dial><Hangup/></Response>'
    )
    dial = parse_dial(twiml)
    assert dial is not None
    assert (dial.time_limit, dial.noun, dial.target, dial.action) == (
        14400,
        "text",
        "+15551112222",
        "/after",
    )
    assert parse_dial("<Response><Say>No</Say><Hangup/></Response>") is None


def test_command_line_builds_the_stand_in() -> None:
    server = build(["twilio", "--port", "0", "--account-sid", ACCOUNT, "--auth-token", TOKEN])
    with server:
        client = make_twilio_client(ACCOUNT, TOKEN, server.base_url)
        assert client.available_phone_numbers("US").local.list(area_code="305", limit=1)


# -- what Twilio does not do: redeliver, dial without a child, sell abroad freely ----------


def test_a_callback_answered_503_is_not_sent_again(env: Env) -> None:
    env.voice.status_answer = 503
    status_url = env.voice.base_url + "/twilio/call-status"
    played = env.play(answered_seconds=61, ring_seconds=9, status_url=status_url)
    assert played.callback_statuses == [503] and played.parent_callback_status == 503
    sids = [cb["CallSid"] for cb in env.voice.callbacks()]
    assert sorted(sids) == sorted([played.child_sid, played.call_sid])  # each sent once


def test_a_connection_failure_is_retried_once_within_15_seconds() -> None:
    url = f"http://127.0.0.1:{free_port()}/twilio/call-status"  # nothing listens there
    with httpx.Client() as client:
        delivery = deliver(client, url, {"CallSid": "CA" + "3" * 32}, TOKEN)
    assert (delivery.status, delivery.attempts) == (None, 2)


def test_a_dial_that_fails_creates_no_child_leg(env: Env) -> None:
    status_url = env.voice.base_url + "/twilio/call-status"
    played = env.play(
        answered_seconds=120,
        ring_seconds=10,
        pre_dial_seconds=5,
        dial_error=13214,
        status_url=status_url,
    )
    assert not played.refused and played.child_sid is None
    assert (played.dial_outcome, played.duration, played.parent_duration) == ("failed", 0, 15)
    assert played.callback_statuses == [] and played.parent_callback_status == 204
    [parent_callback] = env.voice.callbacks()
    assert "ParentCallSid" not in parent_callback
    assert (parent_callback["CallSid"], parent_callback["CallDuration"]) == (played.call_sid, "15")
    assert env.client.calls.list(parent_call_sid=played.call_sid) == []
    parent = env.client.calls(played.call_sid).fetch()
    assert (parent.status, parent.duration) == ("completed", "15")


def test_numbers_abroad_need_an_address(env: Env) -> None:
    [found] = env.client.available_phone_numbers("GB").local.list(limit=1)
    assert (found.iso_country, found.address_requirements) == ("GB", "any")
    with pytest.raises(TwilioRestException) as err:
        env.client.incoming_phone_numbers.create(phone_number=found.phone_number)
    assert (err.value.status, err.value.code) == (400, 21631)
    assert env.client.incoming_phone_numbers.list() == []
    bought = env.client.incoming_phone_numbers.create(
        phone_number=found.phone_number, address_sid="AD" + "4" * 32
    )
    assert (bought.address_requirements, bought.address_sid) == ("any", "AD" + "4" * 32)
