"""Who `cgd kubeflow submit|schedule` are on multi-user Kubeflow: a credential from the environment.

The full Kubeflow platform runs KFP in multi-user mode: every API call needs a
user identity (kubeflow/pipelines#7133). It never comes from a config file, and
neither its value nor a part of it goes into a log line or an error message.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from kubeflow.errors import KubeflowError

# In this order (the first one found wins):
#   1. SA_TOKEN_PATH_ENV: a ServiceAccount token file, read at every call as kfp's
#      ServiceAccountTokenVolumeCredentials reads it (kfp/client/set_volume_credentials.py:
#      the variable, else SA_TOKEN_DEFAULT_PATH, where the projected token is mounted in a
#      pod), so a token the kubelet refreshes keeps working;
#   2. TOKEN_ENV: a bearer token (kfp 2.5 reads no such variable itself: existing_token=);
#   3. COOKIE_ENV: the auth proxy's session cookie, "authservice_session=..." (Dex +
#      oidc-authservice) or "oauth2_proxy_kubeflow=..." (oauth2-proxy) (cookies=);
#   none: single-user KFP, no identity sent.
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp.client.KF_PIPELINES_SA_TOKEN_ENV
SA_TOKEN_DEFAULT_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # ...SA_TOKEN_PATH
TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIE_ENV = "KF_PIPELINES_COOKIE"
CREDENTIAL_VARIABLES = (f"{SA_TOKEN_PATH_ENV} (a ServiceAccount token file), {TOKEN_ENV} "
                        f"(a bearer token) or {COOKIE_ENV} (the auth proxy's session cookie, "
                        "e.g. authservice_session=...)")


@dataclasses.dataclass(frozen=True)
class Credential:
    """Where the identity comes from (safe to log) and the kfp.Client arguments (secret)."""
    source: str
    kwargs: dict = dataclasses.field(repr=False)


def credential_from_environment(environ: Any = None) -> Credential | None:
    """The first credential set in the environment (order above), or None (single-user).

    Errors name the variable, never its value.
    """
    environ = os.environ if environ is None else environ
    # kfp: `path or os.getenv(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH`.
    token_path = environ.get(SA_TOKEN_PATH_ENV) or SA_TOKEN_DEFAULT_PATH
    if os.path.isfile(token_path):
        from kfp.client import ServiceAccountTokenVolumeCredentials

        try:
            with open(token_path) as f:  # as kfp reads it (token_credentials_base.py)
                empty = not f.read().strip()
        except OSError as e:
            raise KubeflowError(f"{SA_TOKEN_PATH_ENV}: cannot read the token file "
                                f"{token_path}: {e.strerror}") from None
        if empty:
            raise KubeflowError(f"{SA_TOKEN_PATH_ENV}: the token file {token_path} is empty")
        return Credential(f"the ServiceAccount token file {token_path} ({SA_TOKEN_PATH_ENV})",
                          {"credentials": ServiceAccountTokenVolumeCredentials(token_path)})
    if environ.get(SA_TOKEN_PATH_ENV):
        # Named explicitly but absent: falling back to another identity would be a surprise.
        raise KubeflowError(f"{SA_TOKEN_PATH_ENV}={token_path}: no such token file (unset "
                            "it to use another credential)")
    if token := environ.get(TOKEN_ENV, "").strip():
        if token.lower().startswith("bearer "):
            raise KubeflowError(f"{TOKEN_ENV}: set the token alone, without 'Bearer ' "
                                "(kfp adds it)")
        return Credential(f"the bearer token in {TOKEN_ENV}", {"existing_token": token})
    if cookie := environ.get(COOKIE_ENV, "").strip():
        name, sep, value = cookie.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise KubeflowError(f"{COOKIE_ENV}: expected NAME=VALUE, e.g. "
                                "authservice_session=... or oauth2_proxy_kubeflow=... (the "
                                "cookie your browser holds for the Kubeflow dashboard)")
        names = ", ".join(part.partition("=")[0].strip() for part in cookie.split(";"))
        return Credential(f"the session cookie {names} in {COOKIE_ENV}", {"cookies": cookie})
    return None
