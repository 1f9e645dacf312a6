"""lbfast control plane: model, config, CLI, API, sync, health checks, HA."""
