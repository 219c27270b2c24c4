"""The error every deployment step raises when a form cannot be built for a model."""


class DeployError(RuntimeError):
    """A deployment mode could not be built for a model; the message says which and why."""
