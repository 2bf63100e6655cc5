"""A package, so every test module imports its helpers as ``tests.conftest`` / ``tests.shared`` under
plain ``pytest`` and ``python -m pytest`` alike (one module object each, never two names)."""
