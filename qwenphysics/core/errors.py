"""The one exception type for problems a user can fix."""


class UserError(Exception):
    """An unusable invocation or input. Command lines print its message as one line and
    exit 2, before any work starts wherever the problem can be seen in advance."""
