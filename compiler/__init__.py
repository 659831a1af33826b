"""Tortie: compile Calico and Kubernetes network policy into kernel dataplane artifacts."""

__version__ = "0.1.0"
