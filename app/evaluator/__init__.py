"""The calculator language's evaluator: simpleeval underneath, bounded and closed."""
from .core import Evaluator
from .limits import Limits

__all__ = ["Evaluator", "Limits"]
