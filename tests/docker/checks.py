"""checks.py: the PASS/FAIL lines the compose test's Python parts print.

check() prints one line per check and counts the failures; failed() says
how many there were, for the exit status.
"""

_failed = 0


def check(what, ok, detail=""):
    global _failed
    print(("PASS: " if ok else "FAIL: ") + what + ("" if ok or not detail else f" ({detail})"), flush=True)
    if not ok:
        _failed += 1
    return ok


def failed():
    return _failed
