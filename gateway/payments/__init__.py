"""Tenants pay by themselves: card on file, top-ups, auto-recharge, dunning (the logic of money is in billing/)."""
