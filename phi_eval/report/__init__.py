"""Reporting: the leaderboard (JSON, Markdown) and its plots."""
