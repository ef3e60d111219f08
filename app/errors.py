"""The root of dalc's exceptions. Each part declares its own beneath it, beside the code that raises them."""


class DalcError(Exception):
    """Root of every exception dalc raises on purpose."""
