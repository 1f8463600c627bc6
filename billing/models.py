"""Billing tables (none yet: billing by tokens arrives with the billing issue)."""
