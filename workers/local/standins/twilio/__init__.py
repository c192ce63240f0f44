"""A local stand-in for the parts of Twilio's 2010-04-01 REST API this project uses,
and a call player that drives a voice webhook the way Twilio does.

Endpoints (JSON, form-encoded bodies, HTTP Basic auth with the account sid and
auth token or an API key sid and secret):

- `GET  /2010-04-01/Accounts/{AccountSid}.json`
- `GET  /2010-04-01/Accounts/{AccountSid}/AvailablePhoneNumbers/{Country}/Local.json`
- `GET|POST /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json`
- `GET|POST|DELETE /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json`
- `GET  /2010-04-01/Accounts/{AccountSid}/Calls.json`, `.../Calls/{Sid}.json`
- `/_control/...` for tests (see `create_app`).

twilio-python reaches it through `workers.service.providers.make_twilio_client(..., api_base=...)`.
`play_call` (`player`) plays one call: a signed voice request, the TwiML answer
read as Twilio reads it (`<Dial timeLimit>` caps the call), the calls recorded
here so `Calls(sid).fetch()` finds them, then signed status callbacks.

Modules: `numbers`, `calls` and `store` (the account they share) make up
`standin.TwilioStandin`; `app` serves the REST API and `control` the test
controls; `player` is the call player.
"""

from workers.local.standins.twilio.app import create_app
from workers.local.standins.twilio.common import TwilioError, TwilioStandinConfig
from workers.local.standins.twilio.player import PlayedCall, parse_dial, play_call
from workers.local.standins.twilio.standin import TwilioStandin

__all__ = [
    "PlayedCall",
    "TwilioError",
    "TwilioStandin",
    "TwilioStandinConfig",
    "create_app",
    "parse_dial",
    "play_call",
]
