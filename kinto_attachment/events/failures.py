"""What a destination raises when it did not take an event: the dispatcher retries it."""


class Failed(Exception):
    """The destination did not confirm the event; ``retry_after``: seconds it asked to wait
    (a webhook's ``Retry-After``), or None."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after
