"""Gradio chat UI, mounted on the appliance HTTP app."""
