"""Code generators: C (the fast path) and NumPy (the fallback with identical results)."""
