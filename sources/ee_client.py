"""The Earth Engine client of the ``earthengine`` imagery source: credentials from the
environment, one initialised client per process, a deadline on every HTTP call, and bounded
retries with backoff that honour ``Retry-After``.

Credentials never come from the recipe and are never logged or pickled: each process (the
driver, every Ray worker) reads them from its own environment, in this order:

1. ``EE_SERVICE_ACCOUNT_JSON``: a service account key, as a file path or the JSON itself;
2. ``GOOGLE_APPLICATION_CREDENTIALS``: a service account key, or the ``authorized_user`` file of
   ``gcloud auth application-default login``;
3. the token of ``earthengine authenticate`` (``~/.config/earthengine/credentials``).

The project is the recipe's ``project``, else ``EE_PROJECT``, else ``GOOGLE_CLOUD_PROJECT``,
else the one the credentials name.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from geoweave.errors import FatalError

T = TypeVar("T")

ENV_KEY = "EE_SERVICE_ACCOUNT_JSON"
ENV_ADC = "GOOGLE_APPLICATION_CREDENTIALS"
ENV_PROJECT = "EE_PROJECT"
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
QUOTA_WORDS = ("quota", "rate limit", "too many", "resource_exhausted")
MAX_WAIT_S = 60.0
MISSING = (
    "Earth Engine credentials not found: set EE_SERVICE_ACCOUNT_JSON (a service account key "
    "file, or its JSON) or GOOGLE_APPLICATION_CREDENTIALS, or run `earthengine authenticate`"
)


class EarthEngineError(RuntimeError):
    """A call to Earth Engine failed after its retries (the tile is rejected with this)."""


def require_ee() -> Any:
    try:
        import ee
    except ImportError:
        raise FatalError(
            "imagery type earthengine needs the earthengine-api package: pip install 'geoweave[ee]'"
        ) from None
    return ee


class DeadlineHttp:
    """An httplib2-style transport over one ``requests`` session with a timeout on every
    request, handed to ``ee.Initialize``. Unlike ``ee.data.setDeadline`` (which needs an
    initialised client) it also bounds Initialize's own discovery, algorithm list and token
    calls, so a stalled server cannot hang the build at start either."""

    def __init__(self, deadline_s: float) -> None:
        import requests

        self.deadline_s = deadline_s
        self.session = requests.Session()

    def request(
        self, uri: str, method: str = "GET", body: Any = None, headers: Any = None,
        redirections: Any = None, connection_type: Any = None,
    ) -> tuple[Any, bytes]:  # fmt: skip
        import httplib2
        import requests

        try:
            r = self.session.request(method, uri, data=body, headers=headers,
                                     timeout=self.deadline_s)  # fmt: skip
        except requests.exceptions.Timeout as e:  # before ConnectionError: ConnectTimeout is both
            raise TimeoutError(
                f"no answer from {uri.split('?')[0]} within the deadline of {self.deadline_s:g} s"
            ) from e
        except requests.exceptions.ConnectionError as e:
            raise ConnectionError(f"cannot connect to {uri.split('?')[0]}: {e}") from e
        head: dict[str, Any] = dict(r.headers)
        head["status"] = r.status_code
        return httplib2.Response(head), r.content


def _json_of(raw: str, var: str) -> dict[str, Any]:
    """The JSON object a variable holds, or names the file of; messages name the variable and
    the file, never the content."""
    text = raw
    if not raw.lstrip().startswith("{"):
        try:
            text = Path(raw).read_text()
        except OSError as e:
            raise FatalError(f"{var}: cannot read the key file {raw} ({e.strerror})") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise FatalError(f"{var}: not JSON; give a service account key file or its JSON") from None
    if not isinstance(info, dict):
        raise FatalError(f"{var}: not a service account key (a JSON object)")
    return info


def _from_info(info: dict[str, Any], var: str, scopes: list[str]) -> tuple[Any, str | None]:
    """Credentials of a service account key or, for ``GOOGLE_APPLICATION_CREDENTIALS``, of an
    ``authorized_user`` file (``gcloud auth application-default login``)."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    kind = info.get("type")
    try:
        if kind == "service_account":
            creds = service_account.Credentials.from_service_account_info(info, scopes=scopes)
            return creds, info.get("project_id")
        if kind == "authorized_user" and var == ENV_ADC:
            creds = user_credentials.Credentials.from_authorized_user_info(info, scopes=scopes)
            return creds, info.get("quota_project_id")
    except (ValueError, KeyError):
        raise FatalError(
            f"{var}: the {kind} credentials lack a field (client_email, private_key, "
            "token_uri, refresh_token) or the private key does not parse; download a new key"
        ) from None
    raise FatalError(f"{var}: not a service account key (its type is {kind!r})")


def load_credentials() -> tuple[Any, str | None, str]:
    """(credentials, the project they name, where they came from), from the environment."""
    ee = require_ee()
    from google.oauth2 import credentials as user_credentials

    for var in (ENV_KEY, ENV_ADC):
        if os.environ.get(var):
            creds, project = _from_info(_json_of(os.environ[var], var), var, ee.oauth.SCOPES)
            return creds, project, var
    token = Path(ee.oauth.get_credentials_path())
    if token.is_file():
        try:
            args = ee.oauth.get_credentials_arguments()
        except (OSError, ValueError):
            raise FatalError(f"{token}: unreadable; run `earthengine authenticate` again") from None
        if args.get("refresh_token"):
            creds = user_credentials.Credentials(None, **args)
            return creds, args.get("quota_project_id"), str(token)
    raise FatalError(MISSING)


_lock = threading.Lock()
# (pid, url, project, deadline) of this process's client -> its project
_live: dict[tuple[Any, ...], str] = {}


def connect(url: str, project: str | None, deadline_s: float) -> str:
    """Initialise the client of this process once (again after a fork, or for another URL);
    returns the project. FatalError naming what to set when credentials or project are missing
    or refused, or the server does not answer."""
    key = (os.getpid(), url, project, deadline_s)
    with _lock:
        if key in _live:
            return _live[key]
        ee = require_ee()
        creds, named, origin = load_credentials()
        chosen = (
            project
            or os.environ.get(ENV_PROJECT)
            or os.environ.get("GOOGLE_CLOUD_PROJECT")
            or named
        )
        if not chosen:
            raise FatalError(
                f"Earth Engine needs a Cloud project: set imagery[].project or {ENV_PROJECT} "
                "(a project registered for Earth Engine)"
            )
        ee.data.setMaxRetries(0)  # retries are ours: the client's ignore Retry-After
        try:
            ee.Initialize(credentials=creds, project=chosen, url=url,
                          http_transport=DeadlineHttp(deadline_s))  # fmt: skip
        except Exception as e:
            raise FatalError(_init_failure(e, url, chosen, origin)) from None
        _live.clear()  # one client per process: the one just initialised
        _live[key] = chosen
        return chosen


def _init_failure(e: Exception, url: str, project: str, origin: str) -> str:
    if is_refusal(e):
        return refused(e, project, origin)
    if isinstance(e, TimeoutError | ConnectionError) and url not in str(e):
        return f"the token endpoint of the credentials from {origin} did not answer ({describe(e)})"
    if isinstance(e, TimeoutError | ConnectionError):
        return f"Earth Engine at {url} did not answer ({describe(e)}); check imagery[].url and the network"
    return f"Earth Engine at {url} (project {project}): {describe(e)}"


def is_refusal(e: BaseException) -> bool:
    """The server refused the credentials or the project (401, 403, a refused token)."""
    return http_status(e) in (401, 403) or type(e).__name__ == "RefreshError"


def refused(e: BaseException, project: str, origin: str | None = None) -> str:
    creds = f"the credentials from {origin}" if origin else "the credentials"
    return (
        f"Earth Engine refused {creds} for project {project} ({describe(e)}): check that "
        "the account is registered for Earth Engine and the project has the Earth Engine API "
        f"enabled (set {ENV_PROJECT} or imagery[].project)"
    )


def http_status(e: BaseException) -> int | None:
    """The HTTP status of a failed call: an ``EEException`` carries the client's ``HttpError``
    on its ``__context__``."""
    for err in (e, e.__context__):
        resp = getattr(err, "resp", None)
        if resp is not None and getattr(resp, "status", None) is not None:
            return int(resp.status)
    return None


def describe(e: BaseException) -> str:
    status = http_status(e)
    text = str(e) or type(e).__name__
    return f"HTTP {status}: {text}" if status else f"{type(e).__name__}: {text}"


def retry_delay(e: BaseException, attempt: int, backoff_s: float) -> float | None:
    """Seconds to wait before the next attempt, or None when the error is not worth one (a
    bad request, a permission error): 429 / quota errors, 5xx, timeouts and connection errors
    are retried, after the server's ``Retry-After`` if it gives one, else exponential backoff
    with jitter."""
    status = http_status(e)
    quota = any(w in str(e).lower() for w in QUOTA_WORDS)
    if not (isinstance(e, TimeoutError | ConnectionError) or status in RETRY_STATUS or quota):
        return None
    resp = getattr(e.__context__, "resp", None)
    after = resp.get("retry-after") if resp is not None else None
    if after is not None:
        try:
            return min(float(after), MAX_WAIT_S)
        except ValueError:
            pass  # an HTTP date: fall back to backoff
    return min(backoff_s * 2**attempt * (0.5 + random.random() / 2), MAX_WAIT_S)


def with_retries(call: Callable[[], T], retries: int, backoff_s: float, what: str) -> T:
    """``call()``, retried on the errors ``retry_delay`` accepts; EarthEngineError after."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as e:
            wait = retry_delay(e, attempt, backoff_s)
            if wait is None or attempt == retries:
                tries = f"after {attempt + 1} attempts" if wait is not None else "not retried"
                raise EarthEngineError(f"{what}: {describe(e)} ({tries})") from e
            time.sleep(wait)
    raise AssertionError("unreachable")
