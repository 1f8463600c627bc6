"""The tenant console at /console: sign-up, sign-in, keys, usage — the tenant's side in a browser."""
