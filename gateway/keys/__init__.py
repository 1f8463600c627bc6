"""A tenant's own API keys: the self-serve API (/v1/keys) and the console's keys page share this service."""
