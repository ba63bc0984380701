"""Orchestration: what the kopf handlers in main.py delegate to."""
