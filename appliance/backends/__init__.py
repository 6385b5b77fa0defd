"""Adapters to the model and store engines; heavy imports live inside the factories."""
