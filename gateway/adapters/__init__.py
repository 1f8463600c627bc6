"""LoRA adapters ("deployments") owned by tenants and served by the shared engine."""
