"""The rate_counters table (models.py); the rate limits themselves are gateway/admission/limits.py."""
