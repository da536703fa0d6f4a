"""The exception types the CLI maps to exit codes (see the contract's table).

    NoisecliError                 exit 1 unless a subclass says otherwise
    |-- BadInput                  exit 2: something a person gave or left is wrong; one line each
    |   |-- SpecError             a spec key or value, an override, an option, a path
    |   |-- DamagedFile           a checkpoint, status or metrics file that cannot be read
    |   `-- RunLocked             another live process holds the run
    |-- RunError                  exit 1: the run itself failed (diverged, an error in training)
    `-- Interrupted               exit 128 + N: stopped on signal N after saving its state
"""


class NoisecliError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class BadInput(NoisecliError):
    """Exit 2, one line per problem, nothing written."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SpecError(BadInput):
    """A spec key, a value, an override, a command-line option or a path."""


class DamagedFile(BadInput):
    """A run folder's file that cannot be read (truncated, corrupt, foreign); names the file and the fix."""


class RunLocked(BadInput):
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
