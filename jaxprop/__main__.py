import os
import signal


def _interrupted(signum, frame):  # Ctrl-C before the command has started: nothing to save
    os.write(2, b"jaxprop: interrupted\n")
    os._exit(130)


signal.signal(signal.SIGINT, _interrupted)

from jaxprop.cli import command  # noqa: E402 - after the handler: this import can be cut short

command()
