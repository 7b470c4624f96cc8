"""Ports of trained weights from other frameworks into fermodels architectures."""
