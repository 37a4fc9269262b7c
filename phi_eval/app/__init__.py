"""The Gradio app's logic, kept apart from the UI (the top-level app.py): side-by-side streaming of
several models, repetition and diff of their completions, the leaderboard and the per-sample browser."""
