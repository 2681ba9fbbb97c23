"""Example training configs (YAML), loadable by name: ``taktline train jobshop_10x10_attention``."""
