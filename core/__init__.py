"""taktline: digital twins of production lines, environments, policies and serving.

The package is split into four parts (see DESIGN.md): :mod:`taktline.envs` (the twin and the
Gymnasium environments), :mod:`taktline.agents` (rules, solver, neural policies, bundles),
:mod:`taktline.training` and :mod:`taktline.serving`.
"""

from taktline.errors import PolicyError, SpecError, TaktlineError

__version__ = "0.1.0"
__all__ = ["PolicyError", "SpecError", "TaktlineError", "__version__"]
