"""Calls: one session per call, the pipeline engine, agent tools, and the switchboard routing calls to agents."""
