"""The admin usage dashboard: server-rendered pages at /admin behind a signed session cookie."""
