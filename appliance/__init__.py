"""Private, on-prem RAG appliance."""

__version__ = "0.1.0"
