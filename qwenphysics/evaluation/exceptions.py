"""The one error type the evaluation tools raise for bad input or an unreachable model."""


class EvalError(RuntimeError):
    """A problem the user can fix; the message is one line that says what to fix."""


class QuestionFailed(RuntimeError):
    """One request failed (timeout, server error); the run records it and goes on."""
