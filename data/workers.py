"""Data-loader worker set-up: pre-emption signals are the main process's business."""
import os
import signal
import threading


def ignore_sigterm_from_others(worker_id=None):
    """A data-loader worker ignores SIGTERM, except from its main process: that one decides when to stop.

    torchrun and Slurm signal a whole process group, workers included. PyTorch's own worker
    handler dies on a SIGTERM that does not come from the parent, and the main process then
    fails with "DataLoader worker ... killed by signal: Terminated" before it can save. A
    SIGTERM from the parent still ends the worker (multiprocessing terminates daemonic workers
    that way at exit); a Python handler cannot see the sender, so a thread waits for the signal.
    """
    parent = os.getppid()
    # Blocked in this (the worker's only) thread and so in every thread started later: the signal
    # stays pending until the waiting thread takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_exit_on_sigterm_from, args=(parent,), name="sigterm", daemon=True).start()


def _exit_on_sigterm_from(parent):
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
        pass
    os._exit(0)
