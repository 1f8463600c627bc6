"""The audit log: every admin action and every tenant change to keys and adapters, immutable."""
