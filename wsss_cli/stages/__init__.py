"""One module per pipeline stage, each with a config dataclass and a ``run(cfg)`` entry."""
