"""The plant view inline in Jupyter: an anywidget around the same page ``taktline view`` serves.

:func:`plant_view` starts the serving app with a replay on a local port (a uvicorn server in a
background thread, auth off: ``TAKTLINE_ENV=local`` semantics, bound to 127.0.0.1 only) and
returns a :class:`PlantView` widget that shows ``/ui`` in the notebook's output. The page is
the browser's, so the notebook and the browser show one view, drawn by one piece of code.

Needs the ``jupyter`` extra (``pip install 'taktline[jupyter]'``: anywidget).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from taktline.errors import TaktlineError

_ESM = """
function render({ model, el }) {
  const frame = document.createElement("iframe");
  const load = () => {
    frame.src = model.get("url") + "/ui?mode=" + model.get("mode");
    frame.style.height = model.get("height") + "px";
  };
  frame.style.width = "100%";
  frame.style.border = "1px solid #d5dae0";
  load();
  model.on("change:url", load);
  model.on("change:mode", load);
  el.appendChild(frame);
}
export default { render };
"""


def _widget_class() -> Any:
    try:
        import anywidget
        import traitlets
    except ImportError as exc:
        raise TaktlineError(
            f"the plant view in Jupyter needs anywidget ({exc.name} is missing);"
            " install it with: pip install 'taktline[jupyter]'"
        ) from None

    class PlantView(anywidget.AnyWidget):
        """The plant view page in a notebook cell (``url``: the server, ``mode``: the tab)."""

        _esm = _ESM
        url = traitlets.Unicode("").tag(sync=True)
        mode = traitlets.Unicode("replay").tag(sync=True)
        height = traitlets.Int(720).tag(sync=True)

    return PlantView


class ViewServer:
    """A uvicorn serving the plant view in a background thread; :meth:`stop` ends it."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise TaktlineError(f"plant view: the server on port {port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(10)


def plant_view(
    line: str,
    policies: list[str],
    seed: int = 0,
    horizon: float | None = None,
    frame_step: float | None = None,
    port: int = 0,
    mode: str = "replay",
) -> tuple[Any, ViewServer]:
    """The plant view widget replaying ``line`` under ``policies`` on ``seed``, and its server.

    Args:
        line: A bundled line name or a spec file.
        policies: Policy references (rules, bundles, ``models:/NAME@ALIAS``).
        seed: The common seed.
        horizon: Simulated time to replay (the spec's horizon by default).
        frame_step: Simulated time between frames.
        port: TCP port on 127.0.0.1 (0: a free one).
        mode: The tab shown first: ``replay``, ``live`` or ``compare``.

    Returns:
        The widget (display it, or leave it last in a cell) and the server (``stop()`` it).
    """
    from taktline.envs.spec import load_spec
    from taktline.serving import create_app
    from taktline.serving.settings import Settings
    from taktline.serving.ui_replay import Replay

    widget_class = _widget_class()
    replay = Replay(load_spec(line), seed, policies, frame_step, horizon)
    app = create_app(Settings(env="local"))
    app.state.replay = replay
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
    server = ViewServer(app, port)
    return widget_class(url=server.url, mode=mode), server
