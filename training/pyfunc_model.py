"""The pyfunc face of a policy bundle, logged as an MLflow "model from code".

MLflow runs this file when it loads the model; ``predict({"obs": (B, ...), "mask": (B, n)})``
returns the greedy actions ``(B,)`` (never a masked one), or sampled ones with the parameter
``deterministic=False``. The bundle itself sits among the model's artifacts
(``artifacts/bundle``), where serving finds and loads it without MLflow.
"""

import warnings

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from taktline.agents.bundle import PolicyBundle

# predict takes a dict of tensors (see the signature logged with the model), which MLflow's
# type-hint validation cannot describe; it warns whether or not the method is annotated
warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")


class BundleModel(PythonModel):  # type: ignore[misc]
    """Loads the bundle from the model's artifacts and acts with it."""

    def load_context(self, context):  # type: ignore[no-untyped-def]
        # a served model's weights never change: act on the numpy kernel where there is one
        self.bundle = PolicyBundle.load(context.artifacts["bundle"]).freeze()

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if isinstance(model_input, dict):
            obs, mask = model_input["obs"], model_input.get("mask")
        else:  # a DataFrame of flattened observations
            obs, mask = np.asarray(model_input, dtype=np.float32), None
        deterministic = bool((params or {}).get("deterministic", True))
        return self.bundle.act(np.asarray(obs, dtype=np.float32), mask, deterministic)


mlflow.models.set_model(BundleModel())
