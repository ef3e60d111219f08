"""The calculator language's evaluator: simpleeval underneath, bounded and closed. Imports nothing of dalc."""
from .core import Evaluator
from .errors import CODES, EvaluationError
from .limits import Limits

__all__ = ["CODES", "EvaluationError", "Evaluator", "Limits"]
