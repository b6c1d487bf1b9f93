"""Experiment kinds: one module per kind, each defining its config (extending
`interp.io.schema.BaseExperimentConfig`) and its steps, and calling
`interp.io.registry.register_kind`. `interp.io.registry.load_kinds` imports every module here,
so a new kind is one new file plus its YAML."""
