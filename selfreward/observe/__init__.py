"""Metrics, alerts and tracking: what the loop reports about itself."""
