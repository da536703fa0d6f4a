"""The exception types the CLI maps to exit codes (see the contract's table)."""


class NoisecliError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class SpecError(NoisecliError):
    """Bad input: a spec key, a value, an override, a path. Exit 2, one line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RunLocked(SpecError):
    """Another live process holds the run's lock (a sweep skips such a point)."""


class RunError(NoisecliError):
    """The run failed at run time (diverged, an error in training). Exit 1."""

    exit_code = 1


class Interrupted(NoisecliError):
    """Training stopped on a signal after saving its state. Exit 128 + signal number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + int(signum)
        super().__init__(message or f"stopped by signal {int(signum)}")
