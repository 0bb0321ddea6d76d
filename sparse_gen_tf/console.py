"""What the commands print besides their results: TensorFlow's start-up and INFO lines are
off unless --verbose, and the package's own log lines read as plain sentences.

Every command imports this module before anything else of the package, because
TensorFlow reads its C++ log level (TF_CPP_MIN_LOG_LEVEL) once, when it loads; the lines
it prints while loading ("oneDNN custom operations are on", the CPU-instructions notice)
ignore that level, so they are taken out of the process's stderr while TensorFlow loads
(`load_tensorflow`). After the flags are parsed, `quiet_logging` keeps the Python log
lines of this package and drops TensorFlow's (such as the "Sharding callback duration"
of every checkpoint) below ERROR.

--verbose (on the command line itself, since TensorFlow loads before any flagfile is
read) keeps every line, and so does a TF_CPP_MIN_LOG_LEVEL or --verbosity the user sets.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile

from absl import flags, logging

flags.DEFINE_boolean("verbose", False, "Show TensorFlow's start-up, INFO and WARNING "
                     "lines (XLA compilation, checkpoint sharding), hidden by default.")

VERBOSE = any(arg in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1")
              for arg in sys.argv[1:])

# What TensorFlow prints while it loads, whatever TF_CPP_MIN_LOG_LEVEL says: absl's notice
# that it logs to stderr before being initialised, INFO lines of its C++ logging
# ("I0000 00:00:1796473456.863719 5338 port.cc:153] ..."), and the second line of the
# CPU-instructions notice.
LOAD_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                        r"|I\d{4} [\d:.]+ +\d+ \S+:\d+\]"
                        r"|To enable the following instructions: ")

# The directory of this package: log records from files under it are the package's own.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@contextlib.contextmanager
def filtered_stderr(noise=LOAD_NOISE):
    """Within the block, lines written to file descriptor 2 (by C++ as well as Python)
    that start with a match of noise are dropped; the others are written out after it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def load_tensorflow():
    """Imports TensorFlow with its C++ INFO and WARNING lines off and its load-time lines
    dropped, unless --verbose or TensorFlow is already loaded."""
    if VERBOSE or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr():
        import tensorflow  # noqa: F401


class PlainFormatter(std_logging.Formatter):
    """The package's log lines as sentences: INFO as is, "warning: ..." and "error: ..."
    above it (absl's default prefixes a date, a thread id and a file:line)."""

    def format(self, record):
        message = record.getMessage()
        if record.levelno >= std_logging.ERROR:
            return f"error: {message}"
        if record.levelno >= std_logging.WARNING:
            return f"warning: {message}"
        return message


def own_or_error(record):
    """Keeps a log record from this package, or of level ERROR and above."""
    return record.levelno >= std_logging.ERROR or record.pathname.startswith(PACKAGE_DIR)


def quiet_logging(level=logging.INFO):
    """After flag parsing: Python log lines of this package at `level` and above, in
    PlainFormatter's form, and of other libraries (TensorFlow, Keras) only from ERROR;
    nothing changes with --verbose or --verbosity."""
    if flags.FLAGS["verbose"].value or flags.FLAGS["verbosity"].present:
        return
    logging.set_verbosity(level)
    handler = logging.get_absl_handler()
    handler.python_handler.setFormatter(PlainFormatter())
    if own_or_error not in handler.filters:
        handler.addFilter(own_or_error)
    # TensorFlow's own logger too: a checkpoint deleted at exit with unrestored values
    # (after a one-line error) logs its list when absl's handler may be gone.
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)


load_tensorflow()
