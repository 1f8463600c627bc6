"""Tenants, their API keys, and authenticating callers."""
