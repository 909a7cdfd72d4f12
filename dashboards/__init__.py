"""Streamlit dashboards over :mod:`analytics` (in the repository, not in the wheel)."""
