"""The parts of an evaluation. Each per-model part is ``run(ctx, name, model, entry) -> dict`` (JSON-able,
``entry`` = what earlier parts produced for that model); model-independent parts are ``reference(ctx)``."""
