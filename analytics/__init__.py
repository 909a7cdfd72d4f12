"""Analytics over amm's store (pandas): request records, degradation, A/B, cost.

Imports neither amm nor OpenTelemetry.
"""
