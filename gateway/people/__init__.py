"""People who sign in with a browser: operator and tenant users, their passwords, sessions and failed sign-ins."""
