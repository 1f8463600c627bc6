"""Billing by tokens: prices, trial grants, credit, invoices, Stripe. Never imports gateway/."""
