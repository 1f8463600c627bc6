"""The HTTP face of billing: balances, usage with cost, invoices, prices, credits. The logic is in billing/."""
