"""Everything that decides: rules, the CP-SAT baseline, neural policies and policy bundles."""
