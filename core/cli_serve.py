"""The ``serve`` command: the policy inference API on uvicorn, or as a Ray Serve deployment.

``taktline serve --policy bodyshop=models:/bodyshop@production`` serves one policy on
127.0.0.1:8000. Everything else (API keys, fallback rules, shadow mode, cache) comes from the
``TAKTLINE_*`` environment (:class:`taktline.serving.settings.Settings`); ``--policy`` adds to
or replaces the policies configured there. Settings that cannot be used end as one ``error:``
line and exit status 2, before anything starts.

``--insecure`` (``TAKTLINE_INSECURE=true``) allows ``TAKTLINE_AUTH=false`` outside
``TAKTLINE_ENV=local``; without it such a server refuses to start, with it it warns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from taktline.errors import SpecError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from taktline.serving.settings import Settings

log = logging.getLogger("taktline.serving")


def _parse_policies(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, ref = value.partition("=")
        if not sep or not name.strip() or not ref.strip():
            raise SpecError(
                f"--policy: expected NAME=REF (e.g. bodyshop=models:/bodyshop@production), "
                f"got {value!r}"
            )
        out[name.strip()] = ref.strip()
    return out


def _problems(exc: ValidationError) -> list[str]:
    """One ``field: message`` line per error (the inputs are never shown: keys are secrets)."""
    out = []
    for e in exc.errors(include_input=False, include_url=False):
        where = ".".join(map(str, e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    return out


def load_settings(
    policy: list[str] | None = None, shadow: list[str] | None = None, insecure: bool = False
) -> Settings:
    """The serving settings of the environment with the command line's changes applied.

    Raises:
        SpecError: one line per problem, naming the setting, without the secret values.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from taktline.serving.settings import ServedPolicy, Settings

    try:
        base = Settings(**({"insecure": True} if insecure else {}))  # type: ignore[arg-type]
        policies = dict(base.policies)
        for name, ref in _parse_policies(policy or []).items():
            old = policies.get(name)
            keep = old.model_dump(exclude={"ref"}) if old else {}
            policies[name] = ServedPolicy(ref=ref, **keep)
        for name in shadow or []:
            if name not in policies:
                raise SpecError(f"--shadow: {name!r} is not a configured policy")
            policies[name] = policies[name].model_copy(update={"shadow": True})
        settings = base.model_copy(update={"policies": policies})
    except ValidationError as exc:
        raise SpecError(_problems(exc), source="serving settings") from None
    except SettingsError as exc:  # a TAKTLINE_* value the settings source could not parse
        raise SpecError(str(exc), source="serving settings") from None
    if not settings.policies:
        raise SpecError("no policy to serve: pass --policy NAME=REF or set TAKTLINE_POLICIES")
    if settings.insecure_mode:
        log.warning(
            "authentication is OFF in env=%s (--insecure): anyone who reaches the port can ask "
            "decisions and reload policies",
            settings.env,
        )
        typer.secho(
            f"warning: authentication is OFF in env={settings.env} (--insecure)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return settings


def serve(
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", help="NAME=REF, REF a models:/NAME@ALIAS URI or a bundle directory"
        ),
    ] = None,
    shadow: Annotated[
        list[str] | None, typer.Option("--shadow", help="serve NAME's rule, log the policy")
    ] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    ray: Annotated[bool, typer.Option("--ray", help="run as a Ray Serve deployment")] = False,
    replicas: Annotated[int, typer.Option(help="Ray Serve replicas", min=1)] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="allow TAKTLINE_AUTH=false outside TAKTLINE_ENV=local (no authentication)",
        ),
    ] = False,
) -> None:
    """Serve trained policies over HTTP (OpenAPI docs at /docs)."""
    settings = load_settings(policy, shadow, insecure)
    if ray:
        from taktline.serving.ray_serve import run

        run(settings, host=host, port=port, replicas=replicas)
        return
    import uvicorn

    from taktline.serving import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``taktline`` CLI."""
    app.command("serve")(serve)


if __name__ == "__main__":  # ``python -m taktline.cli_serve ...`` before the CLI lists it
    from taktline.cli import _Group  # bad settings end as one error line, as in the CLI

    _app = typer.Typer(cls=_Group, add_completion=False, pretty_exceptions_enable=False)
    register(_app)

    @_app.callback()
    def _root() -> None:
        """taktline serving."""

    _app()
