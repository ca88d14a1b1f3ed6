import os

# Tests run on the CPU; tests that need several devices start a subprocess with their own count.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
