"""The judge: the pytest plugin, the proxy to student code, comparisons and results."""
