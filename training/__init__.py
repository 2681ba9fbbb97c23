"""Training: configs, the SB3 backend, MLflow tracking and registry, evaluation against baselines.

Heavy dependencies (SB3, MLflow, Ray) are imported only by the modules that use them.
"""
