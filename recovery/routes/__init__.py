"""The API routes, one module per audience: owners (bikes, thefts), police, alerts, admin."""
