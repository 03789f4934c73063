"""trialbench: benchmark digital-goods suppliers before a merchant trusts them."""

__version__ = "0.1.0"

__all__ = ["__version__"]
