"""Token metering: one row per request that reached the engine."""
