"""Evaluate stage: Table 4.1 and quality by mask size against classical baselines (thesis 4.2-4.3)."""
