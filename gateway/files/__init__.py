"""Tenant files (OpenAI's Files API): training data sets and adapter archives, stored by content hash."""
