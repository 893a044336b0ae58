"""The contract both services import: wire schemas, models, losses, metrics, ranking and training."""
