"""Errors a user can fix. The CLI prints them as one line (``lora_repro: error: ...``) and exits 2; every other
exception is a bug and keeps its traceback. Each subclasses the built-in type it refines, so callers that catch
ValueError / FileNotFoundError / NotImplementedError keep working."""


class UserError(ValueError):
    """A setting or an input the user can change: the message names it and, where there are any, the choices."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder or model the run needs is not there: the message names it and the setting that points at it."""


class UnsupportedError(UserError, NotImplementedError):
    """A valid request this model or method cannot take (e.g. prefix tuning on a classifier that pools the last
    token): the message says why and what works instead."""
