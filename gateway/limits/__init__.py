"""Rate limits per tenant and per key: requests and tokens per minute, concurrent requests."""
