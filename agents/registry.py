"""MLflow registry look-ups of policies: the version a ``models:/`` reference names now.

One place for them: :func:`taktline.agents.policies.load_bundle` (CLI, evaluation) and the
serving model store (which also caches and verifies) both resolve references here. MLflow is
imported inside the functions only.
"""

from __future__ import annotations

import re

from taktline.errors import PolicyError

_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[A-Za-z0-9_-]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


class RegistryEntryMissing(PolicyError):
    """The registry answered that the model, alias or version does not exist."""


def parse_models_uri(ref: str) -> tuple[str, str | None, str | None] | None:
    """``(model name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    >>> parse_models_uri("models:/shop@production"), parse_models_uri("models:/shop/3")
    (('shop', 'production', None), ('shop', None, '3'))
    """
    m = _ALIAS.match(ref)
    if m:
        return m["name"], m["alias"], None
    m = _VERSION.match(ref)
    return (m["name"], None, m["version"]) if m else None


def registry_version(model_name: str, alias: str | None, version: str | None) -> str:
    """The version ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` names now.

    Raises:
        RegistryEntryMissing: the registry answered that the model, alias or version does not
            exist.
        Exception: the registry could not be asked (unreachable, timed out, an error).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    ref = f"models:/{model_name}/{version}" if version else f"models:/{model_name}@{alias}"
    gone = RegistryEntryMissing(f"the registry has no {ref} (deleted?)")
    if version:
        try:
            return str(client.get_model_version(model_name, version).version)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise gone from exc
            raise
    try:
        return str(client.get_model_version_by_alias(model_name, alias or "").version)
    except MlflowException as exc:
        # a missing alias is INVALID_PARAMETER_VALUE: confirm with the model's aliases
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        try:
            model = client.get_registered_model(model_name)
        except MlflowException as again:
            if again.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise gone from exc
            raise exc from again
        if alias not in (getattr(model, "aliases", None) or {}):
            raise gone from exc
        raise
