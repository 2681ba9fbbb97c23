"""The ``view`` command: the plant view in the browser, replaying the twin under policies.

``taktline view bodyshop -p SAME -p models:/bodyshop@production --seed 3`` runs the body shop
under each policy on seed 3 (common random numbers) and serves the view at
``http://127.0.0.1:8000/ui``: the lines side by side, play/pause/speed, running KPIs and a
growing Gantt. The server is the serving app (:func:`taktline.serving.create_app`), with its
auth: outside ``TAKTLINE_ENV=local`` the page asks for a key from ``TAKTLINE_API_KEYS``.
``--serve NAME=REF`` also serves policies on ``/v1/policies/NAME/decide``, whose decisions the
view's live mode shows as they are answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from taktline.errors import SpecError, check_number

if TYPE_CHECKING:
    from taktline.serving.settings import Settings


def view(
    line: Annotated[str, typer.Argument(help="a bundled line name or a spec file")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="policy to replay (repeat for side by side): a rule, a bundle, models:/NAME@ALIAS",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="the common seed of every replay")] = 0,
    horizon: Annotated[float | None, typer.Option(help="simulated time (spec default)")] = None,
    frame_step: Annotated[
        float | None, typer.Option(help="simulated time between frames (5 s real time)")
    ] = None,
    serve: Annotated[
        list[str] | None,
        typer.Option("--serve", help="also serve NAME=REF on /v1 (its decisions show in live)"),
    ] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="allow TAKTLINE_AUTH=false outside TAKTLINE_ENV=local (no authentication)",
        ),
    ] = False,
) -> None:
    """Watch the line: replay the twin under policies side by side in the browser (/ui)."""
    from taktline.envs.spec import load_spec
    from taktline.serving.ui_replay import Replay

    check_number("--seed", seed, minimum=0, hint="seeds are non-negative integers")
    check_number("--horizon", horizon, above=0, hint="give the simulated time, e.g. --horizon 480")
    check_number("--frame-step", frame_step, above=0, hint="e.g. --frame-step 0.5")
    check_number("--port", port, minimum=1, hint="a TCP port, e.g. --port 8000")
    spec = load_spec(line)
    settings = view_settings(serve, insecure)
    replay = Replay(spec, seed, list(policy or ["SAME"]), frame_step, horizon)
    import uvicorn

    from taktline.serving import create_app

    app = create_app(settings)
    app.state.replay = replay
    where = f"http://{host}:{port}/ui"
    key_note = "" if not settings.auth_enabled else " (API key: one of TAKTLINE_API_KEYS)"
    typer.secho(f"plant view at {where}{key_note}; Ctrl-C to stop", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def view_settings(serve: list[str] | None, insecure: bool) -> Settings:
    """The serving settings of the environment, with ``--serve`` policies when given.

    Raises:
        SpecError: one line per problem (e.g. auth on and no ``TAKTLINE_API_KEYS``).
    """
    from taktline.cli_serve import _problems, load_settings

    if serve:
        return load_settings(serve, None, insecure)
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from taktline.serving.settings import Settings

    try:
        return Settings(**({"insecure": True} if insecure else {}))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SpecError(_problems(exc), source="serving settings") from None
    except SettingsError as exc:
        raise SpecError(str(exc), source="serving settings") from None


def register(app: typer.Typer) -> None:
    """Add ``view`` to the ``taktline`` CLI."""
    app.command("view")(view)
