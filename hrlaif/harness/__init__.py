"""hrlaif harness: CLI, config, pipeline, run store and checkpoint gate."""
