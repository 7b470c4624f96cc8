"""Model definitions, configs and export for the FER service."""
